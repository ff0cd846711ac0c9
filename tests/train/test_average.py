"""groove-train average: the mean of a stretch of checkpoints, as a new run every command reads."""
import json
import re
import shutil
from pathlib import Path

import onnx
import pytest
import torch
from click.testing import CliRunner

from groove_live.export.cli import main as export_main
from groove_live.spec import EXPORT_KEY
from groove_live.train.average import average_run
from groove_live.train.cli import main as train_main
from groove_live.train.data import prepare
from groove_live.train.fit import fit
from groove_live.train.run import CheckpointError, RunError, load_model

GMD = Path(__file__).parents[1] / "fixtures" / "gmd"
CADENCE = {"eval_every": 5, "checkpoint_every": 5, "log_every": 5}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A tiny run with checkpoints at steps 5, 10 and 15."""
    root = tmp_path_factory.mktemp("average")
    prepare(GMD, root / "data", progress=False)
    fit(root / "run", root / "data", "groovae_tiny",
        train_overrides={"max_steps": 15, **CADENCE}, progress=False)
    return root


def _weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def _files(folder: Path) -> dict:
    return {p.name: p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_the_average_is_the_mean_of_the_chosen_checkpoints(source, tmp_path):
    run = source / "run"
    before = _files(run)
    result = CliRunner().invoke(train_main, ["average", "--run", str(run), "--from-step", "10",
                                             "--to-step", "15", "--out", str(tmp_path / "avg")])
    assert result.exit_code == 0, result.output
    assert "averaged 2 checkpoints" in result.output and "steps 10, 15" in result.output
    a, b = (_weights(run / "checkpoints" / f"step_{s:08d}.pt") for s in (10, 15))
    mean = _weights(tmp_path / "avg" / "best.pt")
    floats = [name for name, t in a.items() if t.is_floating_point()]
    assert floats and mean.keys() == a.keys()
    moved = [name for name in floats if not torch.equal(a[name], b[name])]
    assert moved  # training moved the weights between the two checkpoints
    for name in floats:
        torch.testing.assert_close(mean[name], (a[name] + b[name]) / 2)
    assert json.loads((tmp_path / "avg" / "averaged.json").read_text())["steps"] == [10, 15]
    assert _files(run) == before  # the source run is left as it was

    # the new folder is a run like any other: it loads, and export reads it
    model, _, spec = load_model(tmp_path / "avg")
    assert spec.run_id == "avg@step15"
    out = tmp_path / "avg.onnx"
    result = CliRunner().invoke(export_main, ["onnx", "--run", str(tmp_path / "avg"),
                                              "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "best.pt is the mean of 2 checkpoints, steps 10-15" in result.output
    meta = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert json.loads(meta[EXPORT_KEY])["source"] == ("avg/best.pt (the mean of 2 checkpoints, "
                                                      "steps 10-15)")


def test_nothing_to_resume_in_an_average(source, tmp_path, one_line_failure):
    average_run(source / "run", 5, 15, tmp_path / "avg")
    result = CliRunner().invoke(train_main, ["fit", "--run", str(tmp_path / "avg"), "--resume",
                                             "--max-steps", "20", "--no-progress"])
    assert "nothing to resume" in one_line_failure(result, "groove-train")


@pytest.mark.parametrize("args, message", [
    (("--from-step", "11", "--to-step", "14"), r"0 checkpoint\(s\) between steps 11 and 14; "
                                                r"averaging needs at least 2 \(checkpoints "
                                                r"kept: 5, 10, 15\)"),
    (("--from-step", "12", "--to-step", "15"), "1 checkpoint"),
    (("--from-step", "15", "--to-step", "5"), "--from-step 15 is after --to-step 5"),
])
def test_a_stretch_without_two_checkpoints_is_one_line(source, tmp_path, one_line_failure,
                                                       args, message):
    out = tmp_path / "avg"
    result = CliRunner().invoke(train_main, ["average", "--run", str(source / "run"), *args,
                                             "--out", str(out)])
    line = one_line_failure(result, "groove-train")
    assert re.search(message, line), line
    assert not out.exists()


def test_an_existing_folder_or_the_source_itself_is_refused(source, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="exists and is not an empty folder"):
        average_run(source / "run", 5, 15, taken)
    assert (taken / "notes.txt").read_text() == "mine"
    with pytest.raises(RunError, match="not into its source run"):
        average_run(source / "run", 5, 15, source / "run")
    with pytest.raises(RunError, match="no such run folder"):
        average_run(tmp_path / "missing", 5, 15, tmp_path / "avg")


def test_checkpoints_of_another_model_are_refused(source, tmp_path):
    run = Path(shutil.copytree(source / "run", tmp_path / "run"))
    step = run / "checkpoints" / "step_00000015.pt"
    state = torch.load(step, map_location="cpu", weights_only=True)
    name = next(n for n, t in state["model"].items() if t.is_floating_point() and t.ndim == 2)
    state["model"][name] = torch.zeros(3, 3)
    torch.save(state, step)
    with pytest.raises(CheckpointError, match=rf"step_00000015.pt: {name} has shape \(3, 3\)"):
        average_run(run, 5, 15, tmp_path / "avg")
    assert not (tmp_path / "avg").exists()

    state["model"][name] = torch.zeros(3, 3)
    state["model_args"] = dict(state["model_args"], z_size=state["model_args"]["z_size"] + 1)
    torch.save(state, step)
    with pytest.raises(CheckpointError, match="another model than step_00000005.pt"):
        average_run(run, 5, 15, tmp_path / "avg")
