"""`groove-train evaluate-task`: the task models (humanize, drumify, infill) against baselines.

Each task is scored on a split of played GMD windows: the model is handed the window as a user
would hand it a pattern (it makes the task's input with `task_input` itself) and its output is
compared with what the drummer really played. A number means little alone, so each task has
baselines that need no learning, and goal lines say whether the model beats them:

- humanize: velocity MAE (MIDI units) and timing MAE (ms) on the real hits; spreads (std over
  hits of offsets and velocities) as a ratio of the real windows' (a model that always plays
  the average feel has a good MAE and no life, so both are needed); windows whose hits changed
  (the task keeps the user's notes, so this must be 0). Baselines: "unchanged" (the quantized,
  flat-velocity input itself) and "random jitter" (Gaussian velocity and timing around that
  input with each voice's spread on the train split).
- drumify: hit F1 (cell-wise, overall and per voice) and timing MAE of the cells hit in both.
  Baseline: the train split's most common hit pattern among windows with as many taps.
- infill: hi-hat hit F1 (closed and open hat cells); non-hat voices must be kept. Baseline:
  straight 8th-note closed hats added to the input.
- humanize out of set: hand-written drum-machine patterns (not GMD) must keep every hit and get
  spreads near GMD's, i.e. the model humanizes what a live coder types, not only GMD windows.

Metric and baseline functions are pure numpy over `Patterns`, so they score a torch model, an
ONNX export through the runtime engine, or anything else given as `transform(patterns, seed)`.
"""
from __future__ import annotations

import json
import math
import time
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np

from groove_live.atomic_io import atomic_path
from groove_live.pattern import OFFSET_LIMIT, OFFSET_MAX, Patterns
from groove_live.spec import TASKS, ModelSpec
from groove_live.step_pattern import parse_step_pattern
from groove_live.transforms import FIXED_VELOCITY, HIHAT_VOICES, task_input

from . import metrics
from .data import DataError, load_dataset_info, load_split

# transform(patterns as played, seed) -> the finished patterns, same shape.
Transform = Callable[[Patterns, int], Patterns]

MIDI_MAX = 127.0  # velocities are midi / 127
# A per-voice std over fewer hits than this is noise (toms and crashes are rare in GMD), so
# per-voice spreads and ratios are reported only above it.
MIN_VOICE_HITS = 50
# Humanize on GMD windows must keep this share of the real spread of timing and velocity.
SPREAD_GOAL = 0.8
# On hand-written patterns, which are further from the training data, a little less.
OUT_OF_SET_SPREAD_GOAL = 0.7
# Each hand-written pattern is humanized this many times (each row draws its own feel from the
# prior), so its spreads are over a few thousand hits rather than a few dozen.
OUT_OF_SET_REPEATS = 32

# Drum-machine patterns as a live coder would type them: 2 bars, quantized, one flat velocity
# ("x" only). A 16-step string repeats for both bars.
DRUM_MACHINE_PATTERNS: dict[str, tuple[tuple[str, str], ...]] = {
    "rock": (("kick", "x.......x.x....."), ("snare", "....x.......x..."),
             ("closed_hihat", "x.x.x.x.x.x.x.x.")),
    "funk": (("kick", "x.x.......x..x..|x.........x....."),
             ("snare", "....x..x.x..x..x|....x..x.x..x..."),
             ("closed_hihat", "xxxxxxxxxxxxxxxx")),
    "disco": (("kick", "x...x...x...x..."), ("snare", "....x.......x..."),
              ("closed_hihat", "x...x...x...x..."), ("open_hihat", "..x...x...x...x.")),
    "hip_hop": (("kick", "x......x..x.....|x......x.xx....."),
                ("snare", "....x.......x..."), ("closed_hihat", "x.x.x.x.x.x.x.x.")),
    "bossa": (("kick", "x..xx..xx..xx..x"), ("snare", "x..x..x...x..x..|..x..x...x..x..."),
              ("ride", "x.x.x.x.x.x.x.x.")),
    "breakbeat": (("kick", "x.x.......xx....|..x.......x....."),
                  ("snare", "....x..x.x..x..x|....x..x.x....x."),
                  ("ride", "x.x.x.x.x.x.x.x.")),
    "half_time": (("kick", "x.....x...x....."), ("snare", "........x......."),
                  ("closed_hihat", "x.x.x.x.x.x.x.x.")),
    "rock_fill": (("kick", "x.......x.x.....|x.......x......."),
                  ("snare", "....x.......x...|....x..........."),
                  ("closed_hihat", "x.x.x.x.x.x.x.x.|x.x.x.x........."),
                  ("high_tom", "................|........xx......"),
                  ("mid_tom", "................|..........xx...."),
                  ("low_tom", "................|............xx.."),
                  ("crash", "x...............")),
}


# --- metrics ------------------------------------------------------------------------------

def _hits(p: Patterns) -> np.ndarray:
    return p.hits > metrics.HIT_THRESHOLD


def _same_shape(real: Patterns, pred: Patterns) -> None:
    if real.hits.shape != pred.hits.shape:
        raise ValueError(f"real and predicted shapes differ: {real.hits.shape} vs "
                         f"{pred.hits.shape}")


def step_ms(bpm: np.ndarray | float, steps_per_beat: int = 4) -> np.ndarray:
    """Length of one grid step in ms at each window's tempo (a 16th at 4 steps per beat)."""
    return metrics.step_seconds(bpm, steps_per_beat) * 1000.0


def velocity_mae_midi(real: Patterns, pred: Patterns, mask: np.ndarray | None = None) -> float:
    """Mean |predicted - real| velocity in MIDI units (0-127) over `mask` (default: the real
    hits, where a dropped hit counts its whole velocity); NaN when the mask is empty."""
    _same_shape(real, pred)
    mask = _hits(real) if mask is None else mask
    if not mask.any():
        return float("nan")
    error = np.abs(pred.velocities.astype(np.float64) - real.velocities)[mask]
    return float(error.mean() * MIDI_MAX)


def timing_mae_ms(real: Patterns, pred: Patterns, bpm: np.ndarray | float,
                  mask: np.ndarray | None = None, steps_per_beat: int = 4) -> float:
    """Mean |predicted - real| onset in ms over `mask` (default: the real hits), each window at
    its own tempo (offsets are step fractions); NaN when the mask is empty."""
    _same_shape(real, pred)
    mask = _hits(real) if mask is None else mask
    if not mask.any():
        return float("nan")
    ms = np.broadcast_to(step_ms(bpm, steps_per_beat), (len(real),))  # (N,)
    error = np.abs(pred.offsets.astype(np.float64) - real.offsets) * ms[:, None, None]
    return float(error[mask].mean())


def timing_explained(real: Patterns, pred: Patterns, bpm: np.ndarray | float,
                     steps_per_beat: int = 4) -> float:
    """Share of the real hits' timing around the grid that `pred` accounts for, in ms:
    1 - sum (pred - real)^2 / sum real^2 (0 for the quantized input, 1 for the take itself,
    below 0 for a draw farther off than the grid). Of a temperature-0 take, it is how much of
    the timing the score predicts; a sampler meets both timing goals only when it is high
    enough (docs/results.md)."""
    _same_shape(real, pred)
    mask = _hits(real)
    ms = np.broadcast_to(step_ms(bpm, steps_per_beat), (len(real),))[:, None, None]
    y = (real.offsets.astype(np.float64) * ms)[mask]
    if not mask.any() or not (y ** 2).sum() > 0:
        return float("nan")
    y_hat = (pred.offsets.astype(np.float64) * ms)[mask]
    return float(1.0 - ((y_hat - y) ** 2).sum() / (y ** 2).sum())


def spreads(patterns: Patterns, drum_names: tuple[str, ...],
            min_hits: int = MIN_VOICE_HITS) -> dict:
    """Std over hits of offsets (step fractions) and velocities (MIDI units), all voices pooled
    ("all") and per voice; None where fewer than `min_hits` hits (2 for "all")."""
    hits = _hits(patterns)
    out: dict = {"offset_std": {}, "velocity_std_midi": {}, "n_hits": {}}
    columns = [("all", slice(None), 2)] + [(name, i, min_hits) for i, name in
                                           enumerate(drum_names)]
    for name, column, least in columns:
        on = hits[..., column]
        n = int(on.sum())
        out["n_hits"][name] = n
        enough = n >= least
        out["offset_std"][name] = (float(np.std(patterns.offsets[..., column][on]
                                                .astype(np.float64))) if enough else None)
        out["velocity_std_midi"][name] = (float(np.std(patterns.velocities[..., column][on]
                                                       .astype(np.float64)) * MIDI_MAX)
                                          if enough else None)
    return out


def spread_ratios(spread: dict, reference: dict) -> dict:
    """spread / reference for offsets and velocities, pooled and per voice; None where either
    side has too few hits or the reference has no spread."""

    def ratio(a, b):
        return None if a is None or b is None or b <= 0 else float(a / b)

    return {key: {name: ratio(spread[field][name], reference[field].get(name))
                  for name in spread[field]}
            for key, field in (("offset", "offset_std"), ("velocity", "velocity_std_midi"))}


def windows_with_changed_hits(output: Patterns, given: Patterns,
                              voices: np.ndarray | None = None) -> int:
    """How many windows' hits differ from `given` in any cell (of `voices`, a (C,) bool mask;
    default all): the hits a task must keep."""
    _same_shape(given, output)
    differ = _hits(output) != _hits(given)  # (N, T, C)
    if voices is not None:
        differ = differ[..., voices]
    return int(np.any(differ, axis=(1, 2)).sum())


def hit_f1(real: Patterns, pred: Patterns, drum_names: tuple[str, ...],
           voices: tuple[str, ...] | None = None) -> dict:
    """Cell-wise (window, step, voice) hit precision, recall and F1 pooled over `voices`
    (default all), and F1 per voice."""
    _same_shape(real, pred)
    index = [drum_names.index(v) for v in voices] if voices else list(range(len(drum_names)))

    def pick(p: Patterns) -> Patterns:
        return Patterns(p.hits[..., index], p.velocities[..., index], p.offsets[..., index])

    scores = metrics.hit_scores(pick(real), pick(pred))
    per_voice = metrics.per_drum_hit_f1(pick(real), pick(pred))
    return {"f1": scores["hit_f1"], "precision": scores["hit_precision"],
            "recall": scores["hit_recall"], "n_real_hits": scores["n_true_hits"],
            "n_predicted_hits": scores["n_predicted_hits"],
            "per_voice": {drum_names[i]: float(f) for i, f in zip(index, per_voice)}}


# --- per-task scores ----------------------------------------------------------------------

def humanize_scores(real: Patterns, output: Patterns, bpm: np.ndarray, spec: ModelSpec,
                    reference_spread: dict | None = None) -> dict:
    """Humanize's numbers for one output: MAEs on the real hits, spreads and their ratio to the
    real windows' (or `reference_spread`), windows whose hits changed from the input."""
    given = task_input("humanize", real, spec)
    reference = reference_spread or spreads(real, spec.drum_names)
    spread = spreads(output, spec.drum_names)
    ratios = spread_ratios(spread, reference)
    return {
        "velocity_mae_midi": velocity_mae_midi(real, output),
        "timing_mae_ms": timing_mae_ms(real, output, bpm, steps_per_beat=spec.steps_per_beat),
        "timing_explained": timing_explained(real, output, bpm, spec.steps_per_beat),
        "offset_std_ratio": ratios["offset"]["all"],
        "velocity_std_ratio": ratios["velocity"]["all"],
        "offset_std_ratio_per_voice": _without("all", ratios["offset"]),
        "velocity_std_ratio_per_voice": _without("all", ratios["velocity"]),
        "spread": spread,
        "windows_with_changed_hits": windows_with_changed_hits(output, given),
    }


def drumify_scores(real: Patterns, output: Patterns, bpm: np.ndarray, spec: ModelSpec) -> dict:
    """Drumify's numbers: hit F1 against the real kit, timing MAE of cells hit in both."""
    matched = _hits(real) & _hits(output)
    f1 = hit_f1(real, output, spec.drum_names)
    return {
        "hit_f1": f1["f1"], "hit_precision": f1["precision"], "hit_recall": f1["recall"],
        "hit_f1_per_voice": f1["per_voice"],
        "timing_mae_ms": timing_mae_ms(real, output, bpm, matched, spec.steps_per_beat),
        "n_matched_hits": int(matched.sum()),
    }


def infill_scores(real: Patterns, output: Patterns, bpm: np.ndarray, spec: ModelSpec) -> dict:
    """Infill's numbers: hi-hat F1 against the real hats, timing MAE of hat cells hit in both,
    and windows whose other voices changed from the input (must be 0)."""
    hats = np.isin(np.array(spec.drum_names), HIHAT_VOICES)  # (C,)
    given = task_input("infill", real, spec)
    matched = _hits(real) & _hits(output) & hats
    f1 = hit_f1(real, output, spec.drum_names, HIHAT_VOICES)
    return {
        "hat_f1": f1["f1"], "hat_precision": f1["precision"], "hat_recall": f1["recall"],
        "hat_f1_per_voice": f1["per_voice"],
        "hat_timing_mae_ms": timing_mae_ms(real, output, bpm, matched, spec.steps_per_beat),
        "windows_with_changed_other_voices": windows_with_changed_hits(output, given, ~hats),
    }


def _without(key: str, d: dict) -> dict:
    return {k: v for k, v in d.items() if k != key}


# --- baselines ----------------------------------------------------------------------------

def unchanged_baseline(real: Patterns, spec: ModelSpec) -> Patterns:
    """Humanize's floor: the quantized, flat-velocity input returned as it is."""
    return task_input("humanize", real, spec)


def voice_spreads(train: Patterns) -> tuple[np.ndarray, np.ndarray]:
    """(velocity std, offset std), each (C,), over each voice's hits (0 with under 2 hits)."""
    hits = _hits(train)
    velocity_std = np.zeros(train.n_drums)
    offset_std = np.zeros(train.n_drums)
    for d in range(train.n_drums):
        on = hits[..., d]
        if on.sum() >= 2:
            velocity_std[d] = np.std(train.velocities[..., d][on].astype(np.float64))
            offset_std[d] = np.std(train.offsets[..., d][on].astype(np.float64))
    return velocity_std, offset_std


def jitter_baseline(real: Patterns, spec: ModelSpec, velocity_std: np.ndarray,
                    offset_std: np.ndarray, seed: int = 0) -> Patterns:
    """Humanize by dice: Gaussian velocity and timing around the quantized, flat input with each
    voice's std (from `voice_spreads` of the train split). It has GMD's spread and no feel."""
    given = task_input("humanize", real, spec)
    rng = np.random.default_rng(seed)
    shape = given.hits.shape
    velocities = given.velocities + rng.standard_normal(shape) * velocity_std
    offsets = rng.standard_normal(shape) * offset_std
    velocities = np.clip(velocities, 1.0 / MIDI_MAX, 1.0) * given.hits  # a hit stays audible
    offsets = np.clip(offsets, -OFFSET_LIMIT, OFFSET_MAX) * given.hits
    return Patterns(given.hits, velocities, offsets)


def tap_counts(patterns: Patterns) -> np.ndarray:
    """(N,) steps with any hit: the number of taps drumify is given."""
    return np.any(_hits(patterns), axis=2).sum(axis=1)


def common_patterns(train: Patterns) -> dict[int, np.ndarray]:
    """Tap count -> the most common exact hit pattern (T, C) among train windows with that
    many taps (ties: the one met first)."""
    hits = _hits(train).astype(np.uint8)
    counters: dict[int, Counter] = {}
    for count, window in zip(tap_counts(train), hits):
        counters.setdefault(int(count), Counter())[window.tobytes()] += 1
    shape = hits.shape[1:]
    return {count: np.frombuffer(c.most_common(1)[0][0], np.uint8).reshape(shape)
            .astype(np.float32) for count, c in counters.items()}


def common_pattern_baseline(real: Patterns, table: dict[int, np.ndarray],
                            velocity: float = FIXED_VELOCITY) -> Patterns:
    """Drumify's floor: for each window the most common GMD pattern with its number of taps
    (the nearest count the train split has, the lower on a tie); flat velocity, on the grid."""
    if not table:
        raise ValueError("no common patterns (the train split is empty)")
    known = np.array(sorted(table))
    hits = np.empty_like(real.hits)
    for i, count in enumerate(tap_counts(real)):
        nearest = known[np.argmin(np.abs(known - count))]  # argmin: first (lower) on a tie
        hits[i] = table[int(nearest)]
    return Patterns(hits, hits * np.float32(velocity), np.zeros_like(hits))


def eighth_hats_baseline(real: Patterns, spec: ModelSpec,
                         velocity: float = FIXED_VELOCITY) -> Patterns:
    """Infill's floor: the input (hats removed) plus closed hats on every 8th note."""
    given = task_input("infill", real, spec)
    hat = spec.drum_names.index("closed_hihat")
    every = max(1, spec.steps_per_beat // 2)  # steps per 8th note
    eighths = (np.arange(spec.steps) % every == 0).astype(np.float32)  # (T,)
    hits, velocities = given.hits.copy(), given.velocities.copy()
    hits[..., hat] = eighths
    velocities[..., hat] = eighths * np.float32(velocity)
    return Patterns(hits, velocities, given.offsets)


# --- out of set ---------------------------------------------------------------------------

def drum_machine_patterns(spec: ModelSpec) -> tuple[list[str], Patterns]:
    """(names, patterns (P, T, C)) of the hand-written patterns, quantized at flat velocity."""
    names = list(DRUM_MACHINE_PATTERNS)
    patterns = Patterns.concat([parse_step_pattern(DRUM_MACHINE_PATTERNS[n], spec)
                                for n in names])
    return names, task_input("humanize", patterns, spec)


def out_of_set_scores(transform: Transform, spec: ModelSpec, gmd_spread: dict, seed: int = 0,
                      repeats: int = OUT_OF_SET_REPEATS) -> dict:
    """Humanize hand-written patterns (each `repeats` times, one feel per row): windows whose
    hits changed, spreads and their ratio to GMD's (`gmd_spread`, from `spreads`)."""
    names, patterns = drum_machine_patterns(spec)
    given = Patterns(*(np.repeat(a, repeats, axis=0) for a in
                       (patterns.hits, patterns.velocities, patterns.offsets)))
    output = _checked(transform(given, seed), given)
    spread = spreads(output, spec.drum_names)
    ratios = spread_ratios(spread, gmd_spread)
    return {
        "patterns": names, "repeats": repeats, "n_windows": len(given),
        "windows_with_changed_hits": windows_with_changed_hits(output, given),
        "offset_std_ratio": ratios["offset"]["all"],
        "velocity_std_ratio": ratios["velocity"]["all"],
        "offset_std_ratio_per_voice": _without("all", ratios["offset"]),
        "velocity_std_ratio_per_voice": _without("all", ratios["velocity"]),
        "spread": spread,
    }


# --- the runner ---------------------------------------------------------------------------

def _checked(output: object, given: Patterns) -> Patterns:
    if not isinstance(output, Patterns):
        raise ValueError(f"the transform returned a {type(output).__name__}, not Patterns")
    if output.hits.shape != given.hits.shape:
        raise ValueError(f"the transform returned shape {output.hits.shape} for "
                         f"{given.hits.shape}")
    return output.cleaned()


def batch_seed(seed: int, index: int) -> int:
    """The seed of batch `index`: distinct per batch, and runs with different seeds share no
    batch's seed (seed + index would)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def run_transform(transform: Transform, patterns: Patterns, seed: int = 0,
                  batch: int = 256) -> Patterns:
    """The transform over every window, `batch` windows at a time, each batch seeded."""
    if batch < 1:
        raise ValueError("batch must be at least 1")
    out = []
    for i, start in enumerate(range(0, len(patterns), batch)):
        part = patterns[start:start + batch]
        out.append(_checked(transform(part, batch_seed(seed, i)), part))
    return Patterns.concat(out)


def evaluate_task(transform: Transform, task: str, dataset_dir: str | Path,
                  split: str = "test", seed: int = 0, batch: int = 256,
                  spec: ModelSpec | None = None) -> dict:
    """Score `transform` as a `task` model on a prepared split, beside the task's baselines.

    spec: the windows' spec (default: the dataset's own). Returns plain data: the model's and
    each baseline's scores, the goal lines, for humanize the out-of-set scores, and a readable
    "table".
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
    t0 = time.perf_counter()
    if spec is None:
        spec = load_dataset_info(dataset_dir)[0]
    real, bpm = load_split(dataset_dir, split)
    train = real if split == "train" else load_split(dataset_dir, "train")[0]
    for name, p in ((split, real), ("train", train)):
        try:
            p.check_spec(spec)
        except ValueError as e:
            raise DataError(f"{dataset_dir} ({name}): {e}") from None
        if len(p) == 0:
            raise DataError(f"{dataset_dir}: the {name} split has no windows")
    real = real.cleaned()
    output = run_transform(transform, real, seed, batch)
    t_model = time.perf_counter() - t0
    result: dict = {"task": task, "dataset": str(dataset_dir), "split": split,
                    "n_windows": len(real), "seed": seed}
    if task == "humanize":
        gmd = spreads(real, spec.drum_names)
        velocity_std, offset_std = voice_spreads(train.cleaned())
        outputs = {"model": output, "unchanged": unchanged_baseline(real, spec),
                   "random jitter": jitter_baseline(real, spec, velocity_std, offset_std, seed)}
        scores = {k: humanize_scores(real, v, bpm, spec, gmd) for k, v in outputs.items()}
        result["gmd_spread"] = gmd
        result["out_of_set"] = out_of_set_scores(transform, spec, gmd, seed)
    elif task == "drumify":
        outputs = {"model": output,
                   "common pattern": common_pattern_baseline(real, common_patterns(train))}
        scores = {k: drumify_scores(real, v, bpm, spec) for k, v in outputs.items()}
    else:
        outputs = {"model": output, "straight 8ths": eighth_hats_baseline(real, spec)}
        scores = {k: infill_scores(real, v, bpm, spec) for k, v in outputs.items()}
    result["model"] = scores.pop("model")
    result["baselines"] = scores
    result["goals"] = goals(task, result)
    result["seconds"] = {"model": round(t_model, 2), "total": round(time.perf_counter() - t0, 2)}
    result["table"] = format_table(result, spec.drum_names)
    return result


def _below(value, others) -> bool:
    return _finite(value) and all(_finite(o) and value < o for o in others)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _at_least(value, least: float) -> bool:
    return _finite(value) and value >= least


def goals(task: str, result: dict) -> list[dict]:
    """The goal lines of a task: [{"goal": text, "met": bool}]."""
    m, base = result["model"], result["baselines"]
    lines: list[tuple[str, bool]] = []
    if task == "humanize":
        lines += [
            ("velocity MAE below both baselines",
             _below(m["velocity_mae_midi"], [b["velocity_mae_midi"] for b in base.values()])),
            ("timing MAE below both baselines",
             _below(m["timing_mae_ms"], [b["timing_mae_ms"] for b in base.values()])),
            (f"timing spread >= {SPREAD_GOAL:g} of GMD's",
             _at_least(m["offset_std_ratio"], SPREAD_GOAL)),
            (f"velocity spread >= {SPREAD_GOAL:g} of GMD's",
             _at_least(m["velocity_std_ratio"], SPREAD_GOAL)),
            ("every window keeps its hits", m["windows_with_changed_hits"] == 0),
        ]
        oos = result["out_of_set"]
        lines += [
            ("drum-machine patterns keep every hit", oos["windows_with_changed_hits"] == 0),
            (f"drum-machine timing spread >= {OUT_OF_SET_SPREAD_GOAL:g} of GMD's",
             _at_least(oos["offset_std_ratio"], OUT_OF_SET_SPREAD_GOAL)),
            (f"drum-machine velocity spread >= {OUT_OF_SET_SPREAD_GOAL:g} of GMD's",
             _at_least(oos["velocity_std_ratio"], OUT_OF_SET_SPREAD_GOAL)),
        ]
    elif task == "drumify":
        lines.append(("hit F1 above the common-pattern baseline",
                      _finite(m["hit_f1"]) and m["hit_f1"] > base["common pattern"]["hit_f1"]))
    else:
        lines += [("hi-hat F1 above straight 8ths",
                   _finite(m["hat_f1"]) and m["hat_f1"] > base["straight 8ths"]["hat_f1"]),
                  ("every window keeps its other voices",
                   m["windows_with_changed_other_voices"] == 0)]
    return [{"goal": text, "met": bool(met)} for text, met in lines]


# --- output -------------------------------------------------------------------------------

def _show(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


ROWS = {  # task -> (label, key) of the main table
    "humanize": (("velocity MAE (MIDI)", "velocity_mae_midi"), ("timing MAE (ms)", "timing_mae_ms"),
                 ("timing variance explained", "timing_explained"),
                 ("timing spread / GMD", "offset_std_ratio"),
                 ("velocity spread / GMD", "velocity_std_ratio"),
                 ("windows with changed hits", "windows_with_changed_hits")),
    "drumify": (("hit F1", "hit_f1"), ("hit precision", "hit_precision"),
                ("hit recall", "hit_recall"), ("timing MAE, matched (ms)", "timing_mae_ms")),
    "infill": (("hi-hat F1", "hat_f1"), ("hi-hat precision", "hat_precision"),
               ("hi-hat recall", "hat_recall"), ("hi-hat timing MAE (ms)", "hat_timing_mae_ms"),
               ("windows with changed other voices", "windows_with_changed_other_voices")),
}
PER_VOICE = {  # task -> (label, key) of the per-voice table
    "humanize": (("timing spread / GMD", "offset_std_ratio_per_voice"),
                 ("velocity spread / GMD", "velocity_std_ratio_per_voice")),
    "drumify": (("hit F1", "hit_f1_per_voice"),),
    "infill": (("hit F1", "hat_f1_per_voice"),),
}


def _grid(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                              for i, (c, w) in enumerate(zip(r, widths)))
    return [fmt(header), *(fmt(r) for r in rows)]


def format_table(result: dict, drum_names: tuple[str, ...]) -> str:
    """The readable summary: model vs baselines, per voice, out of set, goal lines."""
    task = result["task"]
    columns = {"model": result["model"], **result["baselines"]}
    lines = [f"{task} on the {result['split']} split: {result['n_windows']} windows, seed "
             f"{result['seed']}", ""]
    lines += _grid(["", *columns], [[label, *(_show(c[key]) for c in columns.values())]
                                    for label, key in ROWS[task]])
    for label, key in PER_VOICE[task]:
        names = [n for n in drum_names if n in result["model"][key]]
        note = f" ('-': under {MIN_VOICE_HITS} hits)" if "spread" in label else ""
        lines += ["", f"per voice, {label}{note}"]
        lines += _grid(["", *names], [[name, *(_show(c[key][n], 2) for n in names)]
                                      for name, c in columns.items()])
    if task == "humanize":
        oos = result["out_of_set"]
        lines += ["", f"drum-machine patterns ({len(oos['patterns'])} hand-written, each "
                      f"humanized {oos['repeats']} times): windows with changed hits "
                      f"{oos['windows_with_changed_hits']}, timing spread / GMD "
                      f"{_show(oos['offset_std_ratio'])}, velocity spread / GMD "
                      f"{_show(oos['velocity_std_ratio'])}"]
        names = [n for n in drum_names if oos["offset_std_ratio_per_voice"].get(n) is not None]
        lines += _grid(["", *names],
                       [[label, *(_show(oos[key][n], 2) for n in names)]
                        for label, key in PER_VOICE["humanize"]])
    lines += ["", "goals:"]
    lines += [f"  [{'met' if g['met'] else 'MISSED'}] {g['goal']}" for g in result["goals"]]
    return "\n".join(lines)


def _plain(value):
    """JSON-safe: NaN/inf as null, numpy scalars as Python numbers."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_result(result: dict, path: str | Path) -> None:
    """The result as JSON (without the table), written atomically."""
    data = _plain({k: v for k, v in result.items() if k != "table"})
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(data, indent=1, sort_keys=True, allow_nan=False))


# --- transforms of a model ----------------------------------------------------------------

def engine_transform(engine, temperature: float = 1.0) -> Transform:
    """A task model exported to ONNX, through the runtime engine."""
    return lambda patterns, seed: engine.transform(patterns, temperature=temperature, seed=seed)


def torch_transform(model, temperature: float = 1.0) -> Transform:
    """A torch ConditionedVAE (e.g. from `model_from_checkpoint`): task_input then the decoder
    with z from the prior, as the engine does."""
    import torch

    spec = model.spec
    device = next(model.parameters()).device

    def transform(patterns: Patterns, seed: int) -> Patterns:
        control = task_input(spec.task, patterns, spec).to_flat()
        generator = torch.Generator(device=device).manual_seed(int(seed))
        with torch.inference_mode():
            hits, velocities, offsets = model.generate(
                torch.from_numpy(control).to(device), temperature, generator)
        return Patterns(hits.float().cpu().numpy(), velocities.float().cpu().numpy(),
                        offsets.float().cpu().numpy())

    return transform


# --- a model file -------------------------------------------------------------------------

class TaskEvalError(ValueError):
    """A model or dataset that cannot be scored as a task model: one clear line."""


def load_task_model(model_path: str | Path | None = None, checkpoint: str | Path | None = None,
                    temperature: float = 1.0, device: str = "cpu"
                    ) -> tuple[Transform, ModelSpec, str]:
    """(transform, spec, what it is) of an exported task model (through the runtime engine, as
    it ships) or of a training checkpoint (torch). Errors: EngineError (a model file),
    TaskEvalError (a checkpoint that does not load, or not a task model)."""
    if (model_path is None) == (checkpoint is None):
        raise TaskEvalError("say which model to score: an exported .onnx or a checkpoint .pt "
                            "(one of them)")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise TaskEvalError(f"temperature must be finite and >= 0, got {temperature}")
    if model_path is not None:
        from groove_live.engine import Engine

        engine = Engine.load(model_path)
        spec, what = engine.spec, f"{Path(model_path).name} ({engine.variant}, runtime engine)"
        transform = engine_transform(engine, temperature)
    else:
        from .run import RunError, model_from_checkpoint  # torch: only for a checkpoint

        try:
            model, _, spec, state = model_from_checkpoint(checkpoint, map_location=device)
        except RunError as e:
            raise TaskEvalError(str(e)) from None
        model.to(device)
        what = f"{checkpoint} (torch, step {state.get('step', '?')})"
        transform = torch_transform(model, temperature) if spec.kind == "conditioned" else None
    if spec.kind != "conditioned" or spec.task not in TASKS:
        raise TaskEvalError(f"{model_path or checkpoint}: a {spec.kind!r} model, not a task model "
                            f"({', '.join(TASKS)}); score it with `groove-train evaluate`")
    return transform, spec, what


def evaluate_task_model(model_path: str | Path | None, checkpoint: str | Path | None,
                        dataset_dir: str | Path, split: str = "test", seed: int = 0,
                        temperature: float = 1.0, batch: int = 256, device: str = "cpu",
                        out: str | Path | None = None) -> dict:
    """evaluate_task for a model file (see load_task_model); with `out`, the JSON there."""
    transform, spec, what = load_task_model(model_path, checkpoint, temperature, device)
    data_spec = load_dataset_info(dataset_dir)[0]
    mismatch = data_spec.data_shape_mismatch(spec.window_spec())
    if mismatch:
        name, model_value, data_value = mismatch
        raise TaskEvalError(f"{dataset_dir}: its windows have {name} {data_value}, the model "
                            f"reads {model_value}")
    result = evaluate_task(transform, spec.task, dataset_dir, split, seed, batch,
                           spec.window_spec())
    result.update({"model_file": str(model_path or checkpoint), "temperature": temperature,
                   "weights": spec.run_id, "preset": spec.preset})
    result["table"] = f"{what}, temperature {temperature:g}\n" + result["table"]
    if out is not None:
        write_result(result, out)
    return result
