"""Inverse-sequence transformations of GrooVAE's tasks: quantize, tapify, drop voices.

Each is a pure function of `Patterns` (numpy only, no torch), so training builds its inputs with
exactly the code the runtime uses on a live coder's pattern. The model learns the inverse:
quantized -> played (humanize), taps -> kit (drumify), no hats -> hats (infill).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .pattern import Patterns
from .spec import ModelSpec

# Magenta's GrooveConverter flattens input velocities to this value (its `fixed_velocities`).
FIXED_VELOCITY = 0.6
# Magenta's tap2drum puts every tap on the open hi-hat channel; any fixed channel works as long
# as training and runtime agree, so we keep theirs.
TAP_VOICE = "open_hihat"
# What infill removes from its input and asks the model to add back.
HIHAT_VOICES = ("closed_hihat", "open_hihat")


def quantize(patterns: Patterns, velocity: float | None = FIXED_VELOCITY) -> Patterns:
    """Every hit on its grid step (offsets 0); velocities flattened to `velocity` (None keeps
    them). Hits are untouched: a played pattern's notes stay exactly where the grid has them."""
    p = patterns.cleaned()
    velocities = p.velocities if velocity is None else p.hits * np.float32(velocity)
    return Patterns(p.hits, velocities, np.zeros_like(p.offsets))


def tapify(patterns: Patterns, spec: ModelSpec, velocity: float | None = FIXED_VELOCITY,
           tap_voice: str = TAP_VOICE) -> Patterns:
    """All voices squashed onto one tap voice: a step with any hit becomes one tap, keeping the
    micro-timing of that step's loudest note (the onset a drummer's hand would tap); velocities
    flattened to `velocity` (None keeps the loudest note's)."""
    p = patterns.cleaned()
    tap = _voice_index(spec, tap_voice)
    any_hit = p.hits.max(axis=-1)  # (B, T)
    loudest = np.where(p.hits > 0, p.velocities, -1.0).argmax(axis=-1)  # (B, T)
    take = loudest[..., None]
    tap_velocity = np.take_along_axis(p.velocities, take, axis=-1)[..., 0] * any_hit
    tap_offset = np.take_along_axis(p.offsets, take, axis=-1)[..., 0] * any_hit
    hits = np.zeros_like(p.hits)
    velocities = np.zeros_like(p.velocities)
    offsets = np.zeros_like(p.offsets)
    hits[..., tap] = any_hit
    velocities[..., tap] = tap_velocity if velocity is None else any_hit * np.float32(velocity)
    offsets[..., tap] = tap_offset
    return Patterns(hits, velocities, offsets)


def drop_voices(patterns: Patterns, spec: ModelSpec,
                voices: Sequence[str] = HIHAT_VOICES) -> Patterns:
    """The pattern without the named voices (hits, velocities and offsets all zeroed there)."""
    p = patterns.cleaned()
    keep = np.ones(p.n_drums, np.float32)
    for name in voices:
        keep[_voice_index(spec, name)] = 0.0
    return Patterns(p.hits * keep, p.velocities * keep, p.offsets * keep)


def _voice_index(spec: ModelSpec, name: str) -> int:
    if name not in spec.drum_names:
        raise ValueError(f"unknown voice {name!r}; voices: {', '.join(spec.drum_names)}")
    return spec.drum_names.index(name)


def task_input(task: str, patterns: Patterns, spec: ModelSpec) -> Patterns:
    """What a task model is given: the transformation whose inverse it learned. Training makes
    its controls with this function and the runtime turns a user's pattern into the model's
    control with it, so the two cannot drift apart."""
    if task == "humanize":
        return quantize(patterns)
    if task == "drumify":
        return tapify(patterns, spec)
    if task == "infill":
        return drop_voices(patterns, spec, HIHAT_VOICES)
    raise ValueError(f"unknown task {task!r}; tasks: humanize, drumify, infill")


def generated_voices(task: str, spec: ModelSpec) -> np.ndarray:
    """(voices,) 1 where the task model writes the voice, 0 where the output keeps the input's:
    infill writes only the hi-hats; humanize and drumify write every voice (humanize keeps the
    input's hits but writes their velocity and timing)."""
    if task == "infill":
        mask = np.zeros(spec.n_drums, np.float32)
        for name in HIHAT_VOICES:
            mask[_voice_index(spec, name)] = 1.0
        return mask
    return np.ones(spec.n_drums, np.float32)
