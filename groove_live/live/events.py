"""What flows through the live server: decoded bar content, and the timed events sinks receive."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, slots=True)
class Hit:
    """One decoded drum hit inside a bar, as the model played it."""

    step: int  # grid step inside the bar
    drum: int  # channel index into spec.drums
    velocity: float  # 0..1
    offset: float  # fraction of a step, + = late


@dataclass(frozen=True, slots=True)
class Note:
    """One pitched note of the harmonizer's loop inside a bar (live/harmony.py): it starts on a
    grid step and is held `steps` 16ths, which may run past the bar line into the next bar."""

    step: int  # grid step inside the bar where it starts
    voice: str  # "soprano" (the user's melody), then the harmonizer's voices
    voice_index: int  # 0 for the melody, 1.. for the written voices in the model's order
    channel: int  # 0-based MIDI channel
    pitch: int
    velocity: float  # 0..1
    steps: int  # how many 16ths it is held


@dataclass(frozen=True, eq=False)
class BarContent:
    """One bar ready to play: its hits, and where they came from (for /groove/info and tests)."""

    hits: tuple[Hit, ...]
    z: np.ndarray | None  # (z_size,) latent the bar was decoded from; None for silence
    phrase_bar: int  # which bar of the decoded phrase this is
    source: str  # "sample", "walk", "interpolate", "silence", "repeat"
    ready_t_s: float = float("nan")  # when the worker published it (clock time base)
    requested: bool = False  # decoded because a request had to land on this very bar
    notes: tuple[Note, ...] = ()  # the harmonizer's notes starting in this bar (none: off)


# Events carry their intended time `t_s` (clock time base). Sinks may stash an encoded form
# in `payload` during prepare(), so the send at `t_s` does no encoding work.
@dataclass(slots=True)
class HitEvent:
    t_s: float
    bar: int
    step: int
    voice: str
    pitch: int
    velocity: float  # 0..1, velocity amount applied
    payload: dict = field(default_factory=dict)


@dataclass(slots=True)
class NoteEvent:
    """A pitched note (the harmonizer's): sent at its start, with how long it is held."""

    t_s: float
    bar: int
    step: int
    voice: str
    voice_index: int
    channel: int  # 0-based MIDI channel
    pitch: int
    velocity: float  # 0..1
    duration_s: float
    payload: dict = field(default_factory=dict)


@dataclass(slots=True)
class NoteOffEvent:
    t_s: float
    bar: int
    voice: str
    pitch: int
    payload: dict = field(default_factory=dict)
    channel: int | None = None  # None: the drum channel


@dataclass(slots=True)
class BarEvent:
    """Sent a lookahead before the downbeat, for clients that schedule a whole bar themselves."""

    t_s: float  # when to send it: downbeat_t_s - lookahead
    downbeat_t_s: float
    bar: int
    bpm: float
    # (voice, pitch, velocity, step, t_s after the downbeat; negative for early notes)
    hits: tuple[tuple[str, int, float, int, float], ...]
    payload: dict = field(default_factory=dict)


@dataclass(slots=True)
class ClockEvent:
    """MIDI transport: 'tick' (24 per beat), 'start', 'stop'."""

    t_s: float
    bar: int
    kind: str
    payload: dict = field(default_factory=dict)


Event = HitEvent | NoteEvent | NoteOffEvent | BarEvent | ClockEvent
