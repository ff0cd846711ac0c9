"""Latent planning: walk steps of the requested size, morphs along the slerp, quantized samples."""
from __future__ import annotations

import math

import numpy as np
import pytest

from groove_live.latent import angle_between, random_latents, slerp
from groove_live.live.planner import (QUARTER_TURN, BarState, Interpolate, Planner, Restart,
                                      Sample, SetQuantize, SetTemperature, StartWalk, fresh_target,
                                      walk_move)
from groove_live.live.worker import phrase_bars

from .conftest import offline_server

Z = 32


def planner(seed=0, quantize="bar") -> tuple[Planner, np.ndarray]:
    rng = np.random.default_rng(seed)
    z0 = random_latents(1, Z, rng)[0]
    first = BarState(z=z0, temperature=1.0, noise_seed=5, phrase_start_bar=0, source="sample")
    return Planner(first, 0, rng, bars_per_phrase=4, quantize=quantize), z0


@pytest.mark.parametrize("step", [0.05, 0.3, 1.0])
def test_walk_moves_exactly_the_requested_angle_every_n_bars(step):
    p, z0 = planner()
    p.extend_to(3)
    assert p.apply(StartWalk(step, every_bars=2), first_free_bar=4) == 4
    p.extend_to(40)
    moves = 0
    for bar in range(4, 41):
        a, b = p.states[bar - 1].z, p.states[bar].z
        if (bar - 4) % 2 == 0:
            assert angle_between(a, b) == pytest.approx(step * QUARTER_TURN, abs=1e-5)
            assert np.linalg.norm(b) == pytest.approx(np.linalg.norm(z0), rel=1e-5)
            moves += 1
        else:
            assert np.array_equal(a, b)
    assert moves == 19
    # It goes somewhere: after many steps the groove is far from where it began.
    assert angle_between(z0, p.states[40].z) > min(1.0, 3 * step * QUARTER_TURN)


def test_walk_zero_stops_the_walk():
    p, _ = planner()
    p.apply(StartWalk(0.2, 1), 1)
    p.extend_to(5)
    p.apply(StartWalk(0.0), 6)
    p.extend_to(12)
    assert all(np.array_equal(p.states[6].z, p.states[b].z) for b in range(6, 13))
    assert p.states[6].walk is None


def test_fresh_target_is_orthogonal_at_the_same_norm():
    rng = np.random.default_rng(3)
    z = random_latents(1, Z, rng)[0]
    t = fresh_target(z, rng)
    assert angle_between(z, t) == pytest.approx(math.pi / 2, abs=1e-5)
    assert np.linalg.norm(t) == pytest.approx(np.linalg.norm(z), rel=1e-5)
    z2, t2 = walk_move(z, z.copy(), 0.5, rng)  # target reached: a new one is drawn
    assert angle_between(z, z2) == pytest.approx(0.5 * QUARTER_TURN, abs=1e-5)


def test_interpolation_follows_the_slerp_and_then_stays():
    p, z0 = planner()
    z1 = random_latents(1, Z, np.random.default_rng(99))[0]
    p.extend_to(2)
    assert p.apply(Interpolate(z1, bars=4, temperature=0.7), first_free_bar=3) == 3
    p.extend_to(12)
    for k in range(4):
        np.testing.assert_allclose(p.states[3 + k].z, slerp(z0, z1, (k + 1) / 4), atol=1e-6)
        assert p.states[3 + k].source == "interpolate"
        assert p.states[3 + k].temperature == 0.7
    for bar in range(7, 13):
        np.testing.assert_allclose(p.states[bar].z, z1, atol=1e-6)
    assert p.states[2].temperature == 1.0


def test_sample_lands_on_the_next_bar_or_the_next_phrase():
    p, _ = planner()
    z = random_latents(1, Z, np.random.default_rng(1))[0]
    assert p.apply(Sample(z, 11), first_free_bar=5) == 5
    assert p.states[5].phrase_start_bar == 5 and p.states[5].noise_seed == 11
    p.apply(SetQuantize("phrase"), 6)
    assert p.apply(Sample(z, 12), first_free_bar=6) == 9  # phrase started at 5: 5, 9, 13
    assert p.states[8].noise_seed == 11 and p.states[9].noise_seed == 12
    assert p.apply(Restart(), first_free_bar=10) == 10  # restarts are never held back


def test_sample_keeps_a_running_walk_going_from_the_new_groove():
    p, _ = planner()
    p.apply(StartWalk(0.2, 1), 1)
    z = random_latents(1, Z, np.random.default_rng(1))[0]
    p.apply(Sample(z, 1), 4)
    p.extend_to(6)
    np.testing.assert_array_equal(p.states[4].z, z)
    assert angle_between(p.states[4].z, p.states[5].z) == pytest.approx(0.2 * QUARTER_TURN, abs=1e-5)


# --- the same through the server, on a FakeClock, with the fake engine decoding ---------------
def played(server):
    return {bar: (t, content) for bar, t, _, content in server.scheduler.committed}


def test_server_walk_plays_the_decoded_latents(fake_engine):
    server, clock, rec = offline_server(fake_engine, bpm=240.0)
    server.run_until(clock.now() + 1.5)
    server.controls.walk(0.25, 1)
    server.run_until(clock.now() + 8.0)
    bars = played(server)
    walk_bars = sorted(b for b, (_, c) in bars.items() if c.source == "walk")
    assert len(walk_bars) >= 5
    for bar in walk_bars[1:]:
        prev, cur = bars[bar - 1][1], bars[bar][1]
        assert angle_between(prev.z, cur.z) == pytest.approx(0.25 * QUARTER_TURN, abs=1e-5)
    # What played is the engine's decode of that bar's latent, at that bar of the phrase.
    spec = fake_engine.spec
    for bar in walk_bars:
        content = bars[bar][1]
        want = phrase_bars(fake_engine.decode(content.z[None]), spec)[content.phrase_bar]
        assert content.hits == want
    hits_by_bar = {}
    for h in rec.hits():
        hits_by_bar.setdefault(h.bar, []).append(h.step)
    for bar in walk_bars[:-2]:  # bars that have finished playing
        assert sorted(hits_by_bar.get(bar, [])) == sorted(h.step for h in bars[bar][1].hits)


def test_server_sample_with_seed_is_the_seeded_latent(fake_engine):
    server, clock, rec = offline_server(fake_engine, bpm=240.0)
    server.run_until(clock.now() + 1.3)
    first_free = server.timeline.first_free_bar()
    server.controls.sample(0.8, 1234)
    server.run_until(clock.now() + 6.0)
    bar, (t, content) = [(b, x) for b, x in sorted(played(server).items()) if b >= first_free][0]
    z = random_latents(1, fake_engine.spec.z_size, np.random.default_rng(1234))[0]
    np.testing.assert_array_equal(content.z, z)
    assert content.phrase_bar == 0 and content.source == "sample"
    assert (1, 0.8) in [(batch, temperature) for _, batch, temperature in fake_engine.calls]


def test_server_interpolate_morphs_over_n_bars(fake_engine):
    server, clock, rec = offline_server(fake_engine, bpm=240.0)
    server.run_until(clock.now() + 1.3)
    server.controls.interpolate(3, None)
    server.run_until(clock.now() + 8.0)
    bars = played(server)
    morph = sorted(b for b, (_, c) in bars.items() if c.source == "interpolate")
    assert len(morph) == 3 and morph == list(range(morph[0], morph[0] + 3))
    z_from = bars[morph[0] - 1][1].z
    z_to = bars[morph[-1]][1].z
    for k, bar in enumerate(morph):
        np.testing.assert_allclose(bars[bar][1].z, slerp(z_from, z_to, (k + 1) / 3), atol=1e-6)
    np.testing.assert_allclose(bars[morph[-1] + 1][1].z, z_to)


def test_a_seeded_walk_takes_the_same_path_from_the_same_groove_whatever_else_happened():
    def path(planner_seed: int, start: int, replans: int) -> list[np.ndarray]:
        p, _ = planner(seed=0)
        p.rng = np.random.default_rng(planner_seed)  # other draws elsewhere: must not matter
        p.apply(StartWalk(0.5, 1, seed=11), start)
        for k in range(replans):  # re-planning the walk's future redraws nothing different
            p.extend_to(start + 3 + k)
            del p.states[start + 3 + k]
        p.extend_to(start + 12)
        return [p.states[start + k].z for k in range(13)]

    a, b = path(1, 4, 0), path(2, 9, 3)
    for za, zb in zip(a, b):
        np.testing.assert_allclose(za, zb, atol=1e-6)
    c = path(1, 4, 0)
    p, _ = planner(seed=0)
    p.apply(StartWalk(0.5, 1, seed=12), 4)
    p.extend_to(16)
    assert angle_between(p.states[16].z, c[12]) > 0.1  # another seed, another path


def test_requests_landing_on_the_same_bar_compose():
    p, z0 = planner()
    z1 = random_latents(1, Z, np.random.default_rng(8))[0]
    # A temperature, then a sample: the sample plays at that temperature.
    p.apply(SetTemperature(2.0), 3)
    p.apply(Sample(z1, noise_seed=9), 3)
    assert p.states[3].temperature == 2.0 and np.array_equal(p.states[3].z, z1)
    # A sample, then a temperature: the sample is kept.
    p.apply(Sample(z0, noise_seed=10), 5)
    p.apply(SetTemperature(0.5), 5)
    assert np.array_equal(p.states[5].z, z0) and p.states[5].temperature == 0.5
    # A walk stopped, then a sample on that bar: the walk stays stopped.
    p.apply(StartWalk(0.3, 1, seed=1), 7)
    p.extend_to(9)
    p.apply(StartWalk(0.0), 10)
    p.apply(Sample(z1, noise_seed=11), 10)
    p.extend_to(14)
    assert p.states[10].walk is None and np.array_equal(p.states[14].z, z1)
    # A sample, then a walk on that bar: the sample plays, the walk moves on from it.
    p.apply(Sample(z0, noise_seed=12), 15)
    p.apply(StartWalk(0.3, 1, seed=2), 15)
    p.extend_to(16)
    assert np.array_equal(p.states[15].z, z0)
    assert angle_between(z0, p.states[16].z) == pytest.approx(0.3 * QUARTER_TURN, abs=1e-5)
