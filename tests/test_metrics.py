"""Evaluation metrics on synthetic patterns with answers known by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from groove_live.pattern import Patterns
from groove_live.spec import DEFAULT_SPEC
from groove_live.train import metrics


def _patterns(hits, velocities=None, offsets=None) -> Patterns:
    hits = np.asarray(hits, np.float32)
    velocities = hits * 0.5 if velocities is None else velocities
    offsets = np.zeros_like(hits) if offsets is None else offsets
    return Patterns(hits, velocities, offsets)


def _random(n: int, seed: int, p: float = 0.15, offset_std: float = 0.1) -> Patterns:
    rng = np.random.default_rng(seed)
    hits = (rng.random((n, 64, 9)) < p).astype(np.float32)
    velocities = hits * rng.uniform(0.2, 1.0, hits.shape)
    offsets = hits * np.clip(rng.normal(0.0, offset_std, hits.shape), -0.5, 0.49)
    return Patterns(hits, velocities, offsets)


def test_perfect_reconstruction_scores_one_and_zero():
    data = _random(8, seed=0)
    m = metrics.reconstruction_metrics(data, data, bpm=np.full(8, 97.0))
    assert m["hit_f1"] == m["hit_precision"] == m["hit_recall"] == m["hit_accuracy"] == 1.0
    assert m["velocity_mae"] == 0.0 and m["timing_mae_ms"] == 0.0
    assert m["n_matched_hits"] == m["n_true_hits"] == int(data.hits.sum())


def test_one_false_positive_one_false_negative():
    target = np.zeros((1, 4, 2), np.float32)
    target[0, [0, 1, 2], 0] = 1  # 3 true hits
    prediction = target.copy()
    prediction[0, 2, 0] = 0  # FN
    prediction[0, 3, 1] = 1  # FP
    m = metrics.hit_scores(_patterns(target), _patterns(prediction))
    assert m["hit_precision"] == pytest.approx(2 / 3)
    assert m["hit_recall"] == pytest.approx(2 / 3)
    assert m["hit_f1"] == pytest.approx(2 / 3)
    assert m["hit_accuracy"] == pytest.approx(6 / 8)  # 2 wrong cells of 8


def test_asymmetric_precision_recall():
    target = np.zeros((1, 8, 1), np.float32)
    target[0, :4, 0] = 1  # 4 true hits
    prediction = np.zeros_like(target)
    prediction[0, :1, 0] = 1  # 1 TP, 3 FN, no FP
    m = metrics.hit_scores(_patterns(target), _patterns(prediction))
    assert m["hit_precision"] == 1.0 and m["hit_recall"] == 0.25
    assert m["hit_f1"] == pytest.approx(2 * 1.0 * 0.25 / 1.25)


def test_silence_reconstructed_as_silence_is_perfect():
    silent = _patterns(np.zeros((2, 4, 3)))
    m = metrics.reconstruction_metrics(silent, silent, bpm=120.0)
    assert m["hit_f1"] == 1.0
    assert math.isnan(m["velocity_mae"]) and m["n_matched_hits"] == 0


def test_timing_mae_in_ms_at_each_windows_tempo():
    # One matched hit per window; window 0 at 120 bpm (step 125 ms), window 1 at 60 (250 ms).
    hits = np.zeros((2, 4, 1), np.float32)
    hits[:, 1, 0] = 1
    target_offsets = np.zeros_like(hits)
    predicted_offsets = np.zeros_like(hits)
    predicted_offsets[0, 1, 0] = 0.2  # 0.2 step * 125 ms = 25 ms late
    target_offsets[1, 1, 0] = 0.1
    predicted_offsets[1, 1, 0] = -0.1  # 0.2 step * 250 ms = 50 ms early
    m = metrics.continuous_errors(_patterns(hits, offsets=target_offsets),
                                  _patterns(hits, offsets=predicted_offsets),
                                  bpm=np.array([120.0, 60.0]))
    assert m["timing_mae_ms"] == pytest.approx((25.0 + 50.0) / 2)
    assert metrics.step_seconds(120.0) == pytest.approx(0.125)


def test_velocity_and_timing_only_on_matched_hits():
    target = np.zeros((1, 4, 1), np.float32)
    target[0, :2, 0] = 1
    prediction = np.zeros_like(target)
    prediction[0, 0, 0] = 1  # matched
    prediction[0, 3, 0] = 1  # false positive: its velocity must not count
    target_velocity = target * 0.5
    predicted_velocity = np.zeros_like(target)
    predicted_velocity[0, 0, 0] = 0.8
    predicted_velocity[0, 3, 0] = 0.1
    m = metrics.continuous_errors(_patterns(target, target_velocity),
                                  _patterns(prediction, predicted_velocity), bpm=100.0)
    assert m["velocity_mae"] == pytest.approx(0.3)
    assert m["n_matched_hits"] == 1


def test_per_drum_f1_and_names_in_reconstruction_metrics():
    target = np.zeros((1, 4, 9), np.float32)
    target[0, 0, 0] = target[0, 1, 1] = 1
    prediction = target.copy()
    prediction[0, 1, 1] = 0  # snare missed
    m = metrics.reconstruction_metrics(_patterns(target), _patterns(prediction), 120.0,
                                       drum_names=DEFAULT_SPEC.drum_names)
    assert m["hit_f1.kick"] == 1.0 and m["hit_f1.snare"] == 0.0
    assert m["hit_f1.ride"] == 1.0  # never played, never predicted


def test_features_per_window():
    hits = np.zeros((2, 8, 3), np.float32)
    hits[0, [0, 0, 4], [0, 1, 2]] = 1  # steps 0 and 4 active, 3 voices
    hits[1, 2, 1] = 1
    p = _patterns(hits)
    np.testing.assert_allclose(metrics.step_density(p), [2 / 8, 1 / 8])
    np.testing.assert_allclose(metrics.voices_used(p), [3, 1])


def test_offset_std_ratio_of_a_scaled_set_is_the_scale():
    data = _random(50, seed=1)
    samples = Patterns(data.hits, data.velocities * 0.9, data.offsets * 0.5)
    m = metrics.sample_metrics(data, samples)
    assert m["offset_std_ratio"] == pytest.approx(0.5, rel=1e-6)
    assert m["mean_velocity_ratio"] == pytest.approx(0.9, rel=1e-6)


def test_overlap_area_identical_sets_near_one_disjoint_near_zero():
    data = _random(300, seed=2, p=0.15)
    same = metrics.sample_metrics(data, data)
    assert same["overlap_step_density"] > 0.95
    assert same["overlap_voices"] > 0.95
    dense = _random(300, seed=3, p=0.6)  # ~100 % of steps active vs ~77 %
    differ = metrics.sample_metrics(data, dense)
    assert differ["overlap_step_density"] < 0.2


def test_overlap_area_basic_shapes():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 600), rng.normal(0, 1, 600)
    assert metrics.overlap_area(a, b) > 0.95
    assert metrics.overlap_area(a, b + 20) < 0.01
    assert metrics.overlap_area(np.full(10, 3.0), np.full(10, 3.0)) == 1.0
    assert metrics.overlap_area(np.zeros(10), np.ones(10)) < 1e-6
    # Binned and exact KDE agree.
    exact = metrics.overlap_area(a, b * 1.5, max_points=10**9)
    assert metrics.overlap_area(a, b * 1.5) == pytest.approx(exact, abs=1e-3)


def test_feature_overlap_is_deterministic_when_subsampled():
    rng = np.random.default_rng(0)
    real, generated = rng.normal(size=1000), rng.normal(0.3, 1.2, size=1000)
    first = metrics.feature_overlap_area(real, generated, max_windows=200, seed=7)
    assert first == metrics.feature_overlap_area(real, generated, max_windows=200, seed=7)
    assert 0.0 < first < 1.0


def test_summary_and_table_show_goals():
    data = _random(40, seed=4)
    worse = Patterns(data.hits, data.velocities, data.offsets * 0.5)
    summary = metrics.summarize(data, np.full(40, 110.0),
                                {"teacher_forced": data, "free_running": worse},
                                samples=worse, drum_names=DEFAULT_SPEC.drum_names)
    assert summary["teacher_forced/hit_f1"] == 1.0
    assert summary["samples/offset_std_ratio"] == pytest.approx(0.5, rel=1e-6)
    assert all(isinstance(v, (int, float)) for v in summary.values())
    table = metrics.format_table(summary)
    assert "| hit_f1 | 1.000 ✓ | 1.000 ✓ | ≥ 0.95 |" in table
    assert "| offset_std_ratio | 0.500 ✗ | ≥ 0.8 |" in table
    assert "0.9–1.1" in table and "≤ 6" in table and "hit_f1.kick" in table


def test_mismatched_shapes_are_an_error():
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.hit_scores(_random(2, 0), _random(3, 0))
    with pytest.raises(ValueError, match="3 tempos for 2 windows"):
        metrics.continuous_errors(_random(2, 0), _random(2, 0), bpm=np.full(3, 120.0))
