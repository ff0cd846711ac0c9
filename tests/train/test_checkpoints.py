"""Checkpoints: read without pickle code; resume skips torn ones; logs and temp files stay clean."""
import csv
import io
import os
import pickle
import shlex
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from groove_live.export.cli import main as export_main
from groove_live.train.cli import main as train_main
from groove_live.train.data import prepare
from groove_live.train.fit import fit
from groove_live.train.run import (CheckpointError, RunError, clean_stale_temp_files,
                                   drop_metrics_after_step, load_model, save_checkpoint_atomic)

GMD = Path(__file__).parents[1] / "fixtures" / "gmd"

# The cadence these tests count on (validate and checkpoint every 5 steps, a metrics row
# every step); the tiny preset's own default is coarser, so 300-step smoke runs stay fast.
FINE_CADENCE = {"eval_every": 5, "checkpoint_every": 5, "log_every": 1}
FINE_CADENCE_ARGS = ("--eval-every", "5", "--checkpoint-every", "5", "--log-every", "1")
STEPS = 10  # the base run: checkpoints at 5 and 10, a train row every step, validation at 5, 10


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    prepare(GMD, root / "data", progress=False)
    fit(root / "run", root / "data", "groovae_tiny", train_overrides={"max_steps": STEPS, **FINE_CADENCE},
        progress=False)
    return root / "run"


@pytest.fixture
def run(base_run, tmp_path):
    """A fresh copy of the base run to damage."""
    return Path(shutil.copytree(base_run, tmp_path / "run"))


def _ckpt(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step_{step:08d}.pt"


def _rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _steps(rows: list[dict], split: str) -> list[int]:
    return [int(r["step"]) for r in rows if r["split"] == split]


class Payload:
    """Unpickling this runs a shell command: what a shared run folder could carry."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def test_checkpoints_hold_only_tensors_and_plain_data(base_run, tmp_path):
    for path in [*base_run.glob("checkpoints/*.pt"), base_run / "best.pt"]:
        state = torch.load(path, map_location="cpu", weights_only=True)
        assert "model" in state, path
    state = torch.load(_ckpt(base_run, STEPS), weights_only=True)
    assert state["step"] == STEPS and all(isinstance(r, torch.Tensor) for r in state["rng"])
    # a numpy array (refused by weights_only) is a bug caught when writing, not when resuming
    with pytest.raises(TypeError, match=r"state\['rng'\]\[0\] is a numpy.ndarray"):
        save_checkpoint_atomic(tmp_path / "x.pt", {"rng": [np.zeros(3)]})
    assert not list(tmp_path.iterdir())


def test_a_malicious_checkpoint_runs_nothing(run, tmp_path, one_line_failure):
    marker = tmp_path / "pwned"
    evil = {"model": Payload(marker), "optimizer": {}, "step": 99, "best_val": 0.0,
            "elapsed_s": 0.0, "examples": 0, "rng": []}
    buffer = io.BytesIO()
    torch.save(evil, buffer)
    # the payload is live: the old weights_only=False load ran it
    torch.load(io.BytesIO(buffer.getvalue()), weights_only=False)
    assert marker.exists()
    marker.unlink()
    _ckpt(run, STEPS).write_bytes(buffer.getvalue())  # torch's zip format
    _ckpt(run, 5).write_bytes(pickle.dumps(evil))  # and a bare pickle
    (run / "best.pt").write_bytes(buffer.getvalue())

    def fails(main, args, prog):
        result = CliRunner().invoke(main, args)
        line = one_line_failure(result, prog)
        assert result.exit_code == 2 and "refused" in line, line
        return line

    line = fails(train_main, ["fit", "--run", str(run), "--resume", "--no-progress"],
                 "groove-train")
    assert "step_00000010.pt" in line and "step_00000005.pt" in line and "posix.system" in line
    assert _ckpt(run, STEPS).exists()  # nothing loaded, so nothing set aside
    with pytest.raises(CheckpointError, match="refused"):
        load_model(run)
    with pytest.raises(CheckpointError, match="refused"):
        load_model(run, which="latest")
    fails(train_main, ["evaluate", "--run", str(run), "--samples", "4"], "groove-train")
    fails(export_main, ["onnx", "--run", str(run), "--out", str(tmp_path / "m.onnx")],
          "groove-export")
    assert not marker.exists()
    assert not list(tmp_path.glob("*.onnx"))


def _without_rng(path: Path) -> None:
    state = torch.load(path, weights_only=True)
    torch.save({**state, "rng": []}, path)


@pytest.mark.parametrize("damage, reason", [
    (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "truncated"),
    (lambda p: p.write_bytes(b""), "empty file"),
    (lambda p: torch.save({"model": {}}, p), "not a training checkpoint (no optimizer, step"),
    (_without_rng, "its rng is not a list of byte tensors"),
])
def test_resume_falls_back_to_the_newest_checkpoint_that_loads(run, base_run, capsys, damage,
                                                              reason):
    damage(_ckpt(run, STEPS))
    summary = fit(run, None, resume=True, train_overrides={"max_steps": STEPS + 2},
                  progress=False)
    err = capsys.readouterr().err.splitlines()
    skipped = [line for line in err if "skipped" in line]
    assert len(skipped) == 1 and "step_00000010.pt" in skipped[0] and reason in skipped[0], err
    assert any("resuming at step 5" in line for line in err), err
    assert summary["step"] == STEPS + 2
    assert (run / "checkpoints" / "step_00000010.pt.unloadable").is_file()  # set aside
    # replayed from step 5, the run wrote step 10 again, equal to the uninterrupted one
    again = torch.load(_ckpt(run, STEPS), weights_only=True)["model"]
    want = torch.load(_ckpt(base_run, STEPS), weights_only=True)["model"]
    for name in want:
        torch.testing.assert_close(again[name], want[name], rtol=1e-5, atol=1e-6, msg=name)


def test_resume_with_no_checkpoint_that_loads_is_one_line(run, one_line_failure):
    _ckpt(run, STEPS).write_bytes(_ckpt(run, STEPS).read_bytes()[:100])
    _ckpt(run, 5).write_bytes(b"")
    result = CliRunner().invoke(train_main, ["fit", "--run", str(run), "--resume",
                                             "--no-progress"])
    line = one_line_failure(result, "groove-train")
    assert result.exit_code == 2
    assert "no checkpoint loads" in line and "truncated" in line and "empty file" in line, line
    assert _ckpt(run, STEPS).exists() and _ckpt(run, 5).exists()


def test_resume_after_a_kill_logs_each_step_once(run, capsys):
    before = _rows(run)
    # killed after logging steps 6..10 but before checkpoint 10, half-way through a row
    _ckpt(run, STEPS).unlink()
    with open(run / "metrics.csv", "a") as f:
        f.write("11,tra")
    (run / "checkpoints" / "step_00000010.pt.tmp").write_bytes(b"torn")
    (run / "best.pt.tmp").write_bytes(b"torn")

    fit(run, None, resume=True, train_overrides={"max_steps": STEPS + 2}, progress=False)
    err = capsys.readouterr().err
    assert "removed 2 stale temp file(s)" in err and "checkpoints/step_00000010.pt.tmp" in err
    assert not list(run.rglob("*.tmp"))
    assert "dropped 7 metrics.csv row(s) logged after step 5" in err  # 5 train, 1 val, 1 torn
    rows = _rows(run)
    assert max(Counter((r["step"], r["split"]) for r in rows).values()) == 1
    assert _steps(rows, "train") == list(range(1, STEPS + 3))
    assert _steps(rows, "validation") == [5, 10, 12]
    kept = [r for r in rows if int(r["step"]) <= 5]
    assert kept == [r for r in before if int(r["step"]) <= 5]  # earlier rows untouched


def test_drop_metrics_after_step(tmp_path):
    assert drop_metrics_after_step(tmp_path, 3) == 0  # no metrics.csv yet
    path = tmp_path / "metrics.csv"
    text = b"step,split,loss\r\n1,train,5.0\r\n2,train,4.0\r\n2,validation,4.5\r\n3,train,3.0\r\n"
    path.write_bytes(text)
    assert drop_metrics_after_step(tmp_path, 3) == 0
    assert path.read_bytes() == text  # nothing to drop: not rewritten
    assert drop_metrics_after_step(tmp_path, 1) == 3
    assert path.read_bytes() == b"step,split,loss\r\n1,train,5.0\r\n"
    assert not list(tmp_path.glob("*.tmp"))
    path.write_text("loss\n1.0\n")
    with pytest.raises(RunError, match="no header with a 'step' column"):
        drop_metrics_after_step(tmp_path, 1)


def test_clean_stale_temp_files_removes_only_temp_files(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    keep = [tmp_path / "config.json", tmp_path / "checkpoints" / "step_00000005.pt",
            tmp_path / "checkpoints" / "step_00000010.pt.unloadable"]
    stale = [tmp_path / "config.json.tmp", tmp_path / "metrics.csv.tmp",
             tmp_path / "checkpoints" / "step_00000010.pt.tmp",
             tmp_path / ".evaluation_test_samples.tmp-0a1b2c3d.png"]
    for p in keep + stale:
        p.write_bytes(b"x")
    assert clean_stale_temp_files(tmp_path) == sorted(stale)
    assert all(p.exists() for p in keep) and not any(p.exists() for p in stale)
    assert clean_stale_temp_files(tmp_path / "absent") == []


def test_which_picks_best_latest_or_one_steps_checkpoint(base_run, one_line_failure):
    from click.testing import CliRunner

    from groove_live.export.cli import main as export_main
    from groove_live.train.run import RunError, weights_path

    assert weights_path(base_run, "best") == base_run / "best.pt"
    assert weights_path(base_run, "latest") == _ckpt(base_run, 10)
    assert weights_path(base_run, "step5") == _ckpt(base_run, 5)
    with pytest.raises(RunError, match=r"no checkpoint of step 7 \(checkpoints kept: 5, 10\)"):
        weights_path(base_run, "step7")
    with pytest.raises(RunError, match="say best"):
        weights_path(base_run, "step-1")
    result = CliRunner().invoke(export_main, ["onnx", "--run", str(base_run), "--which", "7"])
    assert result.exit_code == 2 and "latest, or stepN" in result.output
    result = CliRunner().invoke(export_main, ["onnx", "--run", str(base_run), "--which", "step7"])
    line = one_line_failure(result, "groove-export")
    assert "no checkpoint of step 7" in line, line
