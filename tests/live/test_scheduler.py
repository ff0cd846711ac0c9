"""The clock thread's logic on a FakeClock: exact bar and hit times, tempo, stop/start, sync."""
from __future__ import annotations

import math

import numpy as np
import pytest

from groove_live.live.events import BarContent, BarEvent, ClockEvent, Hit, HitEvent
from groove_live.live.midi_sink import MidiSink
from groove_live.live.scheduler import (COMMIT_CLEAR_S, COMMIT_MARGIN_S, COMMIT_SLACK_S,
                                        DECODE_WORK_S, FLAT_VELOCITY,
                                        QUIET_AFTER_S, QUIET_BEFORE_S, QUIET_BUSY_MAX_S,
                                        QUIET_POLL_S, START_DELAY_S, Scheduler)
from groove_live.live.clock import FakeClock
from groove_live.live.sinks import RecordingSink
from groove_live.live.timeline import Timeline

from .conftest import ScriptedEngine, offline_server

F32 = lambda x: float(np.float32(x))  # noqa: E731  (offsets travel as float32)
# (step in the 4-bar phrase, drum, velocity, offset): an early kick on every downbeat.
PHRASE = [(0, 0, 0.9, -0.25), (4, 1, 0.6, 0.1), (16, 0, 0.8, -0.25), (20, 2, 0.5, -0.5),
          (32, 0, 0.7, -0.25), (48, 0, 0.7, -0.25), (60, 8, 0.4, 0.3)]


def expected_hits(bar: int, phrase_start: int = 0):
    phrase_bar = (bar - phrase_start) % 4
    return [(step - 16 * phrase_bar, drum, F32(v), F32(o)) for step, drum, v, o in PHRASE
            if step // 16 == phrase_bar]


def downbeats(recording) -> dict[int, float]:
    return {e.bar: e.downbeat_t_s for e in recording.bars()}


def test_bars_sit_on_an_exact_grid_and_hits_at_their_micro_timed_times():
    engine = ScriptedEngine(PHRASE)
    server, clock, rec = offline_server(engine, bpm=120.0, bar_lookahead_s=0.5)
    t_start = clock.now()
    server.run_until(t_start + 20.0)
    beats = downbeats(rec)
    d0 = beats[0]
    commit_ahead_s = 0.5 + COMMIT_MARGIN_S
    assert d0 == t_start + commit_ahead_s + START_DELAY_S
    assert len(beats) >= 9
    for bar, t in beats.items():
        assert t == d0 + bar * 2.0  # start + n * bar_s, never a running sum
    for event, emitted in rec.records:
        assert emitted == event.t_s  # the offline clock jumps exactly onto each event
        if isinstance(event, BarEvent):
            assert event.t_s == event.downbeat_t_s - 0.5  # the lookahead
    hits = rec.hits()
    for bar in range(8):
        got = [(h.step, h.t_s, h.velocity) for h in hits if h.bar == bar]
        want = [(step, d0 + bar * 2.0 + (step + off) * 0.125, v)
                for step, drum, v, off in expected_hits(bar)]
        assert len(got) == len(want)
        for (gs, gt, gv), (ws, wt, wv) in zip(sorted(got), sorted(want)):
            assert gs == ws and gt == pytest.approx(wt, abs=1e-12) and gv == pytest.approx(wv)
    # The early kick of bar 1 goes out before bar 1's downbeat, after the rest of bar 0.
    early = [h for h in hits if h.bar == 1 and h.step == 0][0]
    assert early.t_s == pytest.approx(beats[1] - 0.25 * 0.125, abs=1e-12) and early.t_s < beats[1]
    emitted = [t for _, t in rec.records]
    assert emitted == sorted(emitted)
    assert server.stats.summary()["late_bars"] == 0


def test_bar_message_carries_the_bars_hits_relative_to_the_downbeat():
    server, clock, rec = offline_server(ScriptedEngine(PHRASE), bpm=120.0)
    server.run_until(clock.now() + 3.0)
    bar0 = rec.bars()[0]
    assert bar0.bpm == 120.0
    assert [(v, p, s) for v, p, _, s, _ in bar0.hits] == [("kick", 36, 0), ("snare", 38, 4)]
    assert bar0.hits[0][4] == pytest.approx(-0.25 * 0.125)
    assert bar0.hits[1][4] == pytest.approx((4 + F32(0.1)) * 0.125)


def test_tempo_change_lands_on_the_next_bar_boundary():
    server, clock, rec = offline_server(ScriptedEngine(PHRASE), bpm=120.0)
    server.run_until(clock.now() + 1.0)
    d0 = downbeats(rec)[0]
    server.run_until(d0 + 2 * 2.0 + 1.0)  # the middle of bar 2
    server.controls.set_tempo(150.0)
    server.run_until(d0 + 20.0)
    beats = downbeats(rec)
    assert beats[2] == d0 + 4.0 and beats[3] == d0 + 6.0  # bar 3 starts where 120 BPM put it
    assert beats[4] == d0 + 6.0 + 1.6 and beats[5] == d0 + 6.0 + 2 * 1.6
    bpms = {e.bar: e.bpm for e in rec.bars()}
    assert bpms[2] == 120.0 and bpms[3] == 150.0
    step_s = 1.6 / 16
    for h in (h for h in rec.hits() if h.bar == 3):
        (step, drum, v, off), = [x for x in expected_hits(3) if x[0] == h.step]
        assert h.t_s == pytest.approx(beats[3] + (step + off) * step_s, abs=1e-12)


def test_tempo_change_after_a_bar_is_committed_waits_for_the_bar_after():
    server, clock, rec = offline_server(ScriptedEngine(PHRASE), bpm=120.0)
    server.run_until(clock.now() + 1.0)
    d0 = downbeats(rec)[0]
    server.run_until(d0 + 6.0 - 0.1)  # bar 3 was committed (0.5 s + a margin) before it
    server.controls.set_tempo(60.0)
    server.run_until(d0 + 30.0)
    bpms = {e.bar: e.bpm for e in rec.bars()}
    assert bpms[3] == 120.0 and bpms[4] == 60.0
    assert downbeats(rec)[5] == d0 + 8.0 + 4.0


def test_stop_silences_at_once_and_start_restarts_the_phrase():
    server, clock, rec = offline_server(ScriptedEngine(PHRASE), bpm=120.0)
    server.run_until(clock.now() + 1.0)
    d0 = downbeats(rec)[0]
    t_stop = d0 + 2.0 + 0.3  # inside bar 1
    server.run_until(t_stop)
    server.controls.stop_playing()
    server.run_until(t_stop + 5.0)
    after = [e for e, t in rec.records if t >= t_stop]
    # Nothing after the stop but the "stop" itself (on which MIDI sinks end sounding notes).
    assert [(type(e), getattr(e, "kind", None)) for e in after] == [(ClockEvent, "stop")]
    t_start = clock.now()
    server.controls.start_playing()
    server.run_until(t_start + 5.0)
    first = [e for e in rec.bars() if e.downbeat_t_s > t_start][0]
    assert first.downbeat_t_s == pytest.approx(t_start + 0.5 + COMMIT_MARGIN_S + START_DELAY_S)
    played = {bar: content for bar, _, _, content in server.scheduler.committed}
    assert played[first.bar].phrase_bar == 0  # the phrase starts from its first bar again


def test_sync_late_in_a_bar_starts_the_next_bar_now():
    server, clock, rec = offline_server(ScriptedEngine(PHRASE), bpm=120.0)
    server.run_until(clock.now() + 1.0)
    d0 = downbeats(rec)[0]
    t_sync = d0 + 2 * 2.0 + 1.37  # late in bar 2
    server.run_until(t_sync)
    server.controls.sync()
    server.run_until(t_sync + 8.0)
    beats = downbeats(rec)
    assert beats[3] == t_sync and beats[4] == t_sync + 2.0 and beats[5] == t_sync + 4.0
    # What was left of bar 2 after the sync is cut.
    assert not [h for h in rec.hits() if h.bar == 2 and h.t_s > t_sync]
    got = sorted((h.step, h.t_s) for h in rec.hits() if h.bar == 3)
    want = sorted((step, t_sync + (step + off) * 0.125) for step, _, _, off in expected_hits(3))
    assert [g[0] for g in got] == [w[0] for w in want]
    assert [g[1] for g in got] == pytest.approx([w[1] for w in want], abs=1e-9)
    # The early kick's moment had passed when the bar line moved: it goes out at once.
    emitted = {id(e): t for e, t in rec.records}
    assert all(emitted[id(h)] >= t_sync for h in rec.hits() if h.bar == 3)


def test_sync_early_in_a_bar_realigns_that_bar():
    server, clock, rec = offline_server(ScriptedEngine(PHRASE), bpm=120.0)
    server.run_until(clock.now() + 1.0)
    d0 = downbeats(rec)[0]
    t_sync = d0 + 2.0 + 0.3  # early in bar 1: bar 1 "really" started now
    server.run_until(t_sync)
    server.controls.sync()
    server.run_until(t_sync + 6.0)
    beats = downbeats(rec)
    assert beats[2] == t_sync + 2.0 and beats[3] == t_sync + 4.0
    # The rest of bar 1 moves with its downbeat: the hi-hat on step 4 (0.5 steps early).
    hat = [h for h in rec.hits() if h.bar == 1 and h.step == 4]
    assert len(hat) == 1 and hat[0].t_s == pytest.approx(t_sync + (4 - 0.5) * 0.125, abs=1e-9)
    emitted = {id(e): t for e, t in rec.records}
    assert emitted[id(hat[0])] == hat[0].t_s


def test_mute_velocity_and_timing_amounts_apply_from_the_next_bar():
    server, clock, rec = offline_server(ScriptedEngine(PHRASE), bpm=120.0)
    server.run_until(clock.now() + 1.0)
    d0 = downbeats(rec)[0]
    server.run_until(d0 + 0.2)
    server.controls.set_muted([0], True)  # kick
    server.controls.set_velocity_amount(0.0)
    server.controls.set_timing_amount(0.0)
    server.run_until(d0 + 10.0)
    bar0 = [h for h in rec.hits() if h.bar == 0]
    assert any(h.voice == "kick" for h in bar0)  # already committed
    later = [h for h in rec.hits() if h.bar >= 1]
    assert later and not [h for h in later if h.voice == "kick"]
    assert all(h.velocity == FLAT_VELOCITY for h in later)
    beats = downbeats(rec)
    assert all(h.t_s == beats[h.bar] + h.step * 0.125 for h in later)  # straight on the grid
    server.controls.set_muted([0], False)
    server.run_until(clock.now() + 4.0)
    assert [h for h in rec.hits() if h.voice == "kick" and h.bar >= 6]


class TimedPort:
    """A MIDI port that notes when each message went out (on the fake clock)."""

    def __init__(self, now):
        self.now = now
        self.sent = []

    def send(self, msg):
        self.sent.append((self.now(), msg))

    def close(self):
        pass


def run_scheduler(sched: Scheduler, clock: FakeClock, seconds: float) -> None:
    sched.process(clock.now())
    t_end = clock.now() + seconds
    while sched.next_t_s() <= t_end:
        clock.advance_to(max(sched.next_t_s(), clock.now()))
        sched.process(clock.now())
    clock.advance_to(max(t_end, clock.now()))


def test_midi_clock_ticks_24_per_beat_on_the_grid_and_only_midi_gets_them():
    clock = FakeClock()
    port = TimedPort(clock.now)
    rec = RecordingSink(clock.now)  # wants hits, bars and transport: no MIDI protocol
    engine = ScriptedEngine(PHRASE)
    timeline = Timeline()
    timeline.publish(0, {b: BarContent(tuple(Hit(s, d, v, o) for s, d, v, o in expected_hits(b)),
                                       None, b, "sample") for b in range(3)}, strict=False)
    sched = Scheduler(clock, timeline, [MidiSink(port, "fake", clock=True), rec], engine.spec,
                      bpm=120.0)
    sched.start()
    run_scheduler(sched, clock, 5.0)
    sent = [(t, m.type) for t, m in port.sent]
    (d0,) = [t for t, kind in sent if kind == "start"]  # bar 0's downbeat (its early kick is before)
    assert d0 == rec.bars()[0].downbeat_t_s
    ticks = [t for t, kind in sent if kind == "clock"]
    assert ticks[:96] == pytest.approx([d0 + k * 2.0 / 96 for k in range(96)], abs=1e-12)
    # Each note ends half a step after it started; the recording saw the notes but none of
    # MIDI's own protocol (note-offs, ticks): outputs own their protocol.
    ons = [(t, m.note) for t, m in port.sent if m.type == "note_on"]
    offs = [(t, m.note) for t, m in port.sent if m.type == "note_off"]
    assert len(ons) == len(rec.hits()) > 0
    assert len(offs) >= len(ons) - 1  # the last note may still be sounding
    assert offs == [(pytest.approx(t + 0.5 * 0.125, abs=1e-12), n) for t, n in ons[:len(offs)]]
    assert [e.kind for e in rec.events(ClockEvent)] == ["start"]
    assert not [e for e in rec.events() if type(e).__name__ == "NoteOffEvent"]


def test_an_output_that_wants_no_bars_gets_none():
    clock = FakeClock()
    only_hits = RecordingSink(clock.now, wants=(HitEvent,))
    everything = RecordingSink(clock.now)
    sched = Scheduler(clock, Timeline(), [only_hits, everything], ScriptedEngine(PHRASE).spec,
                      bpm=240.0)
    sched.timeline.publish(0, {0: BarContent((Hit(0, 0, 0.8, 0.0),), None, 0, "sample")},
                           strict=False)
    sched.start()
    run_scheduler(sched, clock, 2.0)
    assert [type(e) for e in only_hits.events()] == [HitEvent]
    assert {type(e) for e in everything.events()} == {HitEvent, BarEvent, ClockEvent}


def test_a_missed_bar_repeats_the_bar_a_phrase_ago_and_is_counted():
    clock = FakeClock()
    rec = RecordingSink(clock.now)
    timeline = Timeline()
    spec = ScriptedEngine(PHRASE).spec
    content = BarContent((Hit(0, 0, 0.8, 0.0),), None, 0, "sample", ready_t_s=clock.now() - 10)
    timeline.publish(0, {0: content}, strict=False)
    sched = Scheduler(clock, timeline, [rec], spec, bpm=240.0, bar_lookahead_s=0.0)
    sched.start()
    sched.process(clock.now())
    t_end = clock.now() + 6 * 1.0
    while sched.next_t_s() <= t_end:
        clock.advance_to(max(sched.next_t_s(), clock.now()))
        sched.process(clock.now())
    by_bar = {bar: c.source for bar, _, _, c in sched.committed}
    assert by_bar[0] == "sample" and by_bar[1] == "silence" and by_bar[4] == "repeat"
    assert [h.bar for h in rec.hits()] == [0, 4]
    assert sched.stats.missed_bars >= 4 and sched.stats.late_bars >= 4


def test_a_lookahead_longer_than_a_bar_is_capped_and_no_bar_is_missed():
    server, clock, rec = offline_server(ScriptedEngine(PHRASE), bpm=400.0, bar_lookahead_s=2.0)
    server.run_until(clock.now() + 10.0)
    bar_length_s = 4 * 60 / 400
    bars = rec.bars()
    assert len(bars) > 10
    assert all(b.downbeat_t_s - b.t_s == pytest.approx(0.9 * bar_length_s) for b in bars)
    assert server.stats.missed_bars == 0 and server.stats.late_bars == 0


def quiet_scheduler(next_due_t_s: float) -> Scheduler:
    scheduler = Scheduler(FakeClock(), Timeline(), [], ScriptedEngine(PHRASE).spec)
    scheduler.next_due_t_s = next_due_t_s  # what the clock thread sets before each wait
    return scheduler


def test_helpers_keep_quiet_before_a_send_and_while_the_clock_is_still_busy_with_it():
    s = quiet_scheduler(10.0)
    assert s.quiet_s(10.0 - QUIET_BEFORE_S - 0.0001) == 0.0  # not yet: go ahead
    assert s.quiet_s(10.0 - 0.001) == pytest.approx(0.001 + QUIET_AFTER_S)  # until just after it
    # Past it, the clock thread has not moved next_due_t_s on: it is still sending (or
    # committing a bar), so poll rather than take the GIL from it...
    assert s.quiet_s(10.0 + QUIET_AFTER_S + 0.001) == QUIET_POLL_S
    # ...but never for long: a stalled clock thread stalls nobody else.
    assert s.quiet_s(10.0 + QUIET_BUSY_MAX_S + 1e-6) == 0.0
    s.next_due_t_s = 10.1  # done: the clock thread waits for the next send
    assert s.quiet_s(10.0 + QUIET_AFTER_S + 0.001) == 0.0


def test_work_that_would_run_into_a_send_waits_until_after_it():
    s = quiet_scheduler(10.0)
    before_s = 10.0 - QUIET_BEFORE_S - DECODE_WORK_S
    assert s.quiet_s(before_s - 0.0001, DECODE_WORK_S) == 0.0  # ends before the window
    assert s.quiet_s(before_s + 0.001, DECODE_WORK_S) == pytest.approx(
        QUIET_BEFORE_S + DECODE_WORK_S - 0.001 + QUIET_AFTER_S)
    assert s.quiet_s(before_s + 0.001) == 0.0  # short work fits
    assert quiet_scheduler(math.inf).quiet_s(10.0, DECODE_WORK_S) == 0.0  # nothing to send


def test_a_send_due_just_after_a_commit_goes_out_first():
    clock = FakeClock()
    rec = RecordingSink(clock.now)
    s = Scheduler(clock, Timeline(), [rec], ScriptedEngine(PHRASE).spec, bpm=120.0)
    s.start(notify=False)
    s.process(clock.now())
    commit_t_s = s.next_commit_t_s()
    assert s.commit_at_s() == commit_t_s  # nothing to send near it
    s._push(ClockEvent(commit_t_s + COMMIT_CLEAR_S + 0.0001, -1, "tick"))
    assert s.commit_at_s() == commit_t_s  # a send well after it does not hold it back
    s._push(ClockEvent(commit_t_s + 0.001, -1, "tick"))
    assert s.commit_at_s() == s.next_t_s() == commit_t_s + 0.001
    clock.advance_to(commit_t_s + 0.001)
    s.process(clock.now())
    assert [e.t_s for e, _ in rec.records] == [commit_t_s + 0.001]  # sent, then committed
    assert s.next_bar == 1


def test_a_commit_waits_for_sends_only_within_its_slack():
    clock = FakeClock()
    s = Scheduler(clock, Timeline(), [], ScriptedEngine(PHRASE).spec, bpm=120.0)
    s.start(notify=False)
    s.process(clock.now())
    commit_t_s = s.next_commit_t_s()
    s._push(ClockEvent(commit_t_s + COMMIT_CLEAR_S - 0.0001, -1, "tick"))
    assert s.commit_at_s() == min(commit_t_s + COMMIT_CLEAR_S - 0.0001,
                                  commit_t_s + COMMIT_SLACK_S)
    assert COMMIT_SLACK_S < COMMIT_MARGIN_S  # the bar's own first send is never delayed by it


@pytest.mark.parametrize("into_bar_s,next_downbeat_s", [(0.3, 2.0), (1.37, 0.0)])
def test_a_sync_moves_an_outputs_own_events_with_their_bar_and_ends_every_note(
        into_bar_s, next_downbeat_s):
    """Early in bar 1 the bar moves (its note-offs with it); late in it the bar is cut short
    and the next starts at once (the note-offs of notes it started still go out)."""
    clock = FakeClock()
    port = TimedPort(clock.now)
    timeline = Timeline()
    timeline.publish(0, {b: BarContent(tuple(Hit(s, d, v, o) for s, d, v, o in expected_hits(b)),
                                       None, b, "sample") for b in range(6)}, strict=False)
    sched = Scheduler(clock, timeline, [MidiSink(port, "fake", clock=True)],
                      ScriptedEngine(PHRASE).spec, bpm=120.0)
    sched.start(notify=False)
    run_scheduler(sched, clock, 1.0)
    d0 = sched.bar_t_s(0)
    run_scheduler(sched, clock, d0 + 2.0 + into_bar_s - clock.now())
    t_sync = clock.now()
    sched.sync()
    run_scheduler(sched, clock, 4.5)
    bar_2 = t_sync + next_downbeat_s  # where bar 2 starts now
    ticks = [t for t, m in port.sent if m.type == "clock" and t >= bar_2 - 1e-9]
    assert ticks[:96] == pytest.approx([bar_2 + k * 2.0 / 96 for k in range(96)], abs=1e-9)
    # Every note that started ends (the moved bar's note-offs moved with their notes), but
    # for any started in the last half step.
    sounding = {}
    for t, m in port.sent:
        if m.type == "note_on":
            sounding[m.note] = t
        elif m.type == "note_off":
            assert sounding.pop(m.note) <= t
    assert all(t > clock.now() - 0.5 * 0.125 for t in sounding.values()), sounding
