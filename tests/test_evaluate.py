"""`evaluate_run` end to end on a tiny random model and a tiny synthetic split."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from groove_live.pattern import Patterns  # noqa: E402
from groove_live.train.config import get_preset, spec_for  # noqa: E402
from groove_live.train.data import DataError, load_split  # noqa: E402
from groove_live.train.evaluate import evaluate_model, evaluate_run  # noqa: E402
from groove_live.train.model import GrooVAE  # noqa: E402
from groove_live.train.run import save_checkpoint_atomic, save_run_config  # noqa: E402

N_WINDOWS = 12


def _windows(n: int, seed: int = 0) -> tuple[Patterns, np.ndarray]:
    rng = np.random.default_rng(seed)
    hits = (rng.random((n, 64, 9)) < 0.15).astype(np.float32)
    # Velocities on the MIDI grid, as the dataset cache stores them.
    velocities = hits * rng.integers(20, 128, hits.shape) / 127.0
    offsets = hits * np.clip(rng.normal(0.0, 0.1, hits.shape), -0.5, 0.49)
    return Patterns(hits, velocities, offsets), rng.uniform(80, 140, n).astype(np.float32)


def _write_split(dataset_dir, split: str, patterns: Patterns, bpm: np.ndarray) -> None:
    # The layout `groove-train prepare` writes (train/data.py), kept to the keys load_split reads.
    dataset_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(dataset_dir / f"{split}.npz", hits=patterns.hits.astype(np.uint8),
                        midi_velocities=np.rint(patterns.velocities * 127).astype(np.uint8),
                        offsets=patterns.offsets, bpm=bpm)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny step-by-step LSTM calls: a second intra-op thread only adds hand-offs, and makes
    # this test crawl while a training run holds the other core.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    preset = get_preset("groovae_tiny")
    torch.manual_seed(0)
    model = GrooVAE(preset.model)
    run_dir = root / "run"
    save_run_config(run_dir, preset.name, preset.model, preset.train, spec_for(preset.model),
                    str(root / "data"))
    save_checkpoint_atomic(run_dir / "best.pt", {"model": model.state_dict(), "step": 7})
    patterns, bpm = _windows(N_WINDOWS)
    _write_split(root / "data", "test", patterns, bpm)
    return run_dir, root / "data", model, patterns, bpm


def test_evaluate_run_writes_json_table_and_plots(tiny_run, tmp_path):
    pytest.importorskip("matplotlib")
    run_dir, data_dir, _, _, _ = tiny_run
    result = evaluate_run(run_dir, data_dir, split="test", n_samples=8, temperature=1.0,
                          plot_dir=tmp_path / "plots", device="cpu", batch_size=5, n_plot=2)
    m = result["metrics"]
    for mode in ("teacher_forced", "free_running"):
        assert 0.0 <= m[f"{mode}/hit_f1"] <= 1.0
        assert 0.0 <= m[f"{mode}/hit_accuracy"] <= 1.0
        assert m[f"{mode}/n_true_hits"] == int((tiny_run[3].hits > 0.5).sum())
    for name in ("offset_std_ratio", "mean_velocity_ratio", "overlap_step_density",
                 "overlap_voices"):
        assert f"samples/{name}" in m
    assert result["n_windows"] == N_WINDOWS and result["weights"].endswith("@step7")

    saved = json.loads((run_dir / "evaluation_test.json").read_text())
    assert saved["metrics"]["teacher_forced/hit_f1"] == pytest.approx(m["teacher_forced/hit_f1"])
    table = (run_dir / "evaluation_test.md").read_text()
    assert "teacher-forced" in table and "free-running" in table and "≥ 0.95" in table
    assert result["table"] == table
    for name in ("evaluation_test_reconstructions.png", "evaluation_test_samples.png"):
        assert (tmp_path / "plots" / name).stat().st_size > 5_000


def test_evaluation_is_deterministic_and_batch_independent(tiny_run):
    _, _, model, patterns, bpm = tiny_run
    spec = spec_for(model.cfg)
    a, recon_a, samples_a = evaluate_model(model, spec, patterns, bpm, n_samples=6, batch_size=4)
    b, recon_b, samples_b = evaluate_model(model, spec, patterns, bpm, n_samples=6, batch_size=64)
    np.testing.assert_array_equal(recon_a["free_running"].hits, recon_b["free_running"].hits)
    np.testing.assert_allclose(recon_a["teacher_forced"].velocities,
                               recon_b["teacher_forced"].velocities, atol=1e-5)
    assert a["teacher_forced/hit_f1"] == b["teacher_forced/hit_f1"]
    assert samples_a.hits.shape == (6, 64, 9)
    # Samples are played patterns: nothing sounds where no hit is.
    assert np.all(samples_a.velocities[samples_a.hits == 0] == 0)


def test_missing_split_and_wrong_shape_are_clear_errors(tiny_run, tmp_path):
    run_dir, _, _, _, _ = tiny_run
    with pytest.raises(DataError, match="no cached split"):
        evaluate_run(run_dir, tmp_path, split="validation", n_samples=2, device="cpu")
    short, bpm = _windows(3)
    two_bars = Patterns(short.hits[:, :32], short.velocities[:, :32], short.offsets[:, :32])
    _write_split(tmp_path, "test", two_bars, bpm)
    with pytest.raises(DataError, match="steps"):
        evaluate_run(run_dir, tmp_path, split="test", n_samples=2, device="cpu")


def test_an_exported_model_scores_as_its_torch_weights(toy_export, tmp_path):
    # The engine's free-running reconstructions are the torch model's, decision for decision,
    # so a table from `evaluate --model` describes the weights it was exported from.
    from groove_live.engine import Engine
    from groove_live.train.evaluate import engine_reconstruct, evaluate_model_file, reconstruct

    toy = toy_export("gaussian")
    patterns, bpm = _windows(N_WINDOWS, seed=3)
    _write_split(tmp_path / "data", "test", patterns, bpm)
    stored, _ = load_split(tmp_path / "data", "test")  # velocities as the cache rounds them

    engine_side = engine_reconstruct(Engine.load(toy.model_path), stored, batch_size=5)
    torch_side = reconstruct(toy.model, stored, teacher_forced=False)
    np.testing.assert_array_equal(engine_side.hits, torch_side.hits)
    np.testing.assert_allclose(engine_side.velocities, torch_side.velocities, atol=1e-4)
    np.testing.assert_allclose(engine_side.offsets, torch_side.offsets, atol=1e-4)

    result = evaluate_model_file(toy.model_path, tmp_path / "data", split="test", n_samples=8,
                                 out_dir=tmp_path / "report")
    m = result["metrics"]
    assert "teacher_forced/hit_f1" not in m and 0.0 <= m["free_running/hit_f1"] <= 1.0
    assert m["free_running/n_true_hits"] == int((stored.hits > 0.5).sum())
    assert "samples/offset_std_ratio" in m
    saved = json.loads((tmp_path / "report" / "evaluation_test.json").read_text())
    assert saved["variant"] == "fp32" and saved["metrics"] == pytest.approx(m, nan_ok=True)


def test_evaluate_wants_exactly_one_of_run_and_model(tiny_run, one_line_failure):
    from click.testing import CliRunner

    from groove_live.train.cli import main

    run_dir, data_dir, _, _, _ = tiny_run
    for args in ([], ["--run", str(run_dir), "--model", "m.onnx"], ["--model", "m.onnx"]):
        line = one_line_failure(CliRunner().invoke(main, ["evaluate", *args]), "groove-train")
        assert "--run" in line or "--data" in line
    line = one_line_failure(CliRunner().invoke(
        main, ["evaluate", "--model", str(data_dir / "nope.onnx"), "--data", str(data_dir)]),
        "groove-train")
    assert "no such model file" in line
