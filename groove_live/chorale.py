"""Four-voice chorales as arrays: the one representation training, metrics and the runtime share.

A chorale (or a window of one) is an int array (steps, 4) of MIDI pitches, one column per voice
in VOICES order, REST (-1) where a voice is silent; one row per 16th note. The harmonizer's
networks see pianorolls instead: (steps, PITCHES, voices) float32 with +1 where a voice sounds
that pitch and -1 everywhere else. A roll from a network (tanh output) reads back one pitch per
step and voice, the highest-valued cell, and a rest where no cell is above 0.

The data has no onsets: a held note and a repeated one look the same, 16th by 16th.
"""
from __future__ import annotations

import numpy as np

VOICES = ("soprano", "alto", "tenor", "bass")
MELODY = 0  # the soprano column: the harmonizer's condition
STEPS_PER_BAR = 16
WINDOW_STEPS = 32  # 2 bars of 4/4
PITCHES = 128
REST = -1
ON, OFF = 1.0, -1.0
# Each voice's lowest and highest MIDI pitch in Bach's chorales (the JSB training split). They
# bound transposition and the baselines' voicings, and a melody outside the soprano's range is
# one the model never saw.
VOICE_RANGES = {"soprano": (60, 81), "alto": (52, 74), "tenor": (46, 69), "bass": (36, 66)}


class ChoraleError(ValueError):
    """A melody or voice array we cannot use; the message says what is wrong in one line."""


def check_voices(voices: np.ndarray, n_voices: int | None = len(VOICES)) -> np.ndarray:
    """(..., steps, voices) integer pitches in REST..127 -> the same as int64, or ChoraleError."""
    a = np.asarray(voices)
    if a.dtype.kind not in "iu":
        raise ChoraleError(f"voice pitches must be integers, got {a.dtype}")
    if a.ndim < 2 or (n_voices is not None and a.shape[-1] != n_voices):
        raise ChoraleError(f"expected (steps, {n_voices}) voice pitches, got shape {a.shape}")
    if a.size and (a.min() < REST or a.max() >= PITCHES):
        raise ChoraleError(f"pitches must be MIDI 0..{PITCHES - 1} or {REST} for a rest, "
                           f"got {a.min()}..{a.max()}")
    return a.astype(np.int64)


def voices_to_roll(voices: np.ndarray) -> np.ndarray:
    """(..., steps, voices) pitches -> (..., steps, PITCHES, voices) float32 in {-1, +1}."""
    v = check_voices(voices, n_voices=None)
    roll = np.full(v.shape[:-1] + (PITCHES, v.shape[-1]), OFF, np.float32)
    sounding = v != REST
    idx = np.nonzero(sounding)  # (..., step, voice) of every sounding cell
    roll[idx[:-1] + (v[idx],) + idx[-1:]] = ON
    return roll


def roll_to_voices(roll: np.ndarray) -> np.ndarray:
    """(..., steps, PITCHES, voices) roll -> (..., steps, voices) int64 pitches: the highest cell
    per step and voice, REST where no cell is on (> 0). Ties go to the lowest pitch."""
    r = np.asarray(roll)
    if r.ndim < 3 or r.shape[-2] != PITCHES:
        raise ChoraleError(f"expected a (steps, {PITCHES}, voices) roll, got shape {r.shape}")
    pitch = np.argmax(r, axis=-2)
    on = np.take_along_axis(r, pitch[..., None, :], axis=-2)[..., 0, :] > 0
    return np.where(on, pitch, REST).astype(np.int64)


def melody_roll(melody: np.ndarray) -> np.ndarray:
    """(..., steps) melody pitches -> (..., steps, PITCHES, 1): the generator's condition."""
    return voices_to_roll(np.asarray(melody)[..., None])


def non_monophonic_steps(roll: np.ndarray) -> np.ndarray:
    """Indices of the steps of a (steps, PITCHES) or (steps, PITCHES, 1) melody roll where more
    than one pitch is on: a melody must sound at most one note at a time."""
    r = np.asarray(roll)
    if r.ndim == 3 and r.shape[-1] == 1:
        r = r[..., 0]
    if r.ndim != 2 or r.shape[1] != PITCHES:
        raise ChoraleError(f"expected a (steps, {PITCHES}) melody roll, got shape {r.shape}")
    return np.nonzero((r > 0).sum(axis=1) > 1)[0]


def check_melody(melody, steps: int = WINDOW_STEPS, in_range: bool = True) -> np.ndarray:
    """A melody a user hands the harmonizer -> (steps,) int64 pitches, or ChoraleError.

    Accepts one pitch per 16th (REST for silence) or a (steps, PITCHES) roll, which must be
    monophonic. With in_range, a sounding pitch outside the soprano's range is refused: the model
    has never seen one there and would harmonize it badly.
    """
    a = np.asarray(melody)
    if a.ndim == 2 or (a.ndim == 3 and a.shape[-1] == 1):
        if len(bad := non_monophonic_steps(a)):
            raise ChoraleError(f"the melody sounds more than one pitch at step {int(bad[0])} "
                               f"(a melody is one voice)")
        a = roll_to_voices(a.reshape(a.shape[0], PITCHES, 1))[:, 0]
    if a.ndim != 1:
        raise ChoraleError(f"expected one pitch per step, got shape {a.shape}")
    a = check_voices(a[:, None], n_voices=1)[:, 0]
    if len(a) != steps:
        raise ChoraleError(f"the melody has {len(a)} steps; the harmonizer takes {steps} "
                           f"(16th notes, {steps // STEPS_PER_BAR} bars)")
    if not (a != REST).any():
        raise ChoraleError("the melody is silent: nothing to harmonize")
    if in_range:
        low, high = VOICE_RANGES["soprano"]
        sounding = a[a != REST]
        if sounding.min() < low or sounding.max() > high:
            raise ChoraleError(f"melody pitches {sounding.min()}..{sounding.max()} leave the "
                               f"soprano range {low}..{high} the model learned; transpose it")
    return a
