"""The spec as the one statement of shape on the training side: fit refuses a data cache of
another shape, takes training_data from the cache, and a checkpoint rebuilds its model alone."""
import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from groove_live.spec import ModelSpec
from groove_live.train.cli import main as train_main
from groove_live.train.data import DataError, PrepareOptions, load_spec, prepare
from groove_live.train.fit import fit
from groove_live.train.run import CheckpointError, load_model, model_from_checkpoint

GMD = Path(__file__).parents[1] / "fixtures" / "gmd"
STEPS = 4


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("seams")
    prepare(GMD, root / "bars4", progress=False)
    prepare(GMD, root / "bars2", PrepareOptions(bars=2), progress=False)
    return root


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("seams_run") / "run"
    fit(run_dir, data / "bars4", "groovae_tiny",
        train_overrides={"max_steps": STEPS, "eval_every": 2, "checkpoint_every": 2},
        progress=False, threads=1)
    return run_dir


def test_prepare_writes_the_spec_of_its_windows(data):
    assert load_spec(data / "bars4").bars == 4 and load_spec(data / "bars2").bars == 2
    meta = json.loads((data / "bars2" / "dataset.json").read_text())
    assert ModelSpec.from_dict(meta["spec"]).data_shape()["bars"] == 2
    assert meta["description"].startswith("Groove MIDI Dataset")


def test_fit_refuses_a_cache_of_another_shape_in_one_line(data, tmp_path, one_line_failure):
    with pytest.raises(DataError) as e:
        fit(tmp_path / "a", data / "bars2", "groovae_tiny", progress=False)
    assert str(e.value) == (f"data cache {data / 'bars2'} has bars=2, preset groovae_tiny "
                            "expects 4")
    assert not (tmp_path / "a").exists()  # nothing half-made left behind
    result = CliRunner().invoke(train_main, ["fit", "--data", str(data / "bars2"), "--run",
                                             str(tmp_path / "b"), "--preset",
                                             "groovae_4bar_small", "--no-progress"])
    line = one_line_failure(result, "groove-train")
    assert "has bars=2, preset groovae_4bar_small expects 4" in line


def test_resume_refuses_a_cache_of_another_shape(run, data, tmp_path):
    copy = Path(shutil.copytree(run, tmp_path / "run"))
    with pytest.raises(DataError, match=f"has bars=2, run {copy.name} expects 4"):
        fit(copy, data / "bars2", resume=True, train_overrides={"max_steps": STEPS + 1},
            progress=False)


def test_a_folder_that_is_not_a_cache_is_one_line(tmp_path):
    with pytest.raises(DataError, match="dataset.json"):
        fit(tmp_path / "run", tmp_path, "groovae_tiny", progress=False)


def test_training_data_comes_from_the_cache(run, data):
    spec = ModelSpec.from_json((run / "spec.json").read_text())
    meta = json.loads((data / "bars4" / "dataset.json").read_text())
    assert spec.training_data == meta["description"] and "4/4" in spec.training_data


def test_a_checkpoint_alone_rebuilds_its_model(run, tmp_path):
    for name in ("best.pt", f"checkpoints/step_{STEPS:08d}.pt"):
        alone = tmp_path / name.replace("/", "_")
        shutil.copy(run / name, alone)  # no config.json or spec.json anywhere near it
        model, cfg, spec, state = model_from_checkpoint(alone)
        assert spec == ModelSpec.from_json((run / "spec.json").read_text())
        assert cfg.z_size == 16 and spec.kind == "groovae" and not model.training
        want = load_model(run, which="best" if name == "best.pt" else "latest")[0].state_dict()
        for key, value in model.state_dict().items():
            torch.testing.assert_close(value, want[key], rtol=0, atol=0, msg=key)


def test_an_older_checkpoint_without_a_spec_rebuilds_from_its_run_folder(run, tmp_path):
    copy = Path(shutil.copytree(run, tmp_path / "run"))
    for path in (copy / "best.pt", copy / "checkpoints" / f"step_{STEPS:08d}.pt"):
        state = torch.load(path, weights_only=True)
        del state["spec"], state["model_args"]
        torch.save(state, path)
        model, cfg, spec, _ = model_from_checkpoint(path)  # via config.json one folder up
        assert spec.bars == 4 and cfg.z_size == 16
        alone = tmp_path / ("alone_" + path.name)
        shutil.copy(path, alone)
        with pytest.raises(CheckpointError, match="no spec of its own"):
            model_from_checkpoint(alone)
    # and an older run still resumes
    summary = fit(copy, None, resume=True, train_overrides={"max_steps": STEPS + 1},
                  progress=False)
    assert summary["step"] == STEPS + 1


def test_a_checkpoint_with_a_broken_spec_is_one_line(run, tmp_path):
    state = torch.load(run / "best.pt", weights_only=True)
    state["spec"] = json.dumps({**json.loads(state["spec"]), "bars": "4"})
    torch.save(state, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError) as e:
        model_from_checkpoint(tmp_path / "broken.pt")
    assert "spec or model_args are unusable" in str(e.value) and "\n" not in str(e.value)


def test_the_loss_curve_leaves_no_global_pyplot_state(run, tmp_path):
    pytest.importorskip("matplotlib")
    import subprocess
    import sys
    shutil.copy(run / "metrics.csv", tmp_path / "metrics.csv")
    code = ("import sys; from pathlib import Path; from groove_live.train.fit import "
            "plot_loss_curve; p = plot_loss_curve(Path(sys.argv[1])); "
            "assert p.stat().st_size > 1000, p; "
            "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
