"""A deterministic stand-in for the ONNX engine: patterns are a fixed function of the latent."""
from __future__ import annotations

import threading
import time

import numpy as np

from groove_live.pattern import Patterns
from groove_live.spec import ModelSpec


class FakeEngine:
    """Random projections of z: nearby latents give similar grooves, so walks and morphs can
    be checked against `decode` of the latents they should have used. Ignores the noise seed.
    Records which thread each decode ran on (inference must stay off the OSC/clock threads)."""

    def __init__(self, spec: ModelSpec | None = None, delay_s: float = 0.0) -> None:
        self.spec = spec or ModelSpec(z_size=32)
        rng = np.random.default_rng(1234)
        cells = self.spec.steps * self.spec.n_drums
        self._w = rng.standard_normal((3, self.spec.z_size, cells)).astype(np.float32)
        self.delay_s = delay_s
        self.calls: list[tuple[str, int, float]] = []  # (thread name, batch, temperature)
        self._lock = threading.Lock()

    def decode(self, z: np.ndarray, temperature: float = 1.0, seed: int | None = None) -> Patterns:
        z = np.asarray(z, np.float32)
        assert z.ndim == 2 and z.shape[1] == self.spec.z_size, z.shape
        with self._lock:
            self.calls.append((threading.current_thread().name, z.shape[0], temperature))
        if self.delay_s:
            time.sleep(self.delay_s)  # stands in for inference time, not for synchronisation
        shape = (z.shape[0], self.spec.steps, self.spec.n_drums)
        norm = np.sqrt(self.spec.z_size)
        h, v, o = (np.einsum("bz,zc->bc", z, w) / norm for w in self._w)
        hits = (h > 1.0 / max(temperature, 1e-3) ** 0.5).astype(np.float32).reshape(shape)
        velocities = (1.0 / (1.0 + np.exp(-v))).reshape(shape) * hits
        offsets = (0.45 * np.tanh(o)).reshape(shape) * hits
        return Patterns(hits, velocities, offsets)

    def sample(self, n: int, temperature: float = 1.0, seed: int | None = None) -> Patterns:
        rng = np.random.default_rng(seed)
        return self.decode(rng.standard_normal((n, self.spec.z_size)).astype(np.float32), temperature)
