"""Drum patterns as arrays: hits, velocities (0-1) and micro-timing offsets (step fractions).

The flat model representation is one vector of 3 * n_drums values per step:
hits, then velocities, then offsets (Magenta's GrooveConverter order).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .spec import ModelSpec

OFFSET_LIMIT = 0.5  # offsets live in [-0.5, 0.5) of a step
# The largest offset a model writes: its own step's half, never the next step's downbeat.
OFFSET_MAX = OFFSET_LIMIT - 1e-6


@dataclass
class Patterns:
    """A batch of patterns; every array is (B, T, C) float32."""

    hits: np.ndarray  # (B, T, C) in {0, 1}
    velocities: np.ndarray  # (B, T, C) in [0, 1], 0 where no hit
    offsets: np.ndarray  # (B, T, C) in [-0.5, 0.5), 0 where no hit; + = late

    def __post_init__(self) -> None:
        self.hits = np.asarray(self.hits, dtype=np.float32)
        self.velocities = np.asarray(self.velocities, dtype=np.float32)
        self.offsets = np.asarray(self.offsets, dtype=np.float32)
        if self.hits.ndim == 2:  # a single pattern
            self.hits, self.velocities, self.offsets = (
                self.hits[None], self.velocities[None], self.offsets[None])
        if not (self.hits.shape == self.velocities.shape == self.offsets.shape) or self.hits.ndim != 3:
            raise ValueError(
                f"hits/velocities/offsets must share a (B, T, C) shape, got "
                f"{self.hits.shape}, {self.velocities.shape}, {self.offsets.shape}")

    def __len__(self) -> int:
        return self.hits.shape[0]

    def __getitem__(self, index) -> "Patterns":
        """patterns[i] is a batch of one (negative i counts from the end), patterns[a:b] a
        sub-batch; an int out of range raises IndexError, which also ends iteration."""
        if isinstance(index, (int, np.integer)):
            i = int(index) + (len(self) if index < 0 else 0)
            if not 0 <= i < len(self):
                raise IndexError(f"pattern {int(index)} of a batch of {len(self)}")
            index = slice(i, i + 1)
        return Patterns(self.hits[index], self.velocities[index], self.offsets[index])

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    @property
    def steps(self) -> int:
        return self.hits.shape[1]

    @property
    def n_drums(self) -> int:
        return self.hits.shape[2]

    def cleaned(self) -> "Patterns":
        """Binarised hits, zero velocity/offset where nothing is played, values clipped."""
        hits = (self.hits > 0.5).astype(np.float32)
        vel = np.clip(self.velocities, 0.0, 1.0) * hits
        off = np.clip(self.offsets, -OFFSET_LIMIT, OFFSET_LIMIT - 1e-6) * hits
        return Patterns(hits, vel, off)

    def to_flat(self) -> np.ndarray:
        """(B, T, 3C) model representation."""
        return np.concatenate([self.hits, self.velocities, self.offsets], axis=-1)

    @classmethod
    def from_flat(cls, flat: np.ndarray) -> "Patterns":
        flat = np.asarray(flat, dtype=np.float32)
        if flat.ndim == 2:
            flat = flat[None]
        c = flat.shape[-1] // 3
        if flat.shape[-1] != 3 * c:
            raise ValueError(f"flat patterns need 3 * n_drums values per step, got {flat.shape[-1]}")
        return cls(flat[..., :c], flat[..., c:2 * c], flat[..., 2 * c:])

    @classmethod
    def concat(cls, items: list["Patterns"]) -> "Patterns":
        return cls(np.concatenate([p.hits for p in items]),
                   np.concatenate([p.velocities for p in items]),
                   np.concatenate([p.offsets for p in items]))

    @classmethod
    def empty(cls, batch: int, spec: ModelSpec) -> "Patterns":
        z = np.zeros((batch, spec.steps, spec.n_drums), np.float32)
        return cls(z, z.copy(), z.copy())

    def check_spec(self, spec: ModelSpec) -> None:
        if self.n_drums != spec.n_drums:
            raise ValueError(f"patterns have {self.n_drums} drum classes, the model {spec.n_drums}")
        if self.steps != spec.steps:
            raise ValueError(f"patterns have {self.steps} steps, the model {spec.steps}")
