"""Humanize like a reference: the humanize model given a drummer's feel, scored on GMD.

`groove-live humanize --like REF.mid` plays a pattern with the feel of a recording: the
model's encoder reads the recording, and its mean latent takes the place of a drummer drawn at
random. Scored the way a user would use it: each window of a split is humanized with the
**previous two bars of the same take** as the reference (the window two places earlier in the
same file: windows hop one bar, so it ends where the scored one starts, or earlier where windows
were skipped), so the model knows this take's habits but never sees the bars it is scored on.

Baselines: plain humanize's two (unchanged; random jitter with GMD's spread) and one that knows
what the model knows, **copied feel**: each voice's mean velocity and mean offset in the
reference put on the pattern's notes (the reference's overall means for a voice it does not
play). Out of set: the hand-written drum-machine patterns, each humanized with the feels of
`repeats` windows of the split drawn with the seed.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np

from groove_live.pattern import OFFSET_LIMIT, OFFSET_MAX, Patterns
from groove_live.transforms import FIXED_VELOCITY

from .data import DataError, load_dataset_info, load_split
from .task_eval import (OUT_OF_SET_REPEATS, TaskEvalError, _below, _checked, batch_seed,
                        format_table, goals, humanize_scores, jitter_baseline,
                        out_of_set_scores, spreads, unchanged_baseline, voice_spreads,
                        write_result)

# (patterns, references, seed) -> patterns: humanize `patterns` with the feel of `references`
# (one reference window per pattern).
FeelTransform = Callable[[Patterns, Patterns, int], Patterns]
WINDOWS_BACK = 2  # 2-bar windows at a 1-bar hop: two places back is the previous two bars
MODE = "like the previous 2 bars of the same take"


def previous_window_pairs(source: np.ndarray, back: int = WINDOWS_BACK) -> np.ndarray:
    """Indices i (ascending) whose window `back` places earlier comes from the same file."""
    source = np.asarray(source)
    i = np.arange(back, len(source))
    return i[source[i] == source[i - back]]


def copied_feel(references: Patterns, given: Patterns) -> Patterns:
    """The copied-feel baseline: `given`'s notes with each voice's mean velocity and mean
    offset in the matching reference window (its overall means for a voice it does not play;
    flat and on the grid for an empty reference)."""
    ref, given = references.cleaned(), given.cleaned()
    hits = ref.hits > 0.5
    n_voice = hits.sum(axis=1)  # (N, C)
    n_all = n_voice.sum(axis=1, keepdims=True)  # (N, 1)

    def per_voice(values: np.ndarray, empty: float) -> np.ndarray:
        total = (values * hits).sum(axis=1)
        overall = np.where(n_all > 0, total.sum(axis=1, keepdims=True) / np.maximum(n_all, 1),
                           empty)
        return np.where(n_voice > 0, total / np.maximum(n_voice, 1), overall)  # (N, C)

    velocity = per_voice(ref.velocities.astype(np.float64), FIXED_VELOCITY)
    offset = per_voice(ref.offsets.astype(np.float64), 0.0)
    h = given.hits
    return Patterns(h, (np.clip(velocity[:, None, :], 1 / 127, 1.0) * h).astype(np.float32),
                    (np.clip(offset[:, None, :], -OFFSET_LIMIT, OFFSET_MAX) * h)
                    .astype(np.float32))


def engine_feel_transform(engine, temperature: float) -> FeelTransform:
    """The shipped humanize model through the runtime: z = the encoder's mean of each
    reference, as `groove-live humanize --like` does for a one-phrase reference."""
    def transform(patterns: Patterns, references: Patterns, seed: int) -> Patterns:
        mu, _ = engine.encode(references)
        return engine.transform(patterns, temperature=temperature, seed=seed, z=mu)
    return transform


def _run(transform: FeelTransform, patterns: Patterns, references: Patterns, seed: int,
         batch: int) -> Patterns:
    out = []
    for i, start in enumerate(range(0, len(patterns), batch)):
        part = patterns[start:start + batch]
        out.append(_checked(transform(part, references[start:start + batch],
                                      batch_seed(seed, i)), part))
    return Patterns.concat(out)


def _source(dataset_dir, split: str) -> np.ndarray:
    try:
        with np.load(Path(dataset_dir) / f"{split}.npz") as data:
            if "source" not in data.files:
                raise TaskEvalError(f"{dataset_dir}: the {split} split does not say which file "
                                    f"each window comes from; prepare it again")
            return np.asarray(data["source"])
    except OSError as e:
        raise TaskEvalError(f"{dataset_dir}: cannot read the {split} split ({e})") from None


def evaluate_like_previous(transform: FeelTransform, dataset_dir: str | Path,
                           split: str = "test", seed: int = 0, batch: int = 256,
                           repeats: int = OUT_OF_SET_REPEATS) -> dict:
    """Humanize scored with the previous two bars of each take as the feel (see the module
    note): plain humanize's goal lines against its two baselines, and whether the model also
    beats the copied feel."""
    spec = load_dataset_info(dataset_dir)[0]
    real, bpm = load_split(dataset_dir, split)
    train = load_split(dataset_dir, "train")[0]
    real = real.cleaned()
    pairs = previous_window_pairs(_source(dataset_dir, split))
    if pairs.size == 0:
        raise DataError(f"{dataset_dir}: no window of the {split} split has two earlier bars "
                        f"of the same file")
    given, references, bpm = real[pairs], real[pairs - WINDOWS_BACK], np.asarray(bpm)[pairs]
    output = _run(transform, given, references, seed, batch)
    gmd = spreads(given, spec.drum_names)
    velocity_std, offset_std = voice_spreads(train.cleaned())
    outputs = {"model": output, "unchanged": unchanged_baseline(given, spec),
               "random jitter": jitter_baseline(given, spec, velocity_std, offset_std, seed),
               "copied feel": copied_feel(references, given)}
    scores = {k: humanize_scores(given, v, bpm, spec, gmd) for k, v in outputs.items()}
    result: dict = {"task": "humanize", "mode": MODE, "dataset": str(dataset_dir),
                    "split": split, "n_windows": int(len(given)), "seed": seed,
                    "model": scores.pop("model"), "gmd_spread": gmd}
    result["out_of_set"] = _out_of_set(transform, spec, real, gmd, seed, repeats)
    # The plain goal lines compare with plain humanize's two baselines, as their text says.
    result["baselines"] = {k: scores[k] for k in ("unchanged", "random jitter")}
    lines = goals("humanize", result)
    copied = scores["copied feel"]
    for what, key in (("velocity", "velocity_mae_midi"), ("timing", "timing_mae_ms")):
        lines.append({"goal": f"{what} MAE below the copied feel",
                      "met": bool(_below(result["model"][key], [copied[key]]))})
    result["baselines"] = {**result["baselines"], "copied feel": copied}
    result["goals"] = lines
    result["table"] = (f"humanize {MODE} (the model's feel: the encoder's mean of those bars)\n"
                       + format_table(result, spec.drum_names))
    return result


def _out_of_set(transform: FeelTransform, spec, real: Patterns, gmd: dict, seed: int,
                repeats: int) -> dict:
    """task_eval's drum-machine check, each pattern humanized `repeats` times with the feel of
    a window of the split drawn with the seed."""
    rng = np.random.default_rng([seed, 1])

    def with_feels(given: Patterns, seed: int) -> Patterns:
        references = real[rng.choice(len(real), len(given), replace=len(real) < len(given))]
        return transform(given, references, seed)
    return out_of_set_scores(with_feels, spec, gmd, seed, repeats)


def evaluate_like_previous_model(model_path: str | Path, dataset_dir: str | Path,
                                 split: str = "test", seed: int = 0, temperature: float = 1.0,
                                 batch: int = 256, out: str | Path | None = None) -> dict:
    """evaluate_like_previous for an exported humanize model (it needs its encoder)."""
    from groove_live.engine import Engine

    if not (math.isfinite(temperature) and temperature >= 0):
        raise TaskEvalError(f"temperature must be finite and >= 0, got {temperature}")
    engine = Engine.load(model_path)
    if engine.task != "humanize":
        raise TaskEvalError(f"{model_path}: a {engine.task or engine.spec.kind} model; "
                            f"--like-previous scores a humanize model")
    if not engine.has_encoder:
        raise TaskEvalError(f"{model_path}: no encoder beside it, so it cannot read a feel")
    result = evaluate_like_previous(engine_feel_transform(engine, temperature), dataset_dir,
                                    split, seed, batch)
    result.update({"model_file": str(model_path), "temperature": temperature,
                   "weights": engine.spec.run_id, "preset": engine.spec.preset})
    result["table"] = (f"{Path(model_path).name} (runtime engine), temperature "
                       f"{temperature:g}\n" + result["table"])
    if out is not None:
        write_result(result, out)
    return result
