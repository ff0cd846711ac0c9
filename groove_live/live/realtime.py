"""Real-time tuning in one place: thread priorities, the GIL switch interval, the frozen heap.

The clock thread must send on time while the OSC thread parses whatever arrives and the
worker decodes. Where the OS allows it, the clock runs SCHED_FIFO above the helpers; where it
does not (no rtprio limit, no CAP_SYS_NICE: the common case on a laptop), the helpers lower
their own priority instead, which any process may do, so the clock still wins the CPU.
`RealtimePolicy` does all of this; Server and Scheduler receive one, tests pass `NoRealtime()`.
"""
from __future__ import annotations

import gc
import os
import sys
import threading

# SCHED_FIFO priorities; JACK's audio threads use 70 and up, we stay well below them.
CLOCK_PRIORITY = 20
HELPER_PRIORITY = 10  # the OSC and worker threads: above ordinary work, below the clock
# Without SCHED_FIFO the helpers make themselves nicer instead: nice 10 is a CFS weight of 110
# against the clock thread's 1024, so inside the server the clock wins the CPU whenever it
# wakes, however busy an OSC flood keeps the OSC thread. Not 19 (weight 15): a helper holding
# the GIL when it is preempted makes the clock wait for it, and at 19 other programs sharing
# its scheduling group can starve it (a decode once took 330 ms while flooded). The quiet
# windows (Scheduler.quiet_s) keep helpers off the GIL around sends, which keeps that rare.
HELPER_NICE = 10
# The clock thread must get the GIL back quickly when its wait ends; the default 5 ms switch
# interval would let the OSC or worker thread hold it for a whole 5 ms.
SWITCH_INTERVAL_S = 0.0002


def realtime_priority(priority: int = CLOCK_PRIORITY) -> bool:
    """Ask for real-time scheduling for the calling thread (Linux: per thread), best effort.

    On a busy machine a normal thread can wake milliseconds late; a SCHED_FIFO one preempts
    ordinary work at once. The OSC and worker threads ask too (lower): a thread preempted by
    other programs while it holds the GIL would make the clock thread wait for it. Needs
    CAP_SYS_NICE or an rtprio limit (audio users usually have one for JACK); without it every
    thread simply runs at normal priority. GROOVE_LIVE_NO_REALTIME=1 turns it off.
    """
    if os.environ.get("GROOVE_LIVE_NO_REALTIME") or not hasattr(os, "sched_setscheduler"):
        return False
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        return True
    except (OSError, AttributeError):
        return False


def lower_priority(nice: int = HELPER_NICE) -> bool:
    """Raise the calling thread's nice value to `nice` (Linux: nice is per thread), best effort.

    Needs no privilege: a thread may always make itself nicer. Never lowers it.
    """
    if not hasattr(os, "setpriority") or not hasattr(os, "PRIO_PROCESS"):
        return False
    try:
        tid = threading.get_native_id()
        if os.getpriority(os.PRIO_PROCESS, tid) >= nice:
            return True
        os.setpriority(os.PRIO_PROCESS, tid, nice)
        return True
    except OSError:
        return False


class RealtimePolicy:
    """What the live server asks of the OS so the clock thread keeps time."""

    def __init__(self, helper_nice: int = HELPER_NICE,
                 switch_interval_s: float = SWITCH_INTERVAL_S) -> None:
        self.helper_nice = helper_nice
        self.switch_interval_s = switch_interval_s

    def clock_thread(self) -> bool:
        """Call on the clock thread; True if it got SCHED_FIFO."""
        return realtime_priority(CLOCK_PRIORITY)

    def helper_thread(self) -> str:
        """Call on the OSC and worker threads: SCHED_FIFO below the clock where allowed, else
        yield to the clock under CFS. Says which it got: "realtime", "nice N" or "normal"."""
        if realtime_priority(HELPER_PRIORITY):
            return "realtime"
        if lower_priority(self.helper_nice):
            return f"nice {self.helper_nice}"
        return "normal"

    def shorten_switch_interval(self) -> float | None:
        """Set the GIL switch interval (process-wide); returns the old one to restore."""
        previous_s = sys.getswitchinterval()
        sys.setswitchinterval(self.switch_interval_s)
        return previous_s

    def freeze_heap(self) -> None:
        """Call once after start-up, in the serve process only (it is process-wide).

        A full garbage collection walks every object the imports and the model left behind
        (~25k): 4-7 ms holding the GIL on a busy 2-core box, long enough to make the clock
        thread late. Freezing them once here leaves later collections only the little the
        music creates.
        """
        gc.collect()
        gc.freeze()


class NoRealtime(RealtimePolicy):
    """Asks the OS for nothing: for tests, and servers sharing a process with other work."""

    def clock_thread(self) -> bool:
        return False

    def helper_thread(self) -> str:
        return "normal"

    def shorten_switch_interval(self) -> float | None:
        return None

    def freeze_heap(self) -> None:
        pass
