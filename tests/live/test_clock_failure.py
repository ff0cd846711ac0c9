"""Failures on the clock thread are reported, counted and survived; never a silent server."""
from __future__ import annotations

import threading


from groove_live.live import scheduler as scheduler_module
from groove_live.live.clock import FakeClock
from groove_live.live.realtime import NoRealtime
from groove_live.live.events import BarContent, Hit, HitEvent
from groove_live.live.scheduler import SINK_FAILURE_LIMIT, Scheduler
from groove_live.live.sinks import OscSink, RecordingSink, Sink
from groove_live.live.stats import REPORT_EVERY_S, ErrorLog
from groove_live.live.timeline import Timeline
from groove_live.spec import ModelSpec

from .conftest import offline_server
from .fake_engine import FakeEngine

SPEC = ModelSpec(z_size=8)


class Broken(Sink):
    """Raises on every `every`-th emit (1: always)."""

    name = "broken"

    def __init__(self, every: int = 1) -> None:
        self.every = every
        self.calls = 0

    def emit(self, event) -> None:
        self.calls += 1
        if self.calls % self.every == 0:
            raise RuntimeError("wire fell out")


def four_hit_bars(n: int) -> dict[int, BarContent]:
    hits = tuple(Hit(step, 0, 0.8, 0.0) for step in (0, 4, 8, 12))
    return {bar: BarContent(hits, None, bar % 4, "sample") for bar in range(n)}


def play(sinks: list[Sink], bars: int, **kw) -> tuple[Scheduler, FakeClock]:
    """A scheduler on a fake clock (240 BPM: a bar a second) over `bars` bars of four hits
    each, run to their end."""
    clock = FakeClock()
    sched = Scheduler(clock, _timeline(bars), sinks, SPEC, bpm=240.0, bar_lookahead_s=0.0, **kw)
    sched.start(notify=False)
    sched.process(clock.now())
    t_end = sched.bar_t_s(bars) - 1e-6  # bar `bars` sends nothing before its downbeat
    while sched.next_t_s() <= t_end:
        clock.advance_to(max(sched.next_t_s(), clock.now()))
        sched.process(clock.now())
    return sched, clock


def _timeline(bars: int) -> Timeline:
    t = Timeline()
    t.publish(0, four_hit_bars(bars), strict=False)
    return t


def stderr_lines(capsys) -> list[str]:
    return capsys.readouterr().err.splitlines()


def test_an_output_that_keeps_failing_is_dropped_loudly_and_the_others_play_on(capsys):
    broken = Broken()
    sched, clock = play([broken, rec := RecordingSink(lambda: 0.0)], bars=8)
    assert len(rec.hits()) == 8 * 4  # every hit reached the working output
    errors = sched.stats.summary()
    assert errors["sink_errors"] == SINK_FAILURE_LIMIT and errors["outputs_dropped"] == 1
    assert broken.calls == SINK_FAILURE_LIMIT  # never called again once dropped
    assert broken not in sched.sinks
    lines = stderr_lines(capsys)
    assert len(lines) == 2, lines  # the first failure, then the drop: not one line per event
    assert lines[0].startswith("groove-live: the broken output failed to send (RuntimeError")
    assert lines[1].startswith("groove-live: stopped sending to the broken output: it failed")


def test_an_output_failing_now_and_then_is_kept_counted_and_printed_rate_limited(capsys):
    broken = Broken(every=2)  # every other send fails: never SINK_FAILURE_LIMIT in a row
    sched, clock = play([broken, rec := RecordingSink(lambda: 0.0)], bars=24)
    assert len(rec.hits()) == 24 * 4 and broken in sched.sinks
    failures = broken.calls // 2
    assert sched.stats.summary()["sink_errors"] == failures > 20
    lines = stderr_lines(capsys)
    # 24 bars of one second: a line at the first failure and one per REPORT_EVERY_S after it.
    assert 2 <= len(lines) <= 1 + 24 // REPORT_EVERY_S, lines
    assert "more since the last report" in lines[1]


def test_a_bar_that_fails_to_render_is_skipped_and_the_next_plays(capsys, monkeypatch):
    real = scheduler_module.render_bar

    def render(content, bar, *args):
        if bar == 2:
            raise ValueError("no such drum")
        return real(content, bar, *args)

    monkeypatch.setattr(scheduler_module, "render_bar", render)
    sched, _ = play([rec := RecordingSink(lambda: 0.0)], bars=5)
    assert sorted({h.bar for h in rec.hits()}) == [0, 1, 3, 4]
    assert sched.stats.summary()["render_errors"] == 1
    (line,) = stderr_lines(capsys)
    assert line == ("groove-live: bar 2 could not be played (ValueError: no such drum); "
                    "skipped it")


class StopAfter(Sink):
    """Sets `stop` once a hit of bar `bar` went out: ends a clock loop run on the fake clock."""

    def __init__(self, bar: int, stop: threading.Event) -> None:
        self.bar, self.stop = bar, stop

    def emit(self, event) -> None:
        if isinstance(event, HitEvent) and event.bar >= self.bar:
            self.stop.set()


def test_an_internal_error_on_the_clock_thread_is_reported_and_time_goes_on(capsys):
    clock = FakeClock()
    rec = RecordingSink(clock.now)
    stop = threading.Event()
    # The loop runs on pytest's own thread here: ask the OS for nothing, or that thread (and
    # every thread it starts later) would stay real-time where the OS allows it.
    sched = Scheduler(clock, _timeline(6), [rec, StopAfter(5, stop)], SPEC, bpm=240.0,
                      bar_lookahead_s=0.0, realtime_policy=NoRealtime())
    sched.start(notify=False)

    def bug(now):
        raise KeyError("oops")

    sched.post(bug)
    sched.run(stop)  # the clock thread's own loop, on the fake clock
    assert {h.bar for h in rec.hits()} >= {0, 1, 2, 3, 4}  # every bar after the error played
    assert sched.stats.summary()["clock_errors"] == 1
    (line,) = stderr_lines(capsys)
    assert line == "groove-live: error on the clock thread (KeyError: 'oops'); going on"


def test_sends_the_os_refuses_are_counted_not_printed(capsys):
    class RefusingSocket:
        def sendto(self, dgram, address):
            raise ConnectionRefusedError(111, "Connection refused")

    osc = OscSink(RefusingSocket(), [("127.0.0.1", 9)])
    sched, _ = play([osc], bars=2)
    summary = sched.stats.summary()
    assert summary["send_errors"] == osc.send_errors == 2 * 4 + 2  # hits and /groove/bar
    assert summary["sink_errors"] == 0 and stderr_lines(capsys) == []


def test_info_reports_every_error_counter():
    server, clock, rec = offline_server(FakeEngine(), bpm=240.0)
    server.run_until(clock.now() + 2.0)
    info = dict(server.info())
    for key in ("render_errors", "sink_errors", "clock_errors", "internal_errors",
                "outputs_dropped", "send_errors"):
        assert info[key] == 0, key


def test_the_rate_limit_counts_every_error_and_prints_one_line_per_window():
    import io

    out = io.StringIO()
    log = ErrorLog(out=out, every_s=10.0)
    printed = [log.record("sink", "it broke", now_s=100.0 + 0.01 * k) for k in range(100)]
    assert printed == [True] + [False] * 99
    log.record("render", "bar 3 broke", now_s=100.5)  # kinds are limited apart
    log.record("sink", "it broke", now_s=111.0)
    assert out.getvalue().splitlines() == [
        "groove-live: it broke", "groove-live: bar 3 broke",
        "groove-live: it broke (and 99 more since the last report)"]
    assert log.snapshot()["sink_errors"] == 101 and log.snapshot()["render_errors"] == 1


def test_an_output_that_cannot_plan_or_prepare_is_counted_and_the_others_play(capsys):
    class BadPlanner(RecordingSink):
        name = "bad-planner"
        calls = 0

        def plan(self, bar):
            self.calls += 1
            raise ValueError("cannot plan")

    class BadPreparer(RecordingSink):
        name = "bad-preparer"
        calls = 0

        def prepare(self, event):
            self.calls += 1
            raise ValueError("cannot prepare")

    planner, preparer = BadPlanner(lambda: 0.0), BadPreparer(lambda: 0.0)
    sched, _ = play([planner, preparer, rec := RecordingSink(lambda: 0.0)], bars=3)
    assert len(rec.hits()) == len(planner.hits()) == len(preparer.hits()) == 3 * 4
    assert planner.calls >= 3 and preparer.calls >= 3 * 5
    summary = sched.stats.summary()
    assert summary["sink_errors"] == planner.calls + preparer.calls
    assert summary["outputs_dropped"] == 0  # each send that went through reset the count
    (line,) = stderr_lines(capsys)  # one kind, printed once
    assert line.startswith("groove-live: the bad-p")
