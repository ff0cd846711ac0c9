"""Which latent each future bar plays: samples, latent walks and interpolations, bar by bar.

Pure state over bar numbers (no threads, no clock, no decoding), so walks and morphs are
tested exactly; the worker decodes what it plans.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from ..limits import QUANTIZE_MODES
from ..latent import angle_between, slerp
from ..spec import CATEGORICAL_KINDS, ModelSpec
from .steering import Fill, Steer, fill_bar

QUARTER_TURN = math.pi / 2  # a walk step of 1.0; about the angle between two prior samples


def latent_unit_bars(spec: ModelSpec) -> int:
    """How many bars one latent plays before it may move: 1 for a GrooVAE, whose bars are
    decoded from the same latent whatever bar of the phrase they are; the whole phrase for a
    MusicVAE drum model (categorical, hierarchical), whose autoregressive decode makes a
    phrase that only holds together from its first bar on, so its latent moves between phrases
    (walks and morphs step once per phrase)."""
    return spec.bars if spec.kind in CATEGORICAL_KINDS else 1


def whole_units(bars: int, unit_bars: int) -> int:
    """bars rounded up to a whole number of latent units (phrases for a MusicVAE model)."""
    return max(1, math.ceil(bars / unit_bars)) * unit_bars


@dataclass(frozen=True, eq=False)
class Walk:
    step: float  # fraction of a quarter turn the latent moves per move, (0, 1]
    every_bars: int
    anchor_bar: int  # moves happen at anchor_bar + k * every_bars, k >= 1
    target: np.ndarray  # (z_size,) where the walk is heading
    # Seeds its targets (walk_rng): the same walk from the same groove takes the same path.
    # None: the planner's generator (not repeatable).
    seed: int | None = None
    draws: int = 0  # targets drawn so far: the key of the next one, whatever the bar numbers


@dataclass(frozen=True, eq=False)
class Morph:
    z_from: np.ndarray
    z_to: np.ndarray
    start_bar: int
    bars: int  # bar start_bar + bars - 1 plays z_to
    unit_bars: int = 1  # the latent moves every unit_bars bars (a phrase: latent_unit_bars)


@dataclass(frozen=True, eq=False)
class BarState:
    """Everything that decides one bar."""

    z: np.ndarray  # (z_size,) latent this bar is decoded from
    temperature: float
    noise_seed: int  # decoding noise; kept across walk/morph bars so only the latent moves
    phrase_start_bar: int  # bar where the decoded phrase's bar 0 last started
    source: str  # "sample", "walk", "interpolate", or a task name for a fixed phrase
    walk: Walk | None = None
    morph: Morph | None = None
    # A finished phrase to loop instead of decoding z (a task model's result): per-bar hits.
    # z stays the latent that played before it, so a later walk or morph goes on from there.
    fixed: tuple | None = None
    # Attribute steering (live/steering.py): the bar is decoded from z + offset; kept across
    # samples, walks and morphs until the next Steer.
    offset: np.ndarray | None = None

    def replace(self, **changes) -> "BarState":
        return dataclasses.replace(self, **changes)


# Commands, already resolved to concrete latents by the worker (so planning stays pure).
@dataclass(frozen=True, eq=False)
class Sample:
    z: np.ndarray
    noise_seed: int
    temperature: float | None = None


@dataclass(frozen=True)
class StartWalk:
    step: float  # 0 stops the walk
    every_bars: int = 1
    seed: int | None = None  # of the walk's targets (see Walk.seed)


@dataclass(frozen=True, eq=False)
class Interpolate:
    z_to: np.ndarray
    bars: int
    temperature: float | None = None


@dataclass(frozen=True)
class SetTemperature:
    temperature: float


@dataclass(frozen=True)
class Restart:
    """Playback (re)starts: the phrase starts again from its first bar."""


@dataclass(frozen=True)
class SetQuantize:
    quantize: str  # "bar" or "phrase"


@dataclass(frozen=True, eq=False)
class PlayPhrase:
    """Loop a finished phrase (a task model's result) from the next phrase start, whatever the
    quantize mode: it is a phrase, and starting it mid-phrase would shift its bars."""

    bars: tuple  # per bar, a tuple of events.Hit
    source: str  # the task that made it: "humanize", "drumify", "infill"


@dataclass(frozen=True, eq=False)
class SetHarmony:
    """Loop the harmonizer's notes (per bar, a tuple of events.Note) from the next bar, or the
    next phrase start with quantize "phrase"; None stops them there. Played over whatever the
    drums play: the drum plan is not touched."""

    bars: tuple | None


Command = (Sample | StartWalk | Interpolate | SetTemperature | Restart | SetQuantize | PlayPhrase
           | Steer | Fill | SetHarmony)


def fresh_target(z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random direction orthogonal to z, at z's norm.

    Same norm keeps the walk on the prior's typical shell and makes slerp a great circle,
    so a step is an exact angle; orthogonal puts every step size up to a quarter turn in reach.
    """
    z = np.asarray(z, np.float64)
    norm = float(np.linalg.norm(z))
    unit = z / max(norm, 1e-12)
    for _ in range(8):
        r = rng.standard_normal(z.shape)
        r -= (r @ unit) * unit
        r_norm = float(np.linalg.norm(r))
        if r_norm > 1e-6:
            return (r / r_norm * norm).astype(np.float32)
    raise ValueError("cannot find a direction orthogonal to this latent")


def walk_move(z: np.ndarray, target: np.ndarray, step: float,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One walk move of exactly `step` quarter turns toward `target`; a new target when it is
    closer than a step (so every move has the requested size). Returns (z, target)."""
    angle = step * QUARTER_TURN
    remaining = angle_between(z, target)
    if remaining < angle + 1e-6:
        target = fresh_target(z, rng)
        remaining = angle_between(z, target)
    return slerp(z, target, angle / remaining), target


def walk_rng(seed: int | None, k: int, fallback: np.random.Generator) -> np.random.Generator:
    """The generator of a seeded walk's k-th target, so a walk's path depends on its seed and
    the groove it starts from only: not on bar numbers or how often the plan was redone."""
    return fallback if seed is None else np.random.default_rng([seed, k])


def morph_z(morph: Morph, bar: int) -> np.ndarray:
    k = (bar - morph.start_bar) // morph.unit_bars + 1  # 1 .. bars / unit_bars
    return slerp(morph.z_from, morph.z_to, min(1.0, k * morph.unit_bars / morph.bars))


class Planner:
    """The BarState of every planned bar from the oldest still needed one on."""

    def __init__(self, first: BarState, first_bar: int, rng: np.random.Generator,
                 bars_per_phrase: int, quantize: str = "bar", unit_bars: int = 1) -> None:
        self.rng = rng
        self.bars_per_phrase = bars_per_phrase
        # 1, or bars_per_phrase: the latent then moves only where a phrase starts, and every
        # latent change starts a phrase (see latent_unit_bars).
        self.unit_bars = unit_bars
        self.quantize = quantize
        self.states: dict[int, BarState] = {first_bar: first}
        self._commanded: dict[int, BarState] = {}  # bar -> the state a command put there
        self.fills: dict[int, np.ndarray] = {}  # bar -> fill vector (steering.Fill)
        # bar -> the harmony loop (per-bar notes) that starts there, None where it stops;
        # each holds until the next.
        self.harmony: dict[int, tuple | None] = {}

    @property
    def last_bar(self) -> int:
        return max(self.states)

    def state(self, bar: int) -> BarState:
        self.extend_to(bar)
        return self.states[bar]

    def advance(self, prev: BarState, bar: int) -> BarState:
        """The state of `bar` given the state of the bar before it, with no new command."""
        if (bar - prev.phrase_start_bar) % self.unit_bars:
            return prev  # inside a phrase of a model whose latent moves between phrases
        if prev.morph is not None:
            if bar - prev.morph.start_bar < prev.morph.bars:
                return prev.replace(z=morph_z(prev.morph, bar), source="interpolate")
            return prev.replace(z=prev.morph.z_to, morph=None, source="sample")
        walk = prev.walk
        if walk is not None and bar > walk.anchor_bar and (bar - walk.anchor_bar) % walk.every_bars == 0:
            rng = walk_rng(walk.seed, walk.draws, self.rng)
            z, target = walk_move(prev.z, walk.target, walk.step, rng)
            draws = walk.draws + (target is not walk.target)
            return prev.replace(z=z, walk=dataclasses.replace(walk, target=target, draws=draws),
                                source="walk")
        return prev

    def harmony_at(self, bar: int) -> tuple[tuple | None, int]:
        """(the harmony loop playing at `bar` or None, the bar that loop started on)."""
        starts = [b for b in self.harmony if b <= bar]
        if not starts:
            return None, bar
        start = max(starts)
        return self.harmony[start], start

    def harmony_notes(self, bar: int) -> tuple:
        """The harmonizer's notes starting in `bar` (empty when none plays)."""
        loop, start = self.harmony_at(bar)
        return loop[(bar - start) % len(loop)] if loop else ()

    def extend_to(self, bar: int) -> None:
        last = self.last_bar
        while last < bar:
            self.states[last + 1] = self.advance(self.states[last], last + 1)
            last += 1

    def prune_before(self, bar: int) -> None:
        """Forget states older than `bar` (always keeping the newest)."""
        for b in [b for b in self.states if b < bar and b != self.last_bar]:
            del self.states[b]
        self._commanded = {b: st for b, st in self._commanded.items() if b >= bar}
        for b in [b for b in self.fills if b < bar]:
            del self.fills[b]
        playing = max((b for b in self.harmony if b <= bar), default=None)
        for b in [b for b in self.harmony if playing is not None and b < playing]:
            del self.harmony[b]

    def _known(self, bar: int) -> BarState:
        """The state of `bar`, or of the oldest bar still known when `bar` is older."""
        oldest = min(self.states)
        return self.state(bar) if bar >= oldest else self.states[oldest]

    def start_bar(self, first_free_bar: int, phrase: bool = False) -> int:
        """Where a change requested now lands: the next bar, or the next phrase start (always
        the phrase start when `phrase`)."""
        if self.quantize == "bar" and not phrase:
            return first_free_bar
        phrase_start = self._known(first_free_bar - 1).phrase_start_bar
        k = max(0, math.ceil((first_free_bar - phrase_start) / self.bars_per_phrase))
        return phrase_start + k * self.bars_per_phrase

    def apply(self, command: Command, first_free_bar: int) -> int | None:
        """Apply a command to the plan; return the first bar it changes (None: no bar)."""
        if isinstance(command, Fill):  # one bar, at the end of the playing phrase
            bar = fill_bar(self._known(first_free_bar - 1).phrase_start_bar, first_free_bar,
                           self.bars_per_phrase)
            self.fills[bar] = command.offset
            return bar
        if isinstance(command, SetQuantize):
            self.quantize = command.quantize
            return None
        if isinstance(command, SetHarmony):  # over the drums: their plan stays as it is
            start = self.start_bar(first_free_bar)
            for b in [b for b in self.harmony if b >= start]:
                del self.harmony[b]
            self.harmony[start] = command.bars
            return start
        # A restart is never held back to a phrase boundary: playback starts on the next bar.
        # A finished phrase waits for a phrase start, where its bars line up with the groove's;
        # where every change starts a phrase anyway (unit_bars > 1: up to 16 bars to wait), it
        # lands like any other request and starts its own.
        whole_phrase = isinstance(command, PlayPhrase) and self.unit_bars == 1
        start = (first_free_bar if isinstance(command, Restart)
                 else self.start_bar(first_free_bar, phrase=whole_phrase))
        prev = self._known(start - 1)
        # Requests that land on the same bar compose (a temperature, then a sample: the sample
        # plays at that temperature; a sample, then a walk: the walk starts from the sample):
        # `own` is what an earlier command put on this bar, changed here rather than replaced.
        own = self.states.get(start)
        own = own if own is not None and own is self._commanded.get(start) else None
        base = own or prev
        for b in [b for b in self.states if b >= start]:
            del self.states[b]

        # Where the latent moves only between phrases (unit_bars > 1), whatever changes the
        # decode (latent, temperature, steering) starts a new phrase at `start`.
        phrase = {} if self.unit_bars == 1 else {"phrase_start_bar": start}

        def change(**changes) -> BarState:  # a setting from `start` on, the groove as planned
            return own.replace(**changes) if own else self.advance(prev.replace(**changes), start)

        if isinstance(command, Sample):
            temperature = base.temperature if command.temperature is None else command.temperature
            walk = base.walk
            if walk is not None:  # a sample re-seeds the walk: it goes on from the new groove
                walk = dataclasses.replace(walk, anchor_bar=start, draws=walk.draws + 1,
                                           target=fresh_target(
                                               command.z, walk_rng(walk.seed, walk.draws,
                                                                   self.rng)))
            state = BarState(z=np.asarray(command.z, np.float32), temperature=temperature,
                             noise_seed=command.noise_seed, phrase_start_bar=start,
                             source="sample", walk=walk, morph=None, offset=base.offset)
        elif isinstance(command, StartWalk):
            walk = None
            if command.step > 0:
                every_bars = whole_units(command.every_bars, self.unit_bars)
                # Anchored one period back, so the first move lands on `start` itself (after
                # what another command put on `start`: the walk goes on from there).
                walk = Walk(command.step, every_bars,
                            anchor_bar=start - (0 if own else every_bars),
                            target=fresh_target(base.z, walk_rng(command.seed, 0, self.rng)),
                            seed=command.seed, draws=1)
                # A walk takes over from a morph, or from a fixed phrase, where it is. Where
                # the latent moves only between phrases, its first move starts one.
                state = change(walk=walk, morph=None, fixed=None, **phrase)
            else:
                state = change(walk=None)
        elif isinstance(command, Interpolate):
            temperature = base.temperature if command.temperature is None else command.temperature
            morph = Morph(z_from=prev.z, z_to=np.asarray(command.z_to, np.float32),
                          start_bar=start, bars=whole_units(command.bars, self.unit_bars),
                          unit_bars=self.unit_bars)
            state = prev.replace(z=morph_z(morph, start), morph=morph, walk=None, fixed=None,
                                 temperature=temperature, source="interpolate", **phrase)
        elif isinstance(command, Steer):
            state = change(offset=command.offset, **phrase)
        elif isinstance(command, SetTemperature):
            state = change(temperature=command.temperature, **phrase)
        elif isinstance(command, Restart):
            state = change(phrase_start_bar=start)
            loop, _ = self.harmony_at(start)
            if loop is not None:  # the harmonizer's loop starts again with the phrase
                for b in [b for b in self.harmony if b >= start]:
                    del self.harmony[b]
                self.harmony[start] = loop
        elif isinstance(command, PlayPhrase):
            state = base.replace(fixed=tuple(command.bars), source=command.source,
                                 phrase_start_bar=start, walk=None, morph=None)
        else:  # pragma: no cover - every command type is handled above
            raise TypeError(f"unknown command {command!r}")
        self.states[start] = state
        self._commanded = {b: st for b, st in self._commanded.items() if b < start}
        self._commanded[start] = state
        return start
