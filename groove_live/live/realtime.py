"""Real-time tuning in one place: thread priorities, the GIL switch interval, the frozen heap.

The clock thread must send on time while the OSC thread parses whatever arrives and the
worker decodes. Where the OS allows it, the clock runs SCHED_FIFO above the helpers; where it
does not (no rtprio limit, no CAP_SYS_NICE: the common case on a laptop), the helpers lower
their own priority instead, which any process may do, so the clock still wins the CPU.
`RealtimePolicy` does all of this; Server and Scheduler receive one, tests pass `NoRealtime()`.
"""
from __future__ import annotations

import ctypes
import gc
import os
import platform
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
# Where SCHED_FIFO is refused, the clock thread asks the fair scheduler for a short time slice.
# Linux's EEVDF scheduler (6.6 on) runs the task with the earliest virtual deadline, a slice
# after it became eligible; a thread waking with the default slice (0.7 ms x (1 + log2 cores):
# 1.4 ms on 2 cores) usually waits for whatever runs to finish its own, and so sends up to a
# slice or a tick late behind a flood sender or a training job on the other core. From 6.12 a
# waking task with a shorter slice preempts at once, and a group's slice is its shortest
# member's, so this also carries through autogroups. Any thread may ask it for itself
# (sched_setattr's sched_runtime under SCHED_OTHER, no privilege); 0.1 ms is the kernel's
# minimum. Older kernels ignore the value.
CLOCK_SLICE_S = 0.0001
# sched_setattr has no wrapper in Python's os module: its syscall number per architecture,
# only where it is checked against the kernel's tables (a wrong number would run another call).
_SCHED_SETATTR = {"x86_64": 314, "amd64": 314, "aarch64": 274, "arm64": 274, "riscv64": 274,
                  "i686": 351, "i386": 351, "armv7l": 380}
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


class _SchedAttr(ctypes.Structure):  # include/uapi/linux/sched/types.h, SCHED_ATTR_SIZE_VER1
    _fields_ = [("size", ctypes.c_uint32), ("sched_policy", ctypes.c_uint32),
                ("sched_flags", ctypes.c_uint64), ("sched_nice", ctypes.c_int32),
                ("sched_priority", ctypes.c_uint32), ("sched_runtime", ctypes.c_uint64),
                ("sched_deadline", ctypes.c_uint64), ("sched_period", ctypes.c_uint64),
                ("sched_util_min", ctypes.c_uint32), ("sched_util_max", ctypes.c_uint32)]


def short_slice(slice_s: float = CLOCK_SLICE_S) -> bool:
    """Ask the fair scheduler to give the calling thread (Linux: per thread) time slices of
    `slice_s`, so it preempts on waking (see CLOCK_SLICE_S), best effort: False where the call
    does not exist or is refused. Keeps the thread's policy (SCHED_OTHER) and nice value.
    GROOVE_LIVE_DEFAULT_SLICE=1 turns it off (to compare)."""
    number = _SCHED_SETATTR.get(platform.machine().lower())
    if (number is None or not sys.platform.startswith("linux")
            or os.environ.get("GROOVE_LIVE_DEFAULT_SLICE")):
        return False
    try:
        tid = threading.get_native_id()
        if os.sched_getscheduler(tid) != os.SCHED_OTHER:
            return False  # real-time already, or SCHED_BATCH/IDLE on purpose: leave it
        attr = _SchedAttr(size=ctypes.sizeof(_SchedAttr), sched_policy=os.SCHED_OTHER,
                          sched_nice=os.getpriority(os.PRIO_PROCESS, tid),
                          sched_runtime=int(slice_s * 1e9))
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.syscall(number, 0, ctypes.byref(attr), 0) == 0
    except (OSError, AttributeError, ValueError):
        return False


class RealtimePolicy:
    """What the live server asks of the OS so the clock thread keeps time."""

    def __init__(self, helper_nice: int = HELPER_NICE,
                 switch_interval_s: float = SWITCH_INTERVAL_S) -> None:
        self.helper_nice = helper_nice
        self.switch_interval_s = switch_interval_s
        self.clock_slice = False  # whether the clock thread got a short fair slice

    def clock_thread(self) -> bool:
        """Call on the clock thread; True if it got SCHED_FIFO. Without it, a short fair
        slice (short_slice), so it still preempts other work when it wakes."""
        if realtime_priority(CLOCK_PRIORITY):
            return True
        self.clock_slice = short_slice()
        return False

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
