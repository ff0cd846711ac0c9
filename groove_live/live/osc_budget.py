"""How much CPU the OSC thread may spend on requests: a token bucket of CPU seconds.

The OSC thread and the clock thread share one Python interpreter lock. Every datagram the OSC
thread parses and answers holds that lock for tens of microseconds, so a flood (thousands of
datagrams a second, loopback included, where no per-sender limit applies) makes the clock
thread wait for the lock at the moment a hit is due. The budget bounds the OSC thread to a
share of one core: its CPU time per datagram (receive, parse, answer, send) is spent from a
bucket refilled at `share` CPU seconds per second of wall time; when the bucket is empty the
thread stops reading until it has refilled. Datagrams that arrive meanwhile wait in the
kernel's socket buffer, and once it is full the kernel drops them, at no cost to this process.
Normal use (a live coder's few messages a second, or a thousand small requests a second) never
empties it.

Pure: wall time and CPU time are passed in, so tests are exact.
"""
from __future__ import annotations

# At most this share of one core for requests, averaged: a flood leaves the rest to the clock.
OSC_CPU_SHARE = 0.2
# What a burst may spend before the share applies: 20 ms, ~500 small requests at once.
OSC_CPU_BURST_S = 0.02
# A pause is at least this long: waking for one datagram's worth at a time would cost more
# context switches than it saves.
MIN_PAUSE_S = 0.002


class OscBudget:
    def __init__(self, now_s: float, share: float = OSC_CPU_SHARE,
                 burst_s: float = OSC_CPU_BURST_S) -> None:
        if not 0.0 < share <= 1.0 or burst_s <= 0.0:
            raise ValueError(f"share must be in (0, 1] and burst positive, got {share}, "
                             f"{burst_s}")
        self.share = share
        self.burst_s = burst_s
        self.tokens_s = burst_s
        self.t_s = now_s
        self.pauses = 0  # times the thread stopped reading
        self.paused_s = 0.0  # wall time it stopped for, in all

    def _refill(self, now_s: float) -> None:
        if now_s > self.t_s:
            self.tokens_s = min(self.burst_s, self.tokens_s + (now_s - self.t_s) * self.share)
            self.t_s = now_s

    def spend(self, cpu_s: float, now_s: float) -> None:
        """Charge the CPU time one datagram took (may run the bucket into debt)."""
        self._refill(now_s)
        self.tokens_s -= max(cpu_s, 0.0)

    def pause_s(self, now_s: float) -> float:
        """0 while there is budget left; else how long to stop reading (counted as a pause):
        until the bucket is back to a quarter full, and at least MIN_PAUSE_S."""
        self._refill(now_s)
        if self.tokens_s > 0.0:
            return 0.0
        wait_s = max((0.25 * self.burst_s - self.tokens_s) / self.share, MIN_PAUSE_S)
        self.pauses += 1
        self.paused_s += wait_s
        return wait_s
