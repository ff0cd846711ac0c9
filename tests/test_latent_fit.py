"""fit_latents: the latent search behind interpolate's endpoints (toy models and the bundled
2-bar categorical model on a hand-written beat it reconstructs badly from its posterior mean)."""
from __future__ import annotations

import numpy as np
import pytest

from groove_live.bundled import INTERPOLATE_MODEL, resolve_model
from groove_live.engine import Engine
from groove_live.latent_fit import fit_latents, hit_f1
from groove_live.pattern import Patterns
from groove_live.spec import ModelSpec
from groove_live.step_pattern import parse_step_pattern


def test_hit_f1_known_answers():
    real = np.zeros((4, 2), bool)
    real[[0, 2], 0] = True  # two hits
    pred = np.zeros((4, 2), bool)
    pred[0, 0] = pred[1, 1] = True  # one right, one extra, one missed
    assert hit_f1(real, pred) == pytest.approx(0.5)
    assert hit_f1(real, real) == 1.0
    assert hit_f1(np.zeros((4, 2), bool), np.zeros((4, 2), bool)) == 1.0
    assert hit_f1(real, np.zeros((4, 2), bool)) == 0.0


@pytest.fixture(scope="module")
def toy(toy_model_path) -> Engine:
    return Engine.load(toy_model_path)


def test_a_fit_is_never_worse_than_the_mean_and_is_reproducible(toy):
    patterns = toy.sample(3, seed=5)
    fit = fit_latents(toy, patterns, rounds=2, candidates=16)
    again = fit_latents(toy, patterns, rounds=2, candidates=16)
    np.testing.assert_array_equal(fit.z, again.z)
    assert np.all(fit.hit_f1 >= fit.mu_hit_f1)
    # The reported F1 is the F1 of the returned latents' greedy decodes.
    decoded = toy.decode(fit.z, temperature=0.0).hits > 0.5
    real = patterns.hits > 0.5
    np.testing.assert_allclose(fit.hit_f1, [hit_f1(real[i], decoded[i]) for i in range(3)])


def test_a_pattern_fits_the_same_alone_or_anywhere_in_a_batch(toy):
    patterns = toy.sample(3, seed=8)
    batch = fit_latents(toy, patterns, rounds=2, candidates=16)
    alone = fit_latents(toy, patterns[2], rounds=2, candidates=16)
    np.testing.assert_array_equal(alone.z[0], batch.z[2])


def test_zero_rounds_are_the_posterior_means(toy):
    patterns = toy.sample(2, seed=6)
    mu, _ = toy.encode(patterns)
    fit = fit_latents(toy, patterns, rounds=0)
    np.testing.assert_array_equal(fit.z, mu)
    np.testing.assert_array_equal(fit.hit_f1, fit.mu_hit_f1)
    with pytest.raises(ValueError):
        fit_latents(toy, patterns, rounds=-1)


@pytest.fixture(scope="module")
def bundled() -> Engine:
    return Engine.load(resolve_model(INTERPOLATE_MODEL))


def _beat(engine: Engine, lines) -> Patterns:
    return parse_step_pattern(lines, ModelSpec(bars=2, steps_per_bar=16, drums=engine.spec.drums))


def test_a_beat_the_mean_reproduces_is_kept_without_search(bundled):
    beat = _beat(bundled, [("kick", "x...x...x...x..."), ("snare", "....x.......x..."),
                           ("closed_hihat", "x.x.x.x.x.x.x.x.")])
    fit = fit_latents(bundled, beat)
    assert fit.mu_hit_f1[0] == 1.0  # a plain rock beat survives the posterior mean
    np.testing.assert_array_equal(fit.z, bundled.encode(beat)[0])


def test_the_search_recovers_a_typed_beat_the_mean_loses(bundled):
    """A reggae one-drop (kick and snare on 3, hats on the off-beats): the bundled 2-bar model's
    posterior mean decodes to almost none of it; the fitted latent to most of it."""
    beat = _beat(bundled, [("kick", "........x......."), ("snare", "........x......."),
                           ("closed_hihat", "..x...x...x...x.")])
    fit = fit_latents(bundled, beat)
    assert fit.hit_f1[0] >= 0.75 and fit.hit_f1[0] > fit.mu_hit_f1[0] + 0.3, fit
