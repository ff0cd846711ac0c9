"""The harmonizer in the live server: /groove/accompany takes a melody, the worker writes alto,
tenor and bass under it, and the four voices loop over the drums as pitched notes.

The OSC thread parses and checks the melody here and hands the inference to the decode worker
(a CallRequest), so the model never runs on the clock or OSC thread. The worker turns the
result into per-bar notes (events.Note) and plans them with planner.SetHarmony: they start on
the next bar (the next phrase start with /groove/quantize phrase), in the bars the clock has
not taken yet, so a request is never heard late or mid-loop. The melody plays too (voice
"soprano", MIDI channel 1), so a client can simply play every /groove/note it gets.
"""
from __future__ import annotations

import re
import sys
import threading
from typing import Any, Callable

import numpy as np

from ..chorale import REST, VOICE_RANGES
from ..limits import SEED_LIMIT
from .events import Note
from .osc_wire import encode_message
from .planner import SetHarmony
from .worker import CallRequest

MELODY_VOICE = "soprano"
MELODY_CHANNEL = 0  # MIDI channel 1; the model's voices carry their own (2, 3, 4)
NOTE_VELOCITY = 0.8  # the harmonizer writes no dynamics
REST_TOKENS = frozenset({"_", ".", "0", "r", "rest"})
HOLD_TOKEN = "-"  # in the string form: the previous step's pitch again
# A step holding several pitches in the string form: "60+64", "60/64", "[60,64]", "60,64".
CHORD_TOKEN = re.compile(r"\[?\d+(?:\s*[+/,&]\s*\d+)+\]?")
MAX_MELODY_CHARS = 400


class HarmonyError(ValueError):
    """A melody or request we refuse: one line, the <reason> of /groove/error."""


def usage(steps: int, steps_per_bar: int) -> str:
    return (f"{steps} MIDI notes, one per 16th (0 = rest), {steps_per_bar} for one bar played "
            f"twice, or one string like \"60 62 64 - _ 65\" (_ rest, - hold)")


def _tokens(text: str) -> list[str]:
    if len(text) > MAX_MELODY_CHARS:
        raise HarmonyError(f"the melody string is over {MAX_MELODY_CHARS} characters")
    # Bracketed chords first, so "[60, 64]" is one step (and refused as a chord).
    return re.findall(r"\[[^\]]*\]|\S+", text)


def _from_string(text: str) -> list[int]:
    pitches: list[int] = []
    for i, token in enumerate(_tokens(text.strip())):
        t = token.lower()
        if t in REST_TOKENS:
            pitches.append(0)
        elif t == HOLD_TOKEN:
            if not pitches:
                raise HarmonyError("the melody cannot start with '-' (hold): nothing to hold")
            pitches.append(pitches[-1])
        elif CHORD_TOKEN.fullmatch(t) or (t.startswith("[") and t.endswith("]")):
            raise HarmonyError(f"step {i + 1} has more than one note ({token[:20]}): a melody "
                               f"is one voice")
        elif t.lstrip("-").isdigit() and t.isascii():
            pitches.append(int(t))
        else:
            raise HarmonyError(f"step {i + 1}: {token[:20]!r} is not a MIDI note number, "
                               f"_ (rest) or - (hold)")
    return pitches


def _from_numbers(args: list) -> list[int]:
    pitches = []
    for i, value in enumerate(args):
        # bool is an int in Python, but an OSC T/F is not a note a user meant.
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            kind = "a string" if isinstance(value, str) else type(value).__name__
            raise HarmonyError(f"note {i + 1} is {kind}: send MIDI note numbers (ints), or the "
                               f"whole melody as one string")
        if not np.isfinite(value) or value != int(value):
            raise HarmonyError(f"note {i + 1} is {value:g}: MIDI notes are whole numbers")
        pitches.append(int(value))
    return pitches


def parse_melody(args: list, steps: int, steps_per_bar: int) -> np.ndarray:
    """OSC arguments -> (steps,) int64 MIDI pitches, REST (-1) for silence; HarmonyError."""
    if not args:
        raise HarmonyError(f"needs a melody: {usage(steps, steps_per_bar)}")
    if len(args) == 1 and isinstance(args[0], str):
        pitches = _from_string(args[0])
    else:
        pitches = _from_numbers(args)
    n = len(pitches)
    if n not in (steps, steps_per_bar):
        raise HarmonyError(f"got {n} notes; give {usage(steps, steps_per_bar)}")
    for i, p in enumerate(pitches):
        if not 0 <= p <= 127:
            raise HarmonyError(f"note {i + 1} is {p}: MIDI notes are 1..127, 0 is a rest")
    melody = np.array(pitches * (steps // n), np.int64)
    melody[melody == 0] = REST
    sounding = melody[melody != REST]
    if not len(sounding):
        raise HarmonyError("the melody is silent: nothing to harmonize")
    low, high = VOICE_RANGES[MELODY_VOICE]
    if sounding.max() - sounding.min() > high - low:
        raise HarmonyError(f"the melody spans {sounding.min()}..{sounding.max()}, wider than the "
                           f"soprano range the model learned ({low}..{high}, "
                           f"{high - low} semitones)")
    return melody


def voice_notes(voices: np.ndarray, names: tuple[str, ...], channels: tuple[int, ...],
                steps_per_bar: int,
                velocity: float = NOTE_VELOCITY) -> tuple[tuple[Note, ...], ...]:
    """(steps, voices) pitches (REST for silence) -> per bar, its notes in time order.

    The harmonizer's data has no onsets, so a pitch held over several steps is one note of
    that length (a note may run past the bar line); a note still sounding at the end of the
    loop ends there. Anything outside MIDI 0..127 is a rest."""
    voices = np.asarray(voices)
    n_steps, n_voices = voices.shape
    bars: list[list[Note]] = [[] for _ in range(-(-n_steps // steps_per_bar))]
    for v in range(n_voices):
        column = voices[:, v]
        start = 0
        while start < n_steps:
            end = start + 1
            while end < n_steps and column[end] == column[start]:
                end += 1
            pitch = int(column[start])
            if 0 <= pitch <= 127:  # REST, or a pitch no MIDI note has (a broken model): silence
                bar, step = divmod(start, steps_per_bar)
                bars[bar].append(Note(step, names[v], v, channels[v], pitch, velocity,
                                      end - start))
            start = end
    return tuple(tuple(sorted(b, key=lambda n: (n.step, n.voice_index))) for b in bars)


def _contract_harmonize(engine, melody: np.ndarray, seed: int | None) -> np.ndarray:
    from ..accompany import harmonize  # the offline helper: fits the melody to the model's range

    return harmonize(engine, melody, seed)


class LiveHarmony:
    """/groove/accompany and /groove/accompany/stop as the live server offers them."""

    def __init__(self, engine: Any, worker, seed: int | None = None,
                 harmonize: Callable[[Any, np.ndarray, int | None], np.ndarray] | None = None,
                 send: Callable[[bytes, Any], None] | None = None) -> None:
        self.engine = engine  # a pitched Engine, or None: no --harmonizer
        self.worker = worker
        self.harmonize = harmonize or _contract_harmonize
        self.send = send  # (reply bytes, sender) for an error found on the worker
        self.rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self.harmonies = 0  # accompaniments written
        self.errors = 0  # written by the worker's model run failing
        if engine is not None:
            spec = engine.spec
            self.steps = int(spec.steps)
            self.steps_per_bar = int(spec.steps_per_bar)
            self.names = (MELODY_VOICE,) + tuple(v.name for v in spec.voices)
            self.channels = (MELODY_CHANNEL,) + tuple(int(v.midi_channel) for v in spec.voices)

    def _engine(self):
        if self.engine is None:
            raise HarmonyError("no harmonizer: start serve with --harmonizer NAME|PATH")
        return self.engine

    def parse(self, args: list) -> np.ndarray:
        self._engine()
        return parse_melody(args, self.steps, self.steps_per_bar)

    def request(self, melody: np.ndarray, sender=None) -> None:
        """Hand the melody to the worker: it runs the model and the result loops from the next
        bar (or phrase) boundary."""
        engine = self._engine()
        with self._lock:
            seed = int(self.rng.integers(SEED_LIMIT))

        def make() -> SetHarmony:
            out = np.asarray(self.harmonize(engine, melody, seed))
            if out.shape != (self.steps, len(self.names)):
                raise HarmonyError(f"the harmonizer returned shape {out.shape}, not "
                                   f"({self.steps}, {len(self.names)})")
            voices = out.astype(np.int64)
            voices[:, 0] = melody  # the melody as the user wrote it
            self.harmonies += 1
            return SetHarmony(voice_notes(voices, self.names, self.channels,
                                          self.steps_per_bar))

        def failed(reason: str) -> None:
            self.errors += 1
            self._later_error(reason, sender)

        self.worker.submit(CallRequest(make, "accompany", failed))

    def stop(self) -> None:
        self._engine()
        self.worker.submit(SetHarmony(None))

    def _later_error(self, reason: str, sender) -> None:
        reason = reason.replace("\n", " ")[:300]
        if sender is None or self.send is None:
            print(f"groove-live: /groove/accompany: {reason}", file=sys.stderr)
            return
        self.send(encode_message("/groove/error", ["/groove/accompany", reason]), sender)

    def info(self) -> list[tuple[str, Any]]:
        status = self.worker.status
        return [("harmonizer", self.engine.spec.model_name if self.engine is not None else ""),
                ("harmony", status.get("harmony", 0)),
                ("harmony_pending", status.get("harmony_pending", 0)),
                ("harmony_since_bar", status.get("harmony_since_bar", -1)),
                ("harmonies", self.harmonies), ("harmony_errors", self.errors)]
