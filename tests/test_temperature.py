"""Temperature scales every sampled part of the sampling GrooVAE (hits, velocity and timing
noise), so temperature 0 is the one most likely pattern of a latent; and one default
temperature serves every command."""
from __future__ import annotations

import numpy as np
import pytest

from groove_live.engine import Engine
from groove_live.limits import DEFAULT_TEMPERATURE


@pytest.fixture(scope="module")
def bundled() -> Engine:
    engine = Engine.load()
    assert engine.spec.continuous_head == "gaussian"  # the noise scaled here is really drawn
    return engine


def test_temperature_zero_is_the_same_pattern_whatever_the_seed(bundled):
    z = np.random.default_rng(3).standard_normal((4, bundled.spec.z_size)).astype(np.float32)
    a, b = (bundled.decode(z, temperature=0.0, seed=s) for s in (1, 2))
    np.testing.assert_array_equal(a.hits, b.hits)
    np.testing.assert_array_equal(a.velocities, b.velocities)
    np.testing.assert_array_equal(a.offsets, b.offsets)
    c, d = (bundled.decode(z, temperature=1.0, seed=s) for s in (1, 2))
    assert not np.array_equal(c.velocities, d.velocities)  # above 0 the seed matters


def test_the_noise_is_scaled_per_pattern(bundled):
    noise = np.ones((3, bundled.spec.steps, 2 * bundled.spec.n_drums), np.float32)
    scaled = bundled.tempered_noise(noise, np.array([0.0, 0.5, 2.0], np.float32))
    assert [float(scaled[i].max()) for i in range(3)] == [0.0, 0.5, 2.0]


def test_velocity_and_timing_spread_grow_with_temperature(bundled):
    def spread(t: float) -> tuple[float, float]:
        p = bundled.sample(64, temperature=t, seed=5)
        hit = p.hits.astype(bool)
        return float(p.velocities[hit].std()), float(p.offsets[hit].std())

    low, high = spread(0.25), spread(1.0)
    assert high[0] > low[0] * 1.1 and high[1] > low[1] * 1.2


def test_sampling_keeps_the_prior_unscaled(bundled):
    # z ~ N(0, I) whatever the temperature: the same seed draws the same latent, so only the
    # decoding changes (at 0 the most likely pattern of that groove).
    a = bundled.sample(2, temperature=0.0, seed=9)
    b = bundled.decode(np.random.default_rng(9).standard_normal((2, bundled.spec.z_size))
                       .astype(np.float32), temperature=0.0)
    np.testing.assert_array_equal(a.hits, b.hits)


def test_one_default_temperature_offline_and_live():
    from groove_live.live.cli import serve
    from groove_live.live.server import ServeConfig

    option = next(p for p in serve.params if p.name == "temperature")
    assert option.default == DEFAULT_TEMPERATURE
    assert ServeConfig.__dataclass_fields__["temperature"].default == DEFAULT_TEMPERATURE
    assert Engine.sample.__defaults__[0] == DEFAULT_TEMPERATURE
    from groove_live.cli import main

    for name in ("sample", "interpolate", "humanize", "drumify", "infill"):
        option = next(p for p in main.commands[name].params if p.name == "temperature")
        assert option.default == DEFAULT_TEMPERATURE, name
