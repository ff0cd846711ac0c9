"""Step strings: a drum pattern a live coder can type, one string per voice.

    kick   "x...x...x...x..."
    snare  "....X.......X..o"
    closed_hihat "x.x.x.x.x.x.x.x."

One character per 16th step: `.` (or `-`, `_`) rest, `x` a hit, `X` an accent, `o` a ghost
note. Spaces and `|` are ignored, so "x... x... | x... x..." reads as bars and beats. A string
shorter than the phrase repeats to fill it, so one bar of 16 steps is enough for a 4-bar model;
its length must divide the phrase's steps. The result is quantized (offsets 0): what a drum
machine would play, and what the humanize model turns into a drummer's performance.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from .pattern import Patterns
from .spec import ModelSpec

# Velocities (0-1) of each step character; "x" is the flat velocity quantized inputs get.
STEP_VELOCITIES = {"x": 0.6, "X": 0.9, "o": 0.3}
RESTS = frozenset(".-_")
IGNORED = frozenset(" |")
MAX_CHARS = 1024  # longer than any phrase we play; stops a huge string before any work


class StepPatternError(ValueError):
    """A step pattern we cannot read; the message names the voice and the problem."""


def parse_steps(text: str, steps: int, voice: str = "") -> np.ndarray:
    """One voice's step string -> (steps,) velocities, 0 where it rests."""
    where = f"{voice}: " if voice else ""
    if not isinstance(text, str):
        raise StepPatternError(f"{where}a step string must be a string")
    if len(text) > MAX_CHARS:
        raise StepPatternError(f"{where}step string longer than {MAX_CHARS} characters")
    cells = [c for c in text if c not in IGNORED]
    if not cells:
        raise StepPatternError(f"{where}empty step string (use '.' for rests)")
    for i, c in enumerate(cells):
        if c not in RESTS and c not in STEP_VELOCITIES:
            raise StepPatternError(f"{where}step {i + 1} is {c!r}; use . x X o (rest, hit, "
                                   f"accent, ghost)")
    if len(cells) > steps or steps % len(cells):
        raise StepPatternError(f"{where}{len(cells)} steps do not divide the phrase's {steps} "
                               f"(use 16 for a bar, or {steps})")
    one = np.array([STEP_VELOCITIES.get(c, 0.0) for c in cells], np.float32)
    return np.tile(one, steps // len(cells))


def parse_step_pattern(pairs: Sequence[tuple[str, str]], spec: ModelSpec) -> Patterns:
    """[(voice, step string), ...] -> one quantized pattern of the spec's length. Voices are the
    spec's drum names; naming one twice is an error, voices not named rest."""
    if not pairs:
        raise StepPatternError("no voices given (e.g. kick \"x...x...\" snare \"....x...\")")
    velocities = np.zeros((spec.steps, spec.n_drums), np.float32)
    seen: set[str] = set()
    for voice, text in pairs:
        if voice not in spec.drum_names:
            raise StepPatternError(f"unknown voice {voice!r}; voices: {', '.join(spec.drum_names)}")
        if voice in seen:
            raise StepPatternError(f"voice {voice!r} given twice")
        seen.add(voice)
        velocities[:, spec.drum_names.index(voice)] = parse_steps(text, spec.steps, voice)
    hits = (velocities > 0).astype(np.float32)
    return Patterns(hits, velocities, np.zeros_like(velocities))


def pairs_from_args(args: Iterable) -> list[tuple[str, str]]:
    """OSC arguments `voice steps voice steps ...` -> pairs (an odd count is an error)."""
    args = list(args)
    if len(args) % 2:
        raise StepPatternError("expected pairs of <voice s> <steps s>, got an odd number of "
                               "arguments")
    pairs = []
    for voice, text in zip(args[::2], args[1::2]):
        if not isinstance(voice, str) or not isinstance(text, str):
            raise StepPatternError("voices and step strings must be strings")
        pairs.append((voice, text))
    return pairs


def format_steps(pattern: Patterns, spec: ModelSpec, index: int = 0) -> list[tuple[str, str]]:
    """The inverse view: (voice, step string) for every voice that plays, bars split by '|'.
    Velocities map back to the nearest of x, X, o."""
    p = pattern.cleaned()
    marks = sorted(STEP_VELOCITIES.items(), key=lambda kv: kv[1])
    levels = np.array([v for _, v in marks], np.float32)
    out = []
    for d, voice in enumerate(spec.drum_names):
        column_hits = p.hits[index, :, d]
        if not column_hits.any():
            continue
        chars = []
        for step in range(p.steps):
            if step and step % spec.steps_per_bar == 0:
                chars.append("|")
            if column_hits[step]:
                chars.append(marks[int(np.abs(levels - p.velocities[index, step, d]).argmin())][0])
            else:
                chars.append(".")
        out.append((voice, "".join(chars)))
    return out
