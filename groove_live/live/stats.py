"""What the server counts for /groove/info: send timing, late and missed bars, decode headroom,
and errors. Every counter here is reported by summary(); a counter nobody can read is not kept.
"""
from __future__ import annotations

import sys
import threading
from typing import Callable, TextIO

import numpy as np

LATE_S = 0.002  # an event sent more than this after its intended time makes its bar late
# An error that keeps happening is printed at most once per this long (with how many were not
# printed), so a broken output cannot flood the terminal, yet the first one shows at once.
REPORT_EVERY_S = 10.0
# Error kinds always present in the summary (0 until one happens), so clients can rely on them.
ERROR_KINDS = ("render", "sink", "clock", "internal")


class ErrorLog:
    """Errors by kind, counted from any thread; each kind printed to stderr rate-limited.

    Kinds: "render" (a bar could not be turned into events: that bar is skipped), "sink" (an
    output raised: that send is skipped), "clock" (anything else on the clock thread),
    "internal" (a bug answering a request). Outputs that were dropped for failing again and
    again are counted apart (`dropped`). Counts kept by other objects (sends an output could not
    make, e.g. to a target nobody listens on) join the summary through watch().
    """

    def __init__(self, out: TextIO | None = None, every_s: float = REPORT_EVERY_S) -> None:
        self._out = out  # None: sys.stderr as it is when printing (pytest swaps it)
        self.every_s = every_s
        self._lock = threading.Lock()
        self._counts: dict[str, int] = dict.fromkeys(ERROR_KINDS, 0)
        self._last_report_s: dict[str, float] = {}
        self._unreported: dict[str, int] = {}
        self._watched: dict[str, Callable[[], int]] = {}
        self.dropped = 0
        self.printed = 0  # lines written, for tests of the rate limit

    def record(self, kind: str, message: str, now_s: float) -> bool:
        """Count one error of `kind`; print `message` (one line) unless this kind was printed
        less than every_s ago, in which case the next line says how many went unprinted.
        True when it printed (a caller may add detail, e.g. a traceback, only then)."""
        with self._lock:
            self._counts[kind] = self._counts.get(kind, 0) + 1
            last_s = self._last_report_s.get(kind)
            if last_s is not None and now_s - last_s < self.every_s:
                self._unreported[kind] = self._unreported.get(kind, 0) + 1
                return False
            self._last_report_s[kind] = now_s
            skipped = self._unreported.pop(kind, 0)
        more = f" (and {skipped} more since the last report)" if skipped else ""
        self._print(f"groove-live: {message}{more}")
        return True

    def record_dropped(self, message: str) -> None:
        """An output given up on: always printed (it happens once per output)."""
        with self._lock:
            self.dropped += 1
        self._print(f"groove-live: {message}")

    def _print(self, line: str) -> None:
        out = self._out or sys.stderr
        try:
            print(line.replace("\n", " "), file=out, flush=True)
            self.printed += 1
        except (OSError, ValueError):  # a closed or broken stderr must not stop the music
            pass

    def watch(self, name: str, count: Callable[[], int]) -> None:
        """Report a count another object keeps (read when the summary is asked for)."""
        self._watched[name] = count

    def count(self, kind: str) -> int:
        with self._lock:
            return self._counts.get(kind, 0)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            out = {f"{kind}_errors": n for kind, n in self._counts.items()}
            out["outputs_dropped"] = self.dropped
        for name, count in list(self._watched.items()):
            try:
                out[name] = int(count())
            except Exception:  # a summary must always answer
                out[name] = -1
        return out


class TimingStats:
    """Timing is written by the clock thread only, errors from any thread; summary() may be
    read from any thread (a snapshot)."""

    def __init__(self, capacity: int = 1 << 16) -> None:
        self._lags_s = np.zeros(capacity, np.float64)
        self._n = 0
        self.max_lag_s = 0.0
        self._late_bars: set[int] = set()
        self.missed_bars = 0
        self.bars = 0
        # Headroom of bars the worker planned by itself (not ones a request forced onto the
        # very next bar): how long before the clock needed it the bar was decoded, in bars.
        self.min_ready_bars = float("inf")
        self.errors = ErrorLog()

    def record_send(self, bar: int, intended_t_s: float, sent_t_s: float) -> None:
        lag_s = sent_t_s - intended_t_s
        self._lags_s[self._n % len(self._lags_s)] = lag_s
        self._n += 1
        if lag_s > self.max_lag_s:
            self.max_lag_s = lag_s
        if lag_s > LATE_S:
            self._late_bars.add(bar)

    def record_commit(self, ready_margin_s: float | None, bar_length_s: float,
                      requested: bool) -> None:
        self.bars += 1
        if ready_margin_s is None:
            self.missed_bars += 1
        elif not requested:
            self.min_ready_bars = min(self.min_ready_bars, ready_margin_s / bar_length_s)

    @property
    def late_bars(self) -> int:
        return len(self._late_bars) + self.missed_bars

    def lags_s(self) -> np.ndarray:
        n = min(self._n, len(self._lags_s))
        return self._lags_s[:n].copy()

    def summary(self) -> dict:
        lags = self.lags_s()
        p50, p99 = (np.percentile(lags, [50, 99]) if len(lags) else (0.0, 0.0))
        return {
            "sends": self._n,
            "send_lag_p50_ms": round(float(p50) * 1000, 4),
            "send_lag_p99_ms": round(float(p99) * 1000, 4),
            "send_lag_max_ms": round(self.max_lag_s * 1000, 4),
            "late_bars": self.late_bars,
            "missed_bars": self.missed_bars,
            "bars_played": self.bars,
            "min_ready_bars": (round(self.min_ready_bars, 3)
                               if np.isfinite(self.min_ready_bars) else -1.0),
            **self.errors.snapshot(),
        }
