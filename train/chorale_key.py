"""The key of a melody: Krumhansl-Schmuckler key finding, and the scale and triads of a key.

A key is an int 0..23: tonic pitch class (0 = C) for major keys, 12 + tonic for minor ones. The
melody's 12-bin pitch-class histogram counts 16th steps, so it is weighted by duration; it is
correlated (Pearson) with the Krumhansl-Kessler probe-tone profile rotated to each of the 24
tonics, and the best correlation wins. A melody that never sounds gets C major.
"""
from __future__ import annotations

import numpy as np

from groove_live.chorale import REST

# Krumhansl & Kessler (1982) probe-tone ratings, tonic first.
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
# Natural minor plus the raised seventh: Bach's minor-key cadences use the leading tone as
# much as the flat seventh, and the dominant triad needs it.
MINOR_SCALE = (0, 2, 3, 5, 7, 8, 10, 11)
NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


def _profiles() -> np.ndarray:
    """(24, 12): row k is key k's profile over absolute pitch classes."""
    return np.stack([np.roll(MAJOR_PROFILE, t) for t in range(12)]
                    + [np.roll(MINOR_PROFILE, t) for t in range(12)])


PROFILES = _profiles()


def pitch_class_histogram(pitches: np.ndarray) -> np.ndarray:
    """(..., steps) pitches (REST = silent) -> (..., 12) counts of sounding steps per class."""
    p = np.asarray(pitches)
    onehot = (p[..., None] % 12 == np.arange(12)) & (p[..., None] != REST)
    return onehot.sum(axis=-2).astype(np.float64)


def key_correlations(histogram: np.ndarray) -> np.ndarray:
    """(..., 12) pitch-class histogram -> (..., 24) Pearson correlation with each key's profile;
    0 for a flat (or empty) histogram, which correlates with nothing."""
    h = np.asarray(histogram, np.float64)
    hc = h - h.mean(axis=-1, keepdims=True)
    pc = PROFILES - PROFILES.mean(axis=-1, keepdims=True)
    num = hc @ pc.T
    den = np.linalg.norm(hc, axis=-1, keepdims=True) * np.linalg.norm(pc, axis=-1)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def find_key(melody: np.ndarray) -> np.ndarray | int:
    """(..., steps) melody pitches -> key per melody (0..11 major on that tonic, 12..23 minor).
    Ties, and a silent melody, go to the lowest key number (C major first)."""
    keys = np.argmax(key_correlations(pitch_class_histogram(melody)), axis=-1)
    return int(keys) if np.ndim(keys) == 0 else keys


def key_name(key: int) -> str:
    return f"{NAMES[key % 12]} {'minor' if key >= 12 else 'major'}"


def scale_mask(key) -> np.ndarray:
    """(..., ) keys -> (..., 12) bool: which pitch classes belong to each key's scale."""
    k = np.asarray(key)
    tonic, minor = k % 12, k >= 12
    major_row = np.isin(np.arange(12), MAJOR_SCALE)
    minor_row = np.isin(np.arange(12), MINOR_SCALE)
    rel = (np.arange(12) - tonic[..., None]) % 12
    return np.where(minor[..., None], minor_row[rel], major_row[rel])


def diatonic_triads(key: int) -> list[tuple[int, int, int]]:
    """The key's triads as (root, third, fifth) pitch classes, tonic first, then the dominant
    and subdominant (the chords a chorale leans on), then the rest of the degrees. Minor keys
    take the dominant and leading-tone chords with the raised seventh, the mediant natural."""
    t = key % 12
    if key < 12:
        degrees = [(0, 4, 7), (7, 11, 2), (5, 9, 0), (9, 0, 4), (2, 5, 9), (4, 7, 11), (11, 2, 5)]
    else:
        degrees = [(0, 3, 7), (7, 11, 2), (5, 8, 0), (8, 0, 3), (3, 7, 10), (2, 5, 8), (11, 2, 5)]
    return [tuple((t + d) % 12 for d in chord) for chord in degrees]
