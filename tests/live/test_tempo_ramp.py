"""/groove/tempo bpm bars: a linear ramp, one tempo per bar, on the FakeClock. Bar lines stay
exact: each bar starts where the bar before it, at its own tempo, ends."""
from __future__ import annotations

import pytest

from .conftest import ScriptedEngine, offline_server
from .test_scheduler import PHRASE, downbeats


def test_a_ramp_steps_the_tempo_bar_by_bar_and_bar_lines_are_exact_sums():
    server, clock, rec = offline_server(ScriptedEngine(PHRASE), bpm=120.0)
    server.run_until(clock.now() + 1.0)
    d0 = downbeats(rec)[0]
    server.run_until(d0 + 2 * 2.0 + 1.0)  # the middle of bar 2
    server.controls.set_tempo(80.0, 4)
    assert server.scheduler.bpm == 120.0  # handed to the clock thread, nothing changed yet
    server.run_until(d0 + 40.0)
    bpms = {e.bar: e.bpm for e in rec.bars()}
    assert [bpms[b] for b in range(2, 9)] == [120.0, 110.0, 100.0, 90.0, 80.0, 80.0, 80.0]
    beats = downbeats(rec)
    t = beats[2]
    for bar in range(2, 9):
        assert beats[bar] == pytest.approx(t, abs=1e-12)
        t += 4 * 60.0 / bpms[bar]  # the bar's length at its own tempo
    # Exactly the sums, not approximately: each downbeat is the last one plus one bar length.
    for bar in range(3, 9):
        assert beats[bar] == beats[bar - 1] + 4 * 60.0 / bpms[bar - 1]
    for h in rec.hits():  # every hit sits on its own bar's grid
        if 3 <= h.bar <= 8:
            step_s = 60.0 / bpms[h.bar] / 4
            assert beats[h.bar] - 0.5 * step_s <= h.t_s < beats[h.bar] + 16 * step_s


def test_zero_bars_is_immediate_and_a_new_tempo_replaces_a_ramp():
    server, clock, rec = offline_server(ScriptedEngine(PHRASE), bpm=120.0)
    server.run_until(clock.now() + 1.0)
    d0 = downbeats(rec)[0]
    server.run_until(d0 + 2 * 2.0 + 1.0)
    server.controls.set_tempo(60.0, 6)
    server.run_until(d0 + 2 * 2.0 + 1.1)
    assert server.scheduler.bpm_pending == 60.0  # /groove/info's bpm_pending: the target
    server.run_until(d0 + 9.0)  # early in bar 4 (bar 3 at 110 bpm ends at d0 + 8.18)
    server.controls.set_tempo(150.0, 0)
    server.run_until(d0 + 40.0)
    bpms = {e.bar: e.bpm for e in rec.bars()}
    assert bpms[3] == 110.0 and bpms[4] == 100.0 and bpms[5] == 150.0 and bpms[6] == 150.0
    assert server.scheduler.bpm_pending == 150.0


def test_a_ramp_asked_while_stopped_is_immediate():
    server, clock, rec = offline_server(ScriptedEngine(PHRASE), bpm=120.0, autostart=False)
    server.controls.set_tempo(90.0, 8)
    server.run_until(clock.now() + 0.1)
    assert server.scheduler.bpm == 90.0 and server.scheduler.bpm_pending == 90.0
