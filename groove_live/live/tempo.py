"""Tempo and bar-grid arithmetic: pure functions of bpm and absolute times (no clocks here)."""
from __future__ import annotations

import math

from ..limits import MAX_BPM, MIN_BPM

MIDI_CLOCKS_PER_BEAT = 24  # MIDI beat clock: 24 pulses per quarter note


def beat_s(bpm: float) -> float:
    return 60.0 / bpm


def bar_s(bpm: float, beats_per_bar: int) -> float:
    return beats_per_bar * 60.0 / bpm


def step_s(bpm: float, beats_per_bar: int, steps_per_bar: int) -> float:
    return bar_s(bpm, beats_per_bar) / steps_per_bar


def bar_start_s(anchor_t_s: float, anchor_bar: int, bar: int, bar_length_s: float) -> float:
    """Start of `bar` on a grid that has `anchor_bar` starting at `anchor_t_s`.

    Always a product from the anchor, never a running sum, so rounding cannot drift.
    """
    return anchor_t_s + (bar - anchor_bar) * bar_length_s


def hit_t_s(bar_t_s: float, step: int, offset: float, step_length_s: float,
            timing_amount: float = 1.0) -> float:
    """When a hit plays: its grid step plus its micro-timing offset (a fraction of a step).

    A negative offset on step 0 lands just before the bar's downbeat, as the model meant.
    """
    return bar_t_s + (step + offset * timing_amount) * step_length_s


def nearest_boundary(t_s: float, bar_t_s: float, bar_length_s: float) -> int:
    """0 if `t_s` is closer to the start of the bar at `bar_t_s`, 1 if closer to the next one."""
    return 0 if (t_s - bar_t_s) < 0.5 * bar_length_s else 1


def midi_clock_times_s(bar_t_s: float, bar_length_s: float, beats_per_bar: int) -> list[float]:
    """The MIDI clock pulses inside one bar (24 per beat), from its downbeat on."""
    n = MIDI_CLOCKS_PER_BEAT * beats_per_bar
    return [bar_t_s + k * bar_length_s / n for k in range(n)]


def valid_bpm(bpm: float) -> bool:
    return math.isfinite(bpm) and MIN_BPM <= bpm <= MAX_BPM
