"""render_bar: a committed bar's content to timed events, as a pure function of its inputs."""
from __future__ import annotations

import pytest

from groove_live.live.events import BarContent, Hit
from groove_live.live.scheduler import FLAT_VELOCITY, Mix, render_bar
from groove_live.spec import ModelSpec

SPEC = ModelSpec(z_size=8)  # 16 steps a bar, 4 beats, the 9 GrooVAE drums
# (step, drum, velocity, offset): an early kick on the downbeat, a late snare, a hat.
CONTENT = BarContent((Hit(0, 0, 0.9, -0.25), Hit(4, 1, 0.5, 0.2), Hit(6, 2, 0.3, 0.0)),
                     None, 1, "sample")


def test_hits_play_on_the_grid_plus_their_offsets_with_the_models_dynamics():
    r = render_bar(CONTENT, 7, 100.0, 120.0, SPEC, Mix(), lookahead_s=0.5)
    assert (r.bar, r.downbeat_t_s, r.bpm, r.bar_length_s, r.step_length_s) == (7, 100.0, 120.0,
                                                                               2.0, 0.125)
    assert [(h.bar, h.step, h.voice, h.pitch) for h in r.hits] == [
        (7, 0, "kick", 36), (7, 4, "snare", 38), (7, 6, "closed_hihat", 42)]
    assert [h.t_s for h in r.hits] == pytest.approx([100.0 - 0.25 * 0.125, 100.0 + 4.2 * 0.125,
                                                     100.0 + 6 * 0.125], abs=1e-12)
    assert r.hits[0].t_s < r.downbeat_t_s  # an early note goes before its downbeat
    assert [h.velocity for h in r.hits] == pytest.approx([0.9, 0.5, 0.3])


def test_the_bar_summary_goes_a_lookahead_early_and_lists_hits_relative_to_the_downbeat():
    r = render_bar(CONTENT, 7, 100.0, 120.0, SPEC, Mix(), lookahead_s=0.5)
    assert (r.event.t_s, r.event.downbeat_t_s, r.event.bar, r.event.bpm) == (99.5, 100.0, 7, 120.0)
    assert [(v, p, s) for v, p, _, s, _ in r.event.hits] == [("kick", 36, 0), ("snare", 38, 4),
                                                            ("closed_hihat", 42, 6)]
    assert [t for *_, t in r.event.hits] == pytest.approx([h.t_s - 100.0 for h in r.hits])


def test_the_mix_mutes_flattens_and_straightens():
    mix = Mix(velocity_amount=0.0, timing_amount=0.0, muted=frozenset({1}))
    r = render_bar(CONTENT, 0, 10.0, 240.0, SPEC, mix, lookahead_s=0.0)
    assert [h.voice for h in r.hits] == ["kick", "closed_hihat"]
    assert [v for _, _, v, _, _ in r.event.hits] == [FLAT_VELOCITY, FLAT_VELOCITY]
    assert [h.t_s for h in r.hits] == [10.0, 10.0 + 6 * 0.0625]  # straight on the grid
    half = render_bar(CONTENT, 0, 10.0, 240.0, SPEC, Mix(0.5, 0.5), lookahead_s=0.0)
    assert half.hits[0].velocity == pytest.approx(FLAT_VELOCITY + 0.5 * (0.9 - FLAT_VELOCITY))
    assert half.hits[0].t_s == pytest.approx(10.0 - 0.125 * 0.0625, abs=1e-12)


def test_rendering_is_pure_same_inputs_same_events_and_fresh_objects():
    a = render_bar(CONTENT, 3, 50.0, 90.0, SPEC, Mix(), lookahead_s=0.1)
    b = render_bar(CONTENT, 3, 50.0, 90.0, SPEC, Mix(), lookahead_s=0.1)
    assert a == b
    assert all(x is not y for x, y in zip(a.hits, b.hits))  # sinks may stash payloads in them


def test_a_silent_bar_still_has_its_summary():
    r = render_bar(BarContent((), None, 0, "silence"), 2, 5.0, 120.0, SPEC, Mix(), 0.5)
    assert r.hits == () and r.event.hits == () and r.event.t_s == 4.5


def test_a_hit_naming_a_drum_the_model_lacks_raises():
    bad = BarContent((Hit(0, 99, 0.5, 0.0),), None, 0, "sample")
    with pytest.raises(IndexError):
        render_bar(bad, 0, 0.0, 120.0, SPEC, Mix(), 0.0)
