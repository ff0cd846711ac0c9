"""Evaluation metrics on drum patterns: reconstruction accuracy and sample-vs-data statistics.

Pure numpy (no torch) so they can score anything that yields `Patterns`: a torch model, an
ONNX export, or a recorded performance.

Conventions used throughout:
- A cell is one (window, step, drum). A cell is a hit when its hit value is > 0.5.
- Velocity and timing errors are measured on *matched hits*: cells that are hits in the
  target AND in the prediction. A missed or spurious hit has no played velocity or onset to
  compare with; it is already counted by precision/recall, and scoring it again here would
  make the MAEs depend on what a decoder happens to write into cells it leaves silent
  (Magenta's decoder writes a velocity everywhere; a sampled pattern writes 0). `n_matched_hits`
  is reported beside them, so a good MAE on few matched hits is visible.
- Step density is the fraction of a window's steps with at least one hit (0-1), so it
  compares across window lengths; voices is the number of drum classes with at least one hit.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from groove_live.pattern import Patterns

HIT_THRESHOLD = 0.5


# --- reconstruction ----------------------------------------------------------------------

def _hit_masks(target: Patterns, prediction: Patterns) -> tuple[np.ndarray, np.ndarray]:
    if target.hits.shape != prediction.hits.shape:
        raise ValueError(
            f"target and prediction shapes differ: {target.hits.shape} vs {prediction.hits.shape}")
    return target.hits > HIT_THRESHOLD, prediction.hits > HIT_THRESHOLD


def _precision_recall_f1(tp: float, fp: float, fn: float) -> tuple[float, float, float]:
    # Empty denominators are vacuous successes (no predicted hits -> no wrong ones), so an
    # all-silent target reconstructed as silence scores 1 everywhere; F1 is 0 only when
    # precision and recall are both 0.
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return float(precision), float(recall), float(f1)


def hit_scores(target: Patterns, prediction: Patterns) -> dict[str, float]:
    """Micro-averaged hit precision / recall / F1 and per-cell accuracy over all cells."""
    true, pred = _hit_masks(target, prediction)
    tp = float(np.sum(true & pred))
    fp = float(np.sum(~true & pred))
    fn = float(np.sum(true & ~pred))
    precision, recall, f1 = _precision_recall_f1(tp, fp, fn)
    return {
        "hit_precision": precision,
        "hit_recall": recall,
        "hit_f1": f1,
        "hit_accuracy": float(np.mean(true == pred)) if true.size else 1.0,
        "n_true_hits": int(tp + fn),
        "n_predicted_hits": int(tp + fp),
    }


def per_drum_hit_f1(target: Patterns, prediction: Patterns) -> np.ndarray:
    """(C,) hit F1 of each drum class: rare classes (toms, crash) hide inside the micro F1."""
    true, pred = _hit_masks(target, prediction)
    tp = np.sum(true & pred, axis=(0, 1))
    fp = np.sum(~true & pred, axis=(0, 1))
    fn = np.sum(true & ~pred, axis=(0, 1))
    return np.array([_precision_recall_f1(*cell)[2] for cell in zip(tp, fp, fn)], np.float64)


def step_seconds(bpm: np.ndarray | float, steps_per_beat: int = 4) -> np.ndarray:
    """Length of one grid step in seconds (a 16th note at 4 steps per beat)."""
    bpm = np.asarray(bpm, dtype=np.float64)
    if np.any(bpm <= 0):
        raise ValueError("bpm must be positive")
    return 60.0 / bpm / steps_per_beat


def continuous_errors(target: Patterns, prediction: Patterns, bpm: np.ndarray | float,
                      steps_per_beat: int = 4) -> dict[str, float]:
    """Velocity MAE (0-1 units) and timing MAE (ms, at each window's own tempo) on matched hits."""
    true, pred = _hit_masks(target, prediction)
    matched = true & pred  # (B, T, C)
    step_s = step_seconds(bpm, steps_per_beat)
    if step_s.ndim and step_s.shape != (len(target),):
        raise ValueError(f"{step_s.size} tempos for {len(target)} windows")
    step_s = np.broadcast_to(step_s, (len(target),))  # (B,)
    n = int(matched.sum())
    if n == 0:  # nothing to compare: NaN rather than a flattering 0
        return {"velocity_mae": float("nan"), "timing_mae_ms": float("nan"), "n_matched_hits": 0}
    velocity_error = np.abs(prediction.velocities.astype(np.float64) - target.velocities)[matched]
    offset_error_steps = np.abs(prediction.offsets.astype(np.float64) - target.offsets)  # (B, T, C)
    offset_error_ms = offset_error_steps * (1000.0 * step_s)[:, None, None]
    return {
        "velocity_mae": float(velocity_error.mean()),
        "timing_mae_ms": float(offset_error_ms[matched].mean()),
        "n_matched_hits": n,
    }


def reconstruction_metrics(target: Patterns, prediction: Patterns, bpm: np.ndarray | float,
                           drum_names: tuple[str, ...] | None = None,
                           steps_per_beat: int = 4) -> dict[str, float]:
    """All reconstruction metrics as a flat dict; with drum_names also `hit_f1.<drum>`."""
    metrics: dict[str, float] = {}
    metrics.update(hit_scores(target, prediction))
    metrics.update(continuous_errors(target, prediction, bpm, steps_per_beat))
    if drum_names is not None:
        if len(drum_names) != target.n_drums:
            raise ValueError(f"{len(drum_names)} drum names for {target.n_drums} drum classes")
        for name, f1 in zip(drum_names, per_drum_hit_f1(target, prediction)):
            metrics[f"hit_f1.{name}"] = float(f1)
    return metrics


# --- per-window features ----------------------------------------------------------------

def step_density(patterns: Patterns) -> np.ndarray:
    """(B,) fraction of steps with at least one hit."""
    return np.mean(np.any(patterns.hits > HIT_THRESHOLD, axis=2), axis=1)


def voices_used(patterns: Patterns) -> np.ndarray:
    """(B,) number of drum classes played at least once."""
    return np.sum(np.any(patterns.hits > HIT_THRESHOLD, axis=1), axis=1).astype(np.float64)


def hit_offsets(patterns: Patterns) -> np.ndarray:
    """Offsets (step fractions) of every hit, flattened."""
    return patterns.offsets[patterns.hits > HIT_THRESHOLD].astype(np.float64)


def hit_velocities(patterns: Patterns) -> np.ndarray:
    """Velocities (0-1) of every hit, flattened."""
    return patterns.velocities[patterns.hits > HIT_THRESHOLD].astype(np.float64)


# --- overlap area (Yang & Lerch 2018) ---------------------------------------------------

def _scott_bandwidth(values: np.ndarray, min_bandwidth: float) -> float:
    """Scott's rule in 1-D (scipy.stats.gaussian_kde's default): std (ddof=1) * n^(-1/5)."""
    std = float(np.std(values, ddof=1)) if values.size > 1 else 0.0
    return max(std * values.size ** (-1 / 5), min_bandwidth)


def _kde(points: np.ndarray, counts: np.ndarray, bandwidth: float, grid: np.ndarray) -> np.ndarray:
    """Gaussian KDE of `points` repeated `counts` times, evaluated on grid."""
    z = (grid[:, None] - points[None, :]) / bandwidth  # (G, K)
    return np.exp(-0.5 * z * z) @ counts / (counts.sum() * bandwidth * np.sqrt(2 * np.pi))


def _compress(values: np.ndarray, lo: float, hi: float,
              max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values with counts; binned onto max_points bins when there are more.

    Distances between discrete features (step density, voices) take a few dozen distinct
    values, so the KDE over them is exact and cheap. Continuous features are binned; a bin is
    far narrower than the bandwidth (span / max_points vs roughly span / 50), so the
    estimate barely moves while the cost drops from O(n * grid) to O(max_points * grid).
    """
    points, counts = np.unique(np.round(values, 9), return_counts=True)
    if len(points) > max_points:
        counts, edges = np.histogram(values, bins=max_points, range=(lo, hi))
        points = (edges[:-1] + edges[1:]) / 2
        keep = counts > 0
        points, counts = points[keep], counts[keep]
    return points, counts.astype(np.float64)


def overlap_area(a: np.ndarray, b: np.ndarray, grid_points: int = 2001,
                 max_points: int = 1000) -> float:
    """Area under min(KDE(a), KDE(b)): 1 for the same distribution, 0 for disjoint ones.

    Unlike mgeval, which integrates only between the samples' min and max and so reports
    less than 1 for identical sets, the grid extends 5 bandwidths beyond the data.
    """
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    if a.size == 0 or b.size == 0:
        return float("nan")
    lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
    span = hi - lo
    if span == 0:  # both are the same single value
        return 1.0
    # A set of identical values has zero Scott bandwidth; a floor of 1 % of the pooled span
    # keeps its density a narrow bump that the grid still resolves (~18 grid points wide).
    min_bandwidth = 0.01 * span
    bw_a, bw_b = _scott_bandwidth(a, min_bandwidth), _scott_bandwidth(b, min_bandwidth)
    pad = 5 * max(bw_a, bw_b)
    grid = np.linspace(lo - pad, hi + pad, grid_points)
    density_a = _kde(*_compress(a, lo, hi, max_points), bw_a, grid)
    density_b = _kde(*_compress(b, lo, hi, max_points), bw_b, grid)
    lower = np.minimum(density_a, density_b)
    area = np.sum((lower[1:] + lower[:-1]) * np.diff(grid)) / 2  # trapezoid rule, any numpy
    return float(np.clip(area, 0.0, 1.0))


def _subsample(values: np.ndarray, max_size: int, rng: np.random.Generator) -> np.ndarray:
    if len(values) <= max_size:
        return values
    return values[np.sort(rng.choice(len(values), size=max_size, replace=False))]


def feature_overlap_area(real: np.ndarray, generated: np.ndarray, max_windows: int = 1000,
                         seed: int = 0) -> float:
    """Yang & Lerch overlap of intra-set (real-real) and inter-set (real-generated) distances.

    Each set is subsampled to max_windows with a seeded generator, so the result is
    deterministic and the pairwise distance matrix stays small (1000 x 1000).
    """
    rng = np.random.default_rng(seed)
    real = _subsample(np.asarray(real, np.float64).ravel(), max_windows, rng)
    generated = _subsample(np.asarray(generated, np.float64).ravel(), max_windows, rng)
    if len(real) < 2 or len(generated) < 1:
        return float("nan")
    intra = np.abs(real[:, None] - real[None, :])[~np.eye(len(real), dtype=bool)]  # i != j
    inter = np.abs(real[:, None] - generated[None, :]).ravel()
    return overlap_area(intra, inter)


# --- samples vs data ---------------------------------------------------------------------

def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator else float("nan")


def sample_metrics(data: Patterns, samples: Patterns, max_windows: int = 1000,
                   seed: int = 0) -> dict[str, float]:
    """How closely generated patterns match the data's statistics (ratios: 1 is perfect)."""
    data_offsets, sample_offsets = hit_offsets(data), hit_offsets(samples)
    data_velocities, sample_velocities = hit_velocities(data), hit_velocities(samples)

    def stat(fn, values):
        return float(fn(values)) if values.size else float("nan")

    metrics = {
        "offset_std_data": stat(np.std, data_offsets),
        "offset_std_samples": stat(np.std, sample_offsets),
        "mean_velocity_data": stat(np.mean, data_velocities),
        "mean_velocity_samples": stat(np.mean, sample_velocities),
        "step_density_data": float(step_density(data).mean()),
        "step_density_samples": float(step_density(samples).mean()),
        "voices_data": float(voices_used(data).mean()),
        "voices_samples": float(voices_used(samples).mean()),
    }
    metrics["offset_std_ratio"] = _ratio(metrics["offset_std_samples"], metrics["offset_std_data"])
    metrics["mean_velocity_ratio"] = _ratio(metrics["mean_velocity_samples"],
                                            metrics["mean_velocity_data"])
    metrics["overlap_step_density"] = feature_overlap_area(
        step_density(data), step_density(samples), max_windows, seed)
    metrics["overlap_voices"] = feature_overlap_area(
        voices_used(data), voices_used(samples), max_windows, seed)
    return metrics


# --- summary and table -------------------------------------------------------------------

@dataclass(frozen=True)
class Goal:
    """A quality goal: value must lie in [low, high]."""

    low: float = -np.inf
    high: float = np.inf

    def met(self, value: float) -> bool:
        return bool(self.low <= value <= self.high)  # NaN never meets a goal

    def __str__(self) -> str:
        if np.isfinite(self.low) and np.isfinite(self.high):
            return f"{self.low:g}–{self.high:g}"
        return f"≥ {self.low:g}" if np.isfinite(self.low) else f"≤ {self.high:g}"


# Keyed by metric name without its section prefix.
GOALS: dict[str, Goal] = {
    "hit_f1": Goal(low=0.95),
    "velocity_mae": Goal(high=0.06),
    "timing_mae_ms": Goal(high=6.0),
    "offset_std_ratio": Goal(low=0.8),
    "mean_velocity_ratio": Goal(low=0.9, high=1.1),
    "overlap_step_density": Goal(low=0.8),
    "overlap_voices": Goal(low=0.8),
}

RECONSTRUCTION_ROWS = ("hit_f1", "hit_precision", "hit_recall", "hit_accuracy", "velocity_mae",
                       "timing_mae_ms", "n_matched_hits")
SAMPLE_ROWS = ("offset_std_ratio", "offset_std_samples", "offset_std_data", "mean_velocity_ratio",
               "mean_velocity_samples", "mean_velocity_data", "overlap_step_density",
               "step_density_samples", "step_density_data", "overlap_voices", "voices_samples",
               "voices_data")


def summarize(target: Patterns | None = None, bpm: np.ndarray | float | None = None,
              reconstructions: dict[str, Patterns] | None = None,
              samples: Patterns | None = None, drum_names: tuple[str, ...] | None = None,
              steps_per_beat: int = 4, max_windows: int = 1000, seed: int = 0) -> dict[str, float]:
    """Flat dict `"<section>/<metric>" -> value` for JSON and the table.

    Sections are the keys of `reconstructions` (e.g. "teacher_forced", "free_running"),
    each scored against `target` at `bpm`, and "samples", scored against `target` as the data.
    """
    summary: dict[str, float] = {}
    for mode, prediction in (reconstructions or {}).items():
        if target is None or bpm is None:
            raise ValueError("reconstructions need the target patterns and their bpm")
        for name, value in reconstruction_metrics(target, prediction, bpm, drum_names,
                                                  steps_per_beat).items():
            summary[f"{mode}/{name}"] = value
    if samples is not None:
        if target is None:
            raise ValueError("samples need the data patterns to compare with")
        for name, value in sample_metrics(target, samples, max_windows, seed).items():
            summary[f"samples/{name}"] = value
    return summary


def _format_value(value: float) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "n/a"
    if float(value).is_integer() and abs(value) >= 10:
        return f"{int(value):d}"
    return f"{value:.3f}"


def _cell(name: str, value: float | None) -> str:
    if value is None:
        return ""
    goal = GOALS.get(name)
    mark = "" if goal is None else (" ✓" if goal.met(value) else " ✗")
    return _format_value(value) + mark


def format_table(summary: dict[str, float]) -> str:
    """Markdown: a reconstruction table (one column per mode) and a samples table, with goals."""
    sections: dict[str, dict[str, float]] = {}
    for key, value in summary.items():
        section, _, name = key.partition("/")
        sections.setdefault(section, {})[name] = value
    modes = [s for s in sections if s != "samples"]
    lines: list[str] = []
    if modes:
        header = " | ".join(m.replace("_", "-") for m in modes)
        lines += [f"| Reconstruction | {header} | Goal |", "|---|" + "---:|" * len(modes) + "---|"]
        for name in RECONSTRUCTION_ROWS:
            if not any(name in sections[m] for m in modes):
                continue
            cells = [_cell(name, sections[m].get(name)) for m in modes]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {GOALS.get(name, '')} |")
        drums = [n for n in sections[modes[0]] if n.startswith("hit_f1.")]
        for name in drums:
            cells = [_format_value(sections[m][name]) if name in sections[m] else "" for m in modes]
            lines.append(f"| {name} | " + " | ".join(cells) + " |  |")
    if "samples" in sections:
        if lines:
            lines.append("")
        lines += ["| Samples vs data | Value | Goal |", "|---|---:|---|"]
        for name in SAMPLE_ROWS:
            if name in sections["samples"]:
                value = sections["samples"][name]
                lines.append(f"| {name} | {_cell(name, value)} | {GOALS.get(name, '')} |")
    return "\n".join(lines) + "\n"
