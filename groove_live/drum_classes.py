"""One class per step: the MusicVAE drum representation, torch-free.

A step's hits over C voices are one of 2^C classes: bit k of the class is voice k's hit (class 0
is a silent step, class 2^C - 1 every voice at once). The categorical and hierarchical models
predict this class; training, export, evaluation and the runtime convert with these functions
so the bit order is stated once.
"""
from __future__ import annotations

import numpy as np


def class_bits(n_voices: int) -> np.ndarray:
    """(2^C, C) float32: row k is the hits of class k."""
    classes = np.arange(1 << n_voices, dtype=np.int64)
    return ((classes[:, None] >> np.arange(n_voices)) & 1).astype(np.float32)


def hits_to_classes(hits: np.ndarray) -> np.ndarray:
    """(..., C) hits (any value > 0.5 is a hit) -> (...) int64 classes."""
    hits = np.asarray(hits)
    weights = np.int64(1) << np.arange(hits.shape[-1], dtype=np.int64)
    return ((hits > 0.5).astype(np.int64) * weights).sum(axis=-1)


def classes_to_hits(classes: np.ndarray, n_voices: int) -> np.ndarray:
    """(...) int classes -> (..., C) float32 hits."""
    classes = np.asarray(classes, dtype=np.int64)
    if classes.size and (classes.min() < 0 or classes.max() >= 1 << n_voices):
        raise ValueError(f"classes must lie in 0..{(1 << n_voices) - 1}")
    return ((classes[..., None] >> np.arange(n_voices)) & 1).astype(np.float32)
