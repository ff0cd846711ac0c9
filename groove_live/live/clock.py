"""Time sources for the scheduler: a monotonic clock for real use, a fake one tests drive."""
from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds; the scheduler's grid is in this time base."""

    def wall_s(self, t_s: float) -> float:
        """Seconds since the Unix epoch at monotonic time `t_s` (for OSC time tags)."""

    def wait_until(self, t_s: float, wake: threading.Event) -> bool:
        """Block until `t_s`; return True early if `wake` is set first."""


class MonotonicClock:
    """time.monotonic, with a short spin at the end of each wait.

    A timed wait on Linux wakes 50-200 us late and later under load; spinning the last
    `spin_s` keeps sends within a few tens of microseconds of their intended time.
    """

    def __init__(self, spin_s: float = 0.0003) -> None:
        self.spin_s = spin_s
        # One fixed offset, so time tags follow the monotonic grid even if NTP steps the wall clock.
        self._wall_minus_mono_s = time.time() - time.monotonic()

    def now(self) -> float:
        return time.monotonic()

    def wall_s(self, t_s: float) -> float:
        return t_s + self._wall_minus_mono_s

    def wait_until(self, t_s: float, wake: threading.Event) -> bool:
        while True:
            remaining_s = t_s - time.monotonic()
            if remaining_s <= 0.0:
                return wake.is_set()
            if remaining_s > self.spin_s:
                if wake.wait(remaining_s - self.spin_s):
                    return True
            else:
                while time.monotonic() < t_s:
                    pass
                return wake.is_set()


class FakeClock:
    """A clock that only moves when told: tests jump it from event to event and assert exactly."""

    def __init__(self, t_s: float = 1000.0, wall_offset_s: float = 1.7e9) -> None:
        self.t_s = t_s
        self.wall_offset_s = wall_offset_s

    def now(self) -> float:
        return self.t_s

    def wall_s(self, t_s: float) -> float:
        return t_s + self.wall_offset_s

    def advance_to(self, t_s: float) -> None:
        if t_s < self.t_s:
            raise ValueError(f"a clock cannot go back ({t_s} < {self.t_s})")
        self.t_s = t_s

    def wait_until(self, t_s: float, wake: threading.Event) -> bool:
        # The offline clock jumps straight to the next event.
        if wake.is_set():
            return True
        self.advance_to(max(t_s, self.t_s))
        return False
