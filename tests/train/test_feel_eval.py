"""Humanize like a reference: pairs of windows, the copied-feel baseline, and the runner, on
hand-made windows with known answers and on the committed toy humanize model."""
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from groove_live.pattern import Patterns
from groove_live.spec import ModelSpec
from groove_live.train import feel_eval as fe
from groove_live.train.cli import main as train_main

SPEC = ModelSpec(bars=2)
NAMES = SPEC.drum_names
KICK, SNARE = NAMES.index("kick"), NAMES.index("snare")
FIXTURES = Path(__file__).parents[1] / "fixtures"


def test_pairs_are_windows_with_two_earlier_windows_of_the_same_file():
    source = np.array(["a", "a", "a", "b", "b", "b", "b", "a"])
    assert fe.previous_window_pairs(source).tolist() == [2, 5, 6]
    assert fe.previous_window_pairs(source[:2]).tolist() == []


def test_copied_feel_puts_each_voices_mean_on_the_notes():
    ref = Patterns.empty(1, SPEC)
    for step, offset, velocity in ((0, 0.1, 0.4), (8, 0.3, 0.8)):  # kicks only
        ref.hits[0, step, KICK], ref.offsets[0, step, KICK] = 1, offset
        ref.velocities[0, step, KICK] = velocity
    given = Patterns.empty(1, SPEC)
    for step, voice in ((4, KICK), (12, SNARE)):
        given.hits[0, step, voice], given.velocities[0, step, voice] = 1, 0.6
    out = fe.copied_feel(ref, given)
    np.testing.assert_array_equal(out.hits, given.hits)  # the pattern's notes, no others
    assert out.offsets[0, 4, KICK] == pytest.approx(0.2)  # the kicks' mean
    assert out.velocities[0, 4, KICK] == pytest.approx(0.6)
    # a voice the reference does not play gets the reference's overall means
    assert out.offsets[0, 12, SNARE] == pytest.approx(0.2)
    assert out.velocities[0, 12, SNARE] == pytest.approx(0.6)
    assert out.offsets[0][given.hits[0] == 0].max() == 0  # nothing where nothing plays


def _takes(n_files=6, windows=8, seed=0) -> tuple[Patterns, np.ndarray]:
    """Windows of several takes, each take with its own habit (every voice late by an amount
    of its own, a velocity of its own), so the previous bars say how the next are played."""
    rng = np.random.default_rng(seed)
    shape = (n_files * windows, SPEC.steps, SPEC.n_drums)
    hits = (rng.random(shape) < 0.2).astype(np.float32)
    late = np.repeat(rng.uniform(-0.3, 0.3, n_files), windows)[:, None, None]
    loud = np.repeat(rng.uniform(0.3, 1.0, n_files), windows)[:, None, None]
    offsets = (late + rng.normal(0, 0.02, shape)) * hits
    velocities = np.clip(loud + rng.normal(0, 0.02, shape), 0.05, 1) * hits
    source = np.repeat([f"take{i}" for i in range(n_files)], windows)
    return Patterns(hits, np.rint(velocities * 127) / 127, offsets), source


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("takes")
    for split, seed in (("train", 1), ("validation", 2), ("test", 3)):
        p, source = _takes(seed=seed)
        np.savez_compressed(folder / f"{split}.npz", hits=p.hits.astype(np.uint8),
                            midi_velocities=np.rint(p.velocities * 127).astype(np.uint8),
                            offsets=p.offsets, bpm=np.full(len(p), 100.0, np.float32),
                            source=source)
    (folder / "dataset.json").write_text(json.dumps({"spec": SPEC.to_dict(),
                                                     "description": "made-up takes"}))
    return folder


def test_an_oracle_beats_every_baseline_and_the_copy_ties_itself(dataset):
    oracle = fe.evaluate_like_previous(lambda p, refs, seed: p, dataset, batch=5)
    assert oracle["n_windows"] == 6 * 6  # two windows of each take have no previous two bars
    assert oracle["model"]["timing_mae_ms"] == 0.0
    met = {g["goal"]: g["met"] for g in oracle["goals"]}
    assert met["timing MAE below both baselines"] and met["timing MAE below the copied feel"]
    copied = oracle["baselines"]["copied feel"]
    assert copied["timing_mae_ms"] < oracle["baselines"]["unchanged"]["timing_mae_ms"] / 3
    assert "copied feel" in oracle["table"] and "like the previous 2 bars" in oracle["table"]
    # a transform that copies the feel scores what the baseline does, so it is not below it
    copy = fe.evaluate_like_previous(lambda p, refs, seed: fe.copied_feel(refs, p), dataset)
    assert copy["model"]["timing_mae_ms"] == pytest.approx(copied["timing_mae_ms"])
    assert not {g["goal"]: g["met"] for g in copy["goals"]}["timing MAE below the copied feel"]


def test_each_pattern_gets_its_own_previous_bars(dataset):
    seen = []

    def record(patterns, references, seed):
        seen.append((patterns.offsets.copy(), references.offsets.copy()))
        return patterns
    fe.evaluate_like_previous(record, dataset, batch=7)
    pattern_offsets = np.concatenate([p for p, _ in seen[:-1]])  # the last call: out of set
    reference_offsets = np.concatenate([r for _, r in seen[:-1]])
    # every take is late by its own amount: a pattern and its reference agree on it
    late = lambda o: o.sum(axis=(1, 2)) / np.maximum((o != 0).sum(axis=(1, 2)), 1)  # noqa: E731
    np.testing.assert_allclose(late(pattern_offsets), late(reference_offsets), atol=0.02)


def test_cli_scores_the_toy_humanize_model_with_a_feel(dataset, tmp_path):
    out = tmp_path / "like.json"
    result = CliRunner().invoke(train_main, [
        "evaluate-task", "--model", str(FIXTURES / "toy_humanize.onnx"), "--data", str(dataset),
        "--like-previous", "--temperature", "0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["mode"] == fe.MODE and data["temperature"] == 0.0
    assert set(data["baselines"]) == {"unchanged", "random jitter", "copied feel"}
    assert data["model"]["windows_with_changed_hits"] == 0
    assert data["out_of_set"]["windows_with_changed_hits"] == 0


@pytest.mark.parametrize("args, message", [
    (["--checkpoint", "x.pt"], "give --model"),
    (["--model", str(FIXTURES / "toy_drumify.onnx")], "scores a humanize model"),
])
def test_cli_refuses_what_it_cannot_score_with_a_feel(dataset, one_line_failure, args, message):
    result = CliRunner().invoke(train_main, ["evaluate-task", *args, "--data", str(dataset),
                                             "--like-previous"])
    assert message in one_line_failure(result, "groove-train")
