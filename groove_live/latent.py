"""Latent-space maths shared by the engine and the live server: pure numpy."""
from __future__ import annotations

import numpy as np


def random_latents(n: int, z_size: int, rng: np.random.Generator) -> np.ndarray:
    """(n, z_size) draws from the VAE prior N(0, I)."""
    return rng.standard_normal((n, z_size)).astype(np.float32)


def slerp(a: np.ndarray, b: np.ndarray, t: float | np.ndarray) -> np.ndarray:
    """Spherical interpolation between latents a and b (last axis), t in [0, 1].

    Falls back to linear interpolation when a and b are (anti-)parallel, where the sphere
    gives no unique path.
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    t = np.asarray(t, np.float64)[..., None] if np.ndim(t) else np.float64(t)
    na = np.linalg.norm(a, axis=-1, keepdims=True)
    nb = np.linalg.norm(b, axis=-1, keepdims=True)
    cos = np.sum(a * b, axis=-1, keepdims=True) / np.maximum(na * nb, 1e-12)
    omega = np.arccos(np.clip(cos, -1.0, 1.0))
    so = np.sin(omega)
    safe = np.abs(so) > 1e-6
    so_safe = np.where(safe, so, 1.0)
    wa = np.where(safe, np.sin((1.0 - t) * omega) / so_safe, 1.0 - t)
    wb = np.where(safe, np.sin(t * omega) / so_safe, t)
    return (wa * a + wb * b).astype(np.float32)


def slerp_path(a: np.ndarray, b: np.ndarray, steps: int) -> np.ndarray:
    """(steps, z) latents from a to b inclusive."""
    if steps < 2:
        raise ValueError("an interpolation needs at least 2 steps")
    return np.stack([slerp(a, b, t) for t in np.linspace(0.0, 1.0, steps)])


def angle_between(a: np.ndarray, b: np.ndarray) -> float:
    """Angle in radians between two latents (what a walk step moves)."""
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    cos = a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12)
    return float(np.arccos(np.clip(cos, -1.0, 1.0)))
