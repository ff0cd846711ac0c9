"""Timing statistics the clock thread keeps: send lag, late and missed bars, decode headroom."""
from __future__ import annotations

import numpy as np

LATE_S = 0.002  # an event sent more than this after its intended time makes its bar late


class TimingStats:
    """Written by the clock thread only; summary() may be read from any thread (a snapshot)."""

    def __init__(self, capacity: int = 1 << 16) -> None:
        self._lags_s = np.zeros(capacity, np.float64)
        self._n = 0
        self.max_lag_s = 0.0
        self.late_events = 0
        self._late_bars: set[int] = set()
        self.missed_bars = 0
        self.bars = 0
        # Headroom of bars the worker planned by itself (not ones a request forced onto the
        # very next bar): how long before the clock needed it the bar was decoded, in bars.
        self.min_ready_bars = float("inf")
        self.min_requested_ready_s = float("inf")

    def record_send(self, bar: int, intended_t_s: float, sent_t_s: float) -> None:
        lag_s = sent_t_s - intended_t_s
        self._lags_s[self._n % len(self._lags_s)] = lag_s
        self._n += 1
        if lag_s > self.max_lag_s:
            self.max_lag_s = lag_s
        if lag_s > LATE_S:
            self.late_events += 1
            self._late_bars.add(bar)

    def record_commit(self, ready_margin_s: float | None, bar_length_s: float,
                      requested: bool) -> None:
        self.bars += 1
        if ready_margin_s is None:
            self.missed_bars += 1
        elif requested:
            self.min_requested_ready_s = min(self.min_requested_ready_s, ready_margin_s)
        else:
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
        }
