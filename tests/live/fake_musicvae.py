"""Stand-ins for a MusicVAE drum model (categorical 2 bars, hierarchical 16 bars) and a
humanize model, with known answers, for the live tests of these kinds.

FakeMusicVAE keeps the engine's contract for these kinds: `decode` returns a quantized pattern
(every hit at transforms.FIXED_VELOCITY, offsets 0) that is a fixed function of the latent, so
a test can tell which latent a bar was decoded from. FakeHumanizer keeps `Engine.transform`'s
contract for a humanize model: the input's hits, velocity 0.9 and offset +0.1 on every hit.
Both record the threads they ran on and their calls.
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from groove_live.pattern import Patterns
from groove_live.spec import TASK_CONTROL, Control, ModelSpec
from groove_live.transforms import FIXED_VELOCITY

HUMANIZED_VELOCITY = 0.9
HUMANIZED_OFFSET = 0.1


def musicvae_spec(kind: str = "hierarchical", bars: int = 16, z_size: int = 8) -> ModelSpec:
    return ModelSpec(kind=kind, bars=bars, z_size=z_size, model_name=f"fake_{kind}_{bars}bar")


class FakeMusicVAE:
    def __init__(self, spec: ModelSpec | None = None) -> None:
        self.spec = spec or musicvae_spec()
        self.attributes = None  # no attribute vectors: steering is refused
        rng = np.random.default_rng(99)
        self._w = rng.standard_normal((self.spec.z_size, self.spec.steps * self.spec.n_drums))
        self.calls: list[tuple[str, int, float]] = []  # (thread, batch, temperature)
        self._lock = threading.Lock()

    def decode(self, z, temperature: float = 1.0, seed: int | None = None) -> Patterns:
        z = np.asarray(z, np.float32)
        assert z.ndim == 2 and z.shape[1] == self.spec.z_size, z.shape
        with self._lock:
            self.calls.append((threading.current_thread().name, z.shape[0], temperature))
        shape = (z.shape[0], self.spec.steps, self.spec.n_drums)
        hits = ((z @ self._w) / np.sqrt(self.spec.z_size) > 1.0).astype(np.float32).reshape(shape)
        return Patterns(hits, hits * np.float32(FIXED_VELOCITY), np.zeros(shape, np.float32))

    def sample(self, n: int, temperature: float = 1.0, seed: int | None = None) -> Patterns:
        rng = np.random.default_rng(seed)
        return self.decode(rng.standard_normal((n, self.spec.z_size)).astype(np.float32),
                           temperature)


class FakeHumanizer:
    def __init__(self, spec: ModelSpec | None = None, task: str = "humanize") -> None:
        base = ModelSpec()
        self.spec = spec or ModelSpec(kind="conditioned", task=task, bars=2, z_size=4,
                                      model_name=f"fake_{task}",
                                      controls=(Control(TASK_CONTROL, base.step_size),))
        self.task = self.spec.task
        self.path = Path(f"fake_{task}.onnx")
        self.threads: list[str] = []
        self.batches: list[int] = []
        self.feels: list[np.ndarray] = []

    def feel_latents(self, n: int, temperature: float, rng: np.random.Generator) -> np.ndarray:
        return rng.standard_normal((n, self.spec.z_size)).astype(np.float32) * temperature

    def transform(self, patterns: Patterns, temperature: float = 1.0, seed: int | None = None,
                  z: np.ndarray | None = None) -> Patterns:
        assert patterns.hits.shape[1:] == (self.spec.steps, self.spec.n_drums)
        self.threads.append(threading.current_thread().name)
        self.batches.append(len(patterns))
        self.feels.append(np.asarray(z))
        hits = patterns.cleaned().hits
        return Patterns(hits, hits * np.float32(HUMANIZED_VELOCITY),
                        hits * np.float32(HUMANIZED_OFFSET))
