"""The hit threshold of drumify / infill: fit on validation windows with a known best answer,
acting in the model at T = 0 and not from T = 1, baked into the export, refused where it does
not apply."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from groove_live.engine import Engine
from groove_live.train import calibrate as cal
from groove_live.train import task_eval as te
from groove_live.train.cli import main as train_main
from groove_live.train.config import PRESETS
from groove_live.train.model import build_model
from groove_live.transforms import generated_voices, task_input

from test_task_eval import SPEC, _write_dataset, played  # tests/train is on sys.path (no package)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return _write_dataset(tmp_path_factory.mktemp("gmd2_cal"), {
        "train": played(n=20, seed=1), "validation": played(n=24, seed=2),
        "test": played(n=8, seed=3)})


def _oracle_below_half(dataset):
    """A tiny infill model whose decoder is replaced by a stand-in: hat logits -0.5 where the
    validation windows have a hat and -1.5 where they do not, so at T = 0 it plays no hat at
    all, and any bias in (0.5, 1.5) makes it exact. The answer is known: 0.625, the smallest
    such bias of the grid. The rest (finishing the pattern) is the real model's."""
    real = te.load_split(dataset, "validation")[0].cleaned()
    preset = PRESETS["groovae_2bar_infill_tiny"]
    model = build_model(preset.model, preset.spec()).eval()
    hits = torch.from_numpy(real.hits)

    def decoder(z, control):
        assert len(control) == len(real)
        return {"hit_logits": torch.where(hits > 0, -0.5, -1.5),
                "velocity_mean": torch.from_numpy(real.velocities),
                "offset_mean": torch.from_numpy(real.offsets)}

    del model.decoder  # a submodule: replaced by a plain function
    model.decoder = decoder
    return model


def test_the_fit_finds_the_threshold_with_the_best_f1(dataset):
    r = cal.fit_hit_bias(_oracle_below_half(dataset), dataset)
    assert r["hit_bias"] == 0.625 and r["metric"] == "hat_f1"
    assert r["at_bias"]["f1"] == pytest.approx(1.0)
    assert r["at_zero"]["f1"] == 0.0  # nothing above even odds: no hats at all
    assert r["curve"]["1.625"]["precision"] < 1.0  # past the gap it plays every empty cell too
    assert r["split"] == "validation" and r["n_windows"] == 24


def test_greedy_outputs_at_zero_bias_are_the_models_temperature_zero_output(dataset):
    model = build_model(PRESETS["groovae_2bar_drumify_tiny"].model,
                        PRESETS["groovae_2bar_drumify_tiny"].spec()).eval()
    real = played(n=5, seed=9)
    [(_, greedy)] = list(cal.greedy_outputs(model, real, [0.0]))
    reference = te.torch_transform(model, 0.0)(real, 3)
    np.testing.assert_array_equal(greedy.hits, reference.hits)
    np.testing.assert_allclose(greedy.velocities, reference.velocities, atol=1e-6)


def _logits_and_sample(model, control, t, bias, seed=0):
    model.hit_bias.fill_(bias)
    g = torch.Generator().manual_seed(seed)
    b, steps, c = control.shape[0], control.shape[1], model.spec.n_drums
    z = torch.randn((b, model.cfg.z_size), generator=g) * t
    hit_noise = torch.rand((b, steps, c), generator=g)
    cont_noise = torch.randn((b, steps, 2 * c), generator=g)
    with torch.inference_mode():
        logits = model.decoder(z, control)["hit_logits"]
        hits = model.sample(z, torch.full((b,), float(t)), hit_noise, cont_noise, control)[0]
    return logits, hits


def test_the_bias_sets_the_threshold_at_zero_and_fades_out_by_one():
    model = build_model(PRESETS["groovae_2bar_drumify_tiny"].model,
                        PRESETS["groovae_2bar_drumify_tiny"].spec()).eval()
    control = torch.from_numpy(task_input("drumify", played(n=6), SPEC).to_flat())
    logits, hits = _logits_and_sample(model, control, 0.0, 0.4)
    assert torch.equal(hits, (logits + 0.4 > 0).float())
    _, plain = _logits_and_sample(model, control, 0.0, 0.0)
    assert hits.sum() > plain.sum()  # a lower threshold: more hits
    for t in (1.0, 1.5):  # the model's own distribution from T = 1 up
        assert torch.equal(_logits_and_sample(model, control, t, 0.4)[1],
                           _logits_and_sample(model, control, t, 0.0)[1])


def test_export_bakes_the_calibration_in_and_refuses_one_for_other_weights(toy_task_export,
                                                                           tmp_path):
    from groove_live.export.onnx_export import ExportError, export_run

    toy = toy_task_export("infill")
    data = toy.run_dir.parent / "data"
    result = cal.calibrate_run(toy.run_dir, data)
    written = json.loads((toy.run_dir / cal.CALIBRATION_FILE).read_text())
    assert written["hit_bias"] == result["hit_bias"] and written["run_id"] == result["run_id"]
    # A bias the small toy may not choose by itself, so the check below cannot pass by luck.
    written["hit_bias"] = 0.9
    (toy.run_dir / cal.CALIBRATION_FILE).write_text(json.dumps(written))
    try:
        exported = export_run(toy.run_dir, tmp_path / "infill.onnx")
        engine = Engine.load(exported.decoder_path)
        assert engine.spec.extra["hit_threshold"]["hit_bias"] == 0.9
        assert "threshold   hit logit + 0.9 at T = 0" in engine.describe()
        for odd in ({"hit_bias": "0.9; rm -rf /"}, {"hit_bias": float("nan")}, "0.9", None):
            engine.spec = engine.spec.replace(extra={"hit_threshold": odd})  # untrusted metadata
            assert "threshold" not in engine.describe()
        engine = Engine.load(exported.decoder_path)
        played_windows = played(n=8, seed=4)
        out = engine.transform(played_windows, temperature=0.0, seed=1)
        model = toy.model
        control = torch.from_numpy(task_input("infill", played_windows, SPEC).to_flat())
        with torch.inference_mode():
            logits = model.decoder(torch.zeros((8, model.cfg.z_size)), control)["hit_logits"]
        hats = generated_voices("infill", model.spec) > 0
        expected = (logits + 0.9 > 0).numpy()[..., hats]
        np.testing.assert_array_equal(out.hits[..., hats], expected)
        written["run_id"] = "someone_else@step1"
        (toy.run_dir / cal.CALIBRATION_FILE).write_text(json.dumps(written))
        with pytest.raises(ExportError, match="was fit for someone_else@step1"):
            export_run(toy.run_dir, tmp_path / "other.onnx")
        assert not (tmp_path / "other.onnx").exists()
    finally:
        (toy.run_dir / cal.CALIBRATION_FILE).unlink()  # the session's other tests export this run


def test_cli_fits_a_run_and_refuses_humanize_in_one_line(toy_task_export, one_line_failure):
    toy = toy_task_export("humanize")
    result = CliRunner().invoke(train_main, ["calibrate-task", "--run", str(toy.run_dir), "--data",
                                             str(toy.run_dir.parent / "data")])
    line = one_line_failure(result, "groove-train")
    assert result.exit_code == 2 and "writes no hits of its own" in line, line
    assert not (toy.run_dir / cal.CALIBRATION_FILE).exists()
