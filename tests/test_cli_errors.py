"""Every command fails the same way on what a user can fix: "PROG: error: ..." on one line,
exit 2 (groove_live/cli_errors.py)."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from groove_live.cli import main as live_main
from groove_live.cli_errors import USER_ERROR_EXIT, fail


def test_fail_folds_a_message_onto_one_line_and_exits_2(capsys):
    with pytest.raises(SystemExit) as e:
        fail("groove-x", "first line\nsecond\tline  ")
    assert e.value.code == USER_ERROR_EXIT == 2
    assert capsys.readouterr().err == "groove-x: error: first line second line\n"


def _one_line(result, prog: str) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, (result.exit_code, result.output)
    assert lines[0].startswith(f"{prog}: error: "), lines[0]
    return lines[0]


@pytest.mark.parametrize("args", [["sample", "--model", "no/such/model.onnx", "--out", "{tmp}"],
                                  ["info", "--model", "no_such_model"],
                                  ["humanize", "{tmp}/no_such_input.mid", "--out", "{tmp}"]])
def test_groove_live_commands(tmp_path, args):
    args = [a.format(tmp=tmp_path) for a in args]
    _one_line(CliRunner().invoke(live_main, args), "groove-live")


def test_groove_train_and_groove_export(tmp_path):
    pytest.importorskip("torch", reason="the training extra is not installed")
    from groove_live.export.cli import main as export_main
    from groove_live.train.cli import main as train_main
    _one_line(CliRunner().invoke(train_main, ["fit", "--data", str(tmp_path / "none"),
                                              "--run", str(tmp_path / "run")]), "groove-train")
    _one_line(CliRunner().invoke(export_main, ["onnx", "--run", str(tmp_path / "none")]),
              "groove-export")
