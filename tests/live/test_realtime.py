"""Real-time tuning: what each thread asks of the OS, and that Server and Scheduler ask it."""
from __future__ import annotations

import gc
import os
import sys
import threading

import pytest

from groove_live.live.clock import FakeClock
from groove_live.live.realtime import (CLOCK_SLICE_S, HELPER_NICE, NoRealtime, RealtimePolicy,
                                       lower_priority, realtime_priority, short_slice)
from groove_live.live.scheduler import Scheduler
from groove_live.live.server import ServeConfig, Server
from groove_live.live.timeline import Timeline
from groove_live.spec import ModelSpec

from .fake_engine import FakeEngine

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice is Linux's")


def nice_of_this_thread() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def on_a_new_thread(fn):
    """Run fn on a fresh thread (priorities stick to the thread) and return what it returned."""
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("value", fn()))
    t.start()
    t.join()
    return result["value"]


@pytest.fixture
def no_rtprio(monkeypatch):
    """What a user without an rtprio limit gets (this box may grant SCHED_FIFO to root)."""
    monkeypatch.setenv("GROOVE_LIVE_NO_REALTIME", "1")


def test_the_switch_off_variable_refuses_real_time(no_rtprio):
    assert on_a_new_thread(realtime_priority) is False


@linux_only
def test_lower_priority_changes_only_the_calling_thread_and_never_lowers_it():
    base = nice_of_this_thread()
    if base >= 15:
        pytest.skip(f"this test process already runs at nice {base}")

    def lower_then_ask_less():
        first = lower_priority(15)
        after_first = nice_of_this_thread()
        second = lower_priority(base)  # asking for less niceness must not undo it
        return first, after_first, second, nice_of_this_thread()

    assert on_a_new_thread(lower_then_ask_less) == (True, 15, True, 15)
    assert nice_of_this_thread() == base


@linux_only
def test_without_real_time_helper_threads_yield_to_the_clock(no_rtprio):
    if nice_of_this_thread() >= HELPER_NICE:
        pytest.skip("this test process already runs at the helpers' nice value")
    policy = RealtimePolicy()
    got = on_a_new_thread(lambda: (policy.helper_thread(), nice_of_this_thread()))
    assert got == (f"nice {HELPER_NICE}", HELPER_NICE)
    assert on_a_new_thread(policy.clock_thread) is False


def as_a_fair_thread(fn):
    """fn on a thread reset to SCHED_OTHER first: threads inherit their creator's policy, and
    another test in this process may have left the main thread real-time (root may)."""
    def run():
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        return fn()
    return lambda: on_a_new_thread(run)


def slice_ns_of_this_thread() -> int | None:
    """The fair scheduler's slice of the calling thread (/proc, Linux 6.6+), None if unshown."""
    path = f"/proc/self/task/{threading.get_native_id()}/sched"
    try:
        lines = open(path).read().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("se.slice"):
            return int(line.split(":")[1])
    return None


@linux_only
def test_without_real_time_the_clock_thread_gets_a_short_slice(no_rtprio):
    if as_a_fair_thread(slice_ns_of_this_thread)() is None:
        pytest.skip("this kernel does not show se.slice (EEVDF slices need Linux 6.6+)")
    policy = RealtimePolicy()
    got = as_a_fair_thread(lambda: (policy.clock_thread(), slice_ns_of_this_thread(),
                                    nice_of_this_thread()))()
    assert got == (False, int(CLOCK_SLICE_S * 1e9), nice_of_this_thread())
    assert policy.clock_slice is True
    default = as_a_fair_thread(slice_ns_of_this_thread)()
    assert default > int(CLOCK_SLICE_S * 1e9)  # only the asking thread changed


@linux_only
def test_the_slice_can_be_left_at_the_default(monkeypatch):
    if as_a_fair_thread(slice_ns_of_this_thread)() is None:
        pytest.skip("this kernel does not show se.slice (EEVDF slices need Linux 6.6+)")
    monkeypatch.setenv("GROOVE_LIVE_DEFAULT_SLICE", "1")
    default = as_a_fair_thread(slice_ns_of_this_thread)()
    assert as_a_fair_thread(lambda: (short_slice(), slice_ns_of_this_thread()))() == (
        False, default)


def test_switch_interval_is_shortened_and_the_old_one_returned():
    before = sys.getswitchinterval()
    policy = RealtimePolicy(switch_interval_s=0.0003)
    try:
        assert policy.shorten_switch_interval() == before
        assert sys.getswitchinterval() == pytest.approx(0.0003)
    finally:
        sys.setswitchinterval(before)


def test_freeze_heap_moves_the_heap_out_of_collections():
    class Marker:
        pass
    kept = Marker()
    try:
        RealtimePolicy().freeze_heap()
        assert gc.get_freeze_count() > 0
        assert not any(o is kept for o in gc.get_objects())  # frozen objects are not tracked
    finally:
        gc.unfreeze()


def test_no_realtime_asks_for_nothing():
    policy = NoRealtime()
    before_interval, before_frozen = sys.getswitchinterval(), gc.get_freeze_count()
    got = on_a_new_thread(lambda: (policy.clock_thread(), policy.helper_thread(),
                                   nice_of_this_thread()))
    assert got == (False, "normal", nice_of_this_thread())
    assert policy.shorten_switch_interval() is None
    policy.freeze_heap()
    assert sys.getswitchinterval() == before_interval
    assert gc.get_freeze_count() == before_frozen


class SpyPolicy(NoRealtime):
    """Records which thread asked for what."""

    def __init__(self, clock_answer: bool = True) -> None:
        super().__init__()
        self.clock_answer = clock_answer
        self.calls: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def _record(self, what: str) -> None:
        with self._lock:
            self.calls.append((what, threading.current_thread().name))

    def clock_thread(self) -> bool:
        self._record("clock")
        return self.clock_answer

    def helper_thread(self) -> str:
        self._record("helper")
        return "normal"

    def shorten_switch_interval(self) -> float | None:
        self._record("switch interval")
        return None


def test_the_scheduler_asks_for_its_priority_on_its_own_thread_and_reports_it():
    for answer in (True, False):
        policy = SpyPolicy(clock_answer=answer)
        scheduler = Scheduler(FakeClock(), Timeline(), [], ModelSpec(z_size=8),
                              realtime_policy=policy)
        stop = threading.Event()
        stop.set()  # one pass: the priority request comes before the loop
        t = threading.Thread(target=scheduler.run, args=(stop,), name="clock-under-test")
        t.start()
        t.join()
        assert policy.calls == [("clock", "clock-under-test")]
        assert scheduler.realtime is answer and scheduler.running.is_set()


def test_the_server_hands_its_policy_to_every_thread():
    policy = SpyPolicy(clock_answer=False)
    server = Server(FakeEngine(), ServeConfig(port=0, seed=3), realtime_policy=policy)
    try:
        server.start()
        assert server.scheduler.realtime_policy is policy
        assert server.scheduler.running.wait(5.0)
    finally:
        server.close()
    assert sorted(policy.calls) == sorted([("switch interval", "MainThread"),
                                           ("clock", "groove-clock"),
                                           ("helper", "groove-worker"),
                                           ("helper", "groove-osc")])
