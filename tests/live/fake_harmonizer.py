"""A stand-in for a pitched harmonizer engine (Engine.accompany's contract) with known answers.

Under each melody step it writes a fixed triad below the melody's pitch: alto a major third
down, tenor a fifth down, bass an octave down (rests where the melody rests), clipped to each
voice's range. Records the thread each call ran on (the model must run on the worker).
"""
from __future__ import annotations

import threading

import numpy as np

from groove_live.chorale import REST, VOICE_RANGES, ChoraleError
from groove_live.spec import ModelSpec, Voice, pitched_fields

INTERVALS = {"alto": -4, "tenor": -7, "bass": -12}


def harmonizer_spec() -> ModelSpec:
    voices = tuple(Voice(name, channel, *VOICE_RANGES[name])
                   for channel, name in enumerate(("alto", "tenor", "bass"), start=1))
    return ModelSpec(**{**pitched_fields(voices), "bars": 2, "steps_per_bar": 16,
                        "beats_per_bar": 4, "model_name": "fake_harmonizer"})


class FakeHarmonizer:
    def __init__(self, fail: bool = False) -> None:
        self.spec = harmonizer_spec()
        self.fail = fail
        self.threads: list[str] = []
        self.seeds: list[int | None] = []

    def accompany(self, melody: np.ndarray, seed: int | None = None) -> np.ndarray:
        self.threads.append(threading.current_thread().name)
        self.seeds.append(seed)
        if self.fail:
            raise ChoraleError("the model exploded")
        melody = np.asarray(melody)
        if melody.ndim != 2 or melody.shape[1] != self.spec.steps:
            raise ValueError(f"melody shape {melody.shape}")
        out = np.full(melody.shape + (len(self.spec.voices),), REST, np.int64)
        for i, v in enumerate(self.spec.voices):
            pitch = np.clip(melody + INTERVALS[v.name], v.low_pitch, v.high_pitch)
            out[..., i] = np.where(melody == REST, REST, pitch)
        return out


def harmonize(engine, melody: np.ndarray, seed: int | None) -> np.ndarray:
    """groove_live.accompany.harmonize's contract for one window already in range: the melody
    and the voices written under it, (steps, 4)."""
    voices = engine.accompany(np.asarray(melody)[None], seed=seed)[0]
    return np.concatenate([np.asarray(melody)[:, None], voices], axis=1)
