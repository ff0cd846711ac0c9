"""Taps on the server's bar grid: a tap's time -> (bar, step, offset), and takes of whole bars.

Pure bookkeeping over times the caller gives (no threads, no clock of its own), so the fake
clock tests place every tap exactly. A take starts at the bar of its first tap and spans
`bars` bars; it is complete once the clock, less the tap latency, has passed its last bar line.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ..pattern import OFFSET_MAX, Patterns
from ..spec import ModelSpec
from ..transforms import TAP_VOICE

MAX_TAP_BARS = 2  # a task model's phrase
MAX_TAPS_PER_STEP = 2.0  # on average over a take; more is a flood, not a rhythm
MAX_LATENCY_MS = 1000.0


class TapError(ValueError):
    """A tap or take we refuse; the message is the reason of /groove/error."""


class Grid(Protocol):
    """The server's bar grid (the scheduler): where bars start in clock time."""

    playing: bool

    @property
    def bar_length_s(self) -> float: ...
    def bar_t_s(self, bar: int) -> float: ...
    def current_bar(self, now: float) -> int: ...


@dataclass(frozen=True)
class Tap:
    bar: int
    step: int  # in the bar
    offset: float  # fraction of a step in [-0.5, 0.5), + = late
    velocity: float  # 0..1


@dataclass
class Take:
    start_bar: int
    bars: int
    taps: list[Tap] = field(default_factory=list)
    dropped: int = 0  # taps past the flood limit, counted but not kept

    def end_bar(self) -> int:
        return self.start_bar + self.bars


def place(t_s: float, grid: Grid, steps_per_bar: int) -> tuple[int, int, float]:
    """Clock time -> (bar, step, offset) on the grid: the nearest step, and how far off it."""
    bar = grid.current_bar(t_s)
    step_s = grid.bar_length_s / steps_per_bar
    position = (t_s - grid.bar_t_s(bar)) / step_s
    step = math.floor(position + 0.5)
    offset = position - step
    if step >= steps_per_bar:  # just before the next bar line: that bar's first step, early
        bar, step = bar + 1, step - steps_per_bar
    return bar, int(step), float(min(max(offset, -0.5), OFFSET_MAX))


class TapRecorder:
    def __init__(self, steps_per_bar: int, bars: int = MAX_TAP_BARS, latency_s: float = 0.0):
        self.steps_per_bar = steps_per_bar
        self.bars = bars
        self.latency_s = latency_s
        self.take: Take | None = None

    def max_taps(self, bars: int) -> int:
        return int(MAX_TAPS_PER_STEP * bars * self.steps_per_bar)

    def add(self, received_t_s: float, velocity: float, grid: Grid) -> tuple[Tap, Take | None]:
        """Record a tap heard at received_t_s - latency. Returns the tap and the take it
        completed (a tap past the current take's end ends that take and starts the next)."""
        if not grid.playing:
            raise TapError("not playing: taps are placed on the bar grid (send /groove/start)")
        bar, step, offset = place(received_t_s - self.latency_s, grid, self.steps_per_bar)
        tap = Tap(bar, step, offset, velocity)
        finished = None
        if self.take is not None and bar >= self.take.end_bar():
            finished, self.take = self.take, None
        if self.take is None:
            self.take = Take(bar, self.bars)
        elif bar < self.take.start_bar:  # only when the latency grew mid-take
            raise TapError(f"tap lands in bar {bar}, before this take's first bar "
                           f"{self.take.start_bar}")
        if len(self.take.taps) < self.max_taps(self.take.bars):
            self.take.taps.append(tap)
        else:
            self.take.dropped += 1
        return tap, finished

    def due(self, now_s: float, grid: Grid) -> Take | None:
        """The take, once every tap that can still belong to it has arrived."""
        if self.take is None or not grid.playing:
            return None
        if now_s - self.latency_s < grid.bar_t_s(self.take.end_bar()):
            return None
        take, self.take = self.take, None
        return take

    def end(self) -> Take | None:
        """End the current take now (None: no tap since the last take)."""
        take, self.take = self.take, None
        return take


def check_take(take: Take | None, steps_per_bar: int) -> None:
    """Raise TapError for a take drumify cannot use."""
    if take is None or not take.taps:
        raise TapError("no taps to drumify (send /groove/tap on the beat, then wait for the "
                       "take's last bar to pass)")
    steps = take.bars * steps_per_bar
    n = len(take.taps) + take.dropped
    if n > MAX_TAPS_PER_STEP * steps:
        raise TapError(f"too many taps: {n} in {take.bars} bar(s) of {steps_per_bar} steps "
                       f"(at most {MAX_TAPS_PER_STEP:g} per step on average)")


def take_pattern(take: Take, spec: ModelSpec) -> Patterns:
    """A take as one pattern of the task model's length: every tap on the tap voice at its
    step, keeping its offset and velocity (the loudest tap wins a step); a take shorter than
    the phrase repeats to fill it."""
    steps = take.bars * spec.steps_per_bar
    hits = np.zeros((steps, spec.n_drums), np.float32)
    velocities = np.zeros_like(hits)
    offsets = np.zeros_like(hits)
    voice = spec.drum_names.index(TAP_VOICE)
    for tap in take.taps:
        i = (tap.bar - take.start_bar) * spec.steps_per_bar + tap.step
        if 0 <= i < steps and tap.velocity >= velocities[i, voice]:
            hits[i, voice], velocities[i, voice], offsets[i, voice] = 1.0, tap.velocity, tap.offset
    reps = max(1, spec.steps // steps)
    tile = (lambda a: np.tile(a, (reps, 1))[None, :spec.steps])
    return Patterns(tile(hits), tile(velocities), tile(offsets))
