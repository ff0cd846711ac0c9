"""`groove-train evaluate-musicvae`: MusicVAE's Table 1 for our drum models, and song structure.

Per-step accuracy is the metric of the MusicVAE paper's Table 1: the share of (window, step)
pairs whose whole step is right, every voice at once (with 9 voices a step is one of 512
classes, so one wrong hi-hat makes the step wrong). Reconstructions start from z = the
posterior mean mu, in three modes:

- teacher_forced: step t is fed the true step t - 1; the step is the most likely class.
- greedy: free-running (fed the model's own previous step), temperature 0 (most likely class).
- sampled: free-running at a temperature (1 = the paper's "sampling" column).

Hit F1 over every (window, step, voice) cell stands beside each, since a step can be wrong
by one voice or by all of them. A GrooVAE run (per-voice hits, velocities and timing) is scored
the same way on its hits alone (teacher-forced and greedy: logit > 0; sampled: a Bernoulli
draw per voice at the temperature), against the windows' hits, so the kinds compare.

Baselines, which need no model: the train split's most common class at each step position,
and all silence (a model below them has learned nothing).

Song structure (`--structure N`) compares N prior samples with the split's real windows:
- self-similarity: the mean over every pair of bars in a phrase of the Jaccard similarity of
  their step x voice hit grids (|A and B| / |A or B|; two silent bars count as identical).
  A phrase of one repeated bar scores 1; a drummer's phrase repeats with variations.
- fill share: the share of bars with more hits than their phrase's median bar.
A model that keeps the phrase's shape sits close to the real windows on both.

The metric functions are numpy; only the model calls need torch.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from groove_live.drum_classes import classes_to_hits, hits_to_classes
from groove_live.pattern import Patterns
from groove_live.spec import CATEGORICAL_KINDS, ModelSpec

from . import metrics
from .data import DataError, load_split
from .evaluate import json_safe
from .run import load_model, write_json_atomic

# The MusicVAE paper's Table 1 for drums (per-step accuracy, teacher-forced / sampled), with
# much larger models trained on far more MIDI than GMD: a reference for the ordering (2-bar
# above 16-bar, hierarchical above flat, sampling below teacher forcing), not a target.
PAPER_TABLE1 = {
    "2-bar drums, flat": {"teacher_forced": 0.979, "sampled": 0.917},
    "16-bar drums, flat": {"teacher_forced": 0.884, "sampled": 0.549},
    "16-bar drums, hierarchical": {"teacher_forced": 0.928, "sampled": 0.879},
}
KINDS_SCORED = ("groovae", *CATEGORICAL_KINDS)
SIMILARITY_MEASURE = ("Jaccard similarity of two bars' step x voice hit grids "
                      "(|A and B| / |A or B|, two silent bars = 1), mean over all pairs of bars "
                      "in a phrase")
FILL_RULE = "a bar with more hits than the median bar of its phrase"


class MusicVAEEvalError(ValueError):
    """A run this command cannot score (one clear line)."""


# --- metrics (numpy) ----------------------------------------------------------------------

def _hit_mask(hits: np.ndarray) -> np.ndarray:
    return np.asarray(hits) > metrics.HIT_THRESHOLD


def step_accuracy(real_hits: np.ndarray, pred_hits: np.ndarray) -> float:
    """Share of (window, step) pairs where every voice's hit is right: (N, T, C) each."""
    real, pred = _hit_mask(real_hits), _hit_mask(pred_hits)
    if real.shape != pred.shape:
        raise ValueError(f"real and predicted shapes differ: {real.shape} vs {pred.shape}")
    if real.size == 0:
        return float("nan")
    return float(np.all(real == pred, axis=-1).mean())


def hit_f1(real_hits: np.ndarray, pred_hits: np.ndarray) -> float:
    """Micro hit F1 over every (window, step, voice) cell."""
    real = np.asarray(real_hits, np.float32)
    pred = np.asarray(pred_hits, np.float32)
    zeros_r, zeros_p = np.zeros_like(real), np.zeros_like(pred)
    return metrics.hit_scores(Patterns(real, zeros_r, zeros_r),
                              Patterns(pred, zeros_p, zeros_p))["hit_f1"]


def scores(real_hits: np.ndarray, pred_hits: np.ndarray) -> dict[str, float]:
    return {"step_accuracy": step_accuracy(real_hits, pred_hits),
            "hit_f1": hit_f1(real_hits, pred_hits)}


def most_common_classes(hits: np.ndarray) -> np.ndarray:
    """(N, T, C) hits -> (T,) the most common class at each step position (ties: the lower)."""
    classes = hits_to_classes(hits)  # (N, T)
    n_classes = 1 << np.asarray(hits).shape[-1]
    return np.array([np.bincount(classes[:, t], minlength=n_classes).argmax()
                     for t in range(classes.shape[1])], np.int64)


def baseline_hits(classes: np.ndarray, n: int, n_voices: int) -> np.ndarray:
    """The same (T,) classes for each of n windows, as (n, T, C) hits."""
    return np.broadcast_to(classes_to_hits(classes, n_voices), (n, len(classes), n_voices))


def _bar_grids(hits: np.ndarray, steps_per_bar: int) -> np.ndarray:
    """(N, T, C) -> (N, bars, steps_per_bar * C) float hit grids."""
    h = _hit_mask(hits)
    n, t, c = h.shape
    if t % steps_per_bar:
        raise ValueError(f"{t} steps are not whole bars of {steps_per_bar}")
    return h.reshape(n, t // steps_per_bar, steps_per_bar * c).astype(np.float64)


def bar_self_similarity(hits: np.ndarray, steps_per_bar: int) -> np.ndarray:
    """(N,) per phrase: mean Jaccard similarity over all pairs of distinct bars; NaN for a
    one-bar phrase (no pair)."""
    grids = _bar_grids(hits, steps_per_bar)
    bars = grids.shape[1]
    if bars < 2:
        return np.full(len(grids), np.nan)
    inter = grids @ grids.transpose(0, 2, 1)  # (N, bars, bars)
    size = grids.sum(axis=-1)
    union = size[:, :, None] + size[:, None, :] - inter
    jaccard = np.where(union > 0, inter / np.maximum(union, 1.0), 1.0)
    upper = np.triu_indices(bars, k=1)
    return jaccard[:, upper[0], upper[1]].mean(axis=-1)


def fill_bars(hits: np.ndarray, steps_per_bar: int) -> np.ndarray:
    """(N, bars) bool: bars with more hits than their phrase's median bar."""
    counts = _bar_grids(hits, steps_per_bar).sum(axis=-1)  # (N, bars)
    return counts > np.median(counts, axis=1, keepdims=True)


def structure_summary(hits: np.ndarray, steps_per_bar: int) -> dict[str, float]:
    """Self-similarity (mean, std over phrases), share of fill bars, hits per bar."""
    if len(hits) == 0:
        raise ValueError("no phrases to measure")
    similarity = bar_self_similarity(hits, steps_per_bar)
    grids = _bar_grids(hits, steps_per_bar)
    return {"self_similarity": float(np.mean(similarity)),
            "self_similarity_std": float(np.std(similarity)),
            "fill_share": float(fill_bars(hits, steps_per_bar).mean()),
            "hits_per_bar": float(grids.sum(axis=-1).mean()),
            "n_phrases": int(len(hits))}


def spread_indices(n: int, most: int | None) -> np.ndarray:
    """All of range(n), or `most` indices spread evenly over it (neighbouring windows overlap
    by all but one bar, so the first `most` would be a few performances only)."""
    if most is None or most >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, most).round().astype(np.int64))


def paper_anchor(spec: ModelSpec) -> str | None:
    """The Table 1 row of this model's kind and length, if the paper has one."""
    if spec.kind == "categorical" and spec.bars == 2:
        return "2-bar drums, flat"
    if spec.kind == "categorical" and spec.bars == 16:
        return "16-bar drums, flat"
    if spec.kind == "hierarchical" and spec.bars == 16:
        return "16-bar drums, hierarchical"
    return None


# --- the model's side (torch) ---------------------------------------------------------------

def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def teacher_forced_hits(model, spec: ModelSpec, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """(B, T, C) most likely hits of each step given the true previous steps."""
    if spec.kind in CATEGORICAL_KINDS:
        logits = model.teacher_logits(z, x[..., :spec.n_drums])
        return model.decoder.bits[logits.argmax(dim=-1)]
    return model.decode(z, targets=x, greedy=True)[0]


@torch.no_grad()
def free_running_hits(model, spec: ModelSpec, z: torch.Tensor, temperature: float,
                      generator: torch.Generator) -> torch.Tensor:
    """(B, T, C) hits decoded from z alone, at temperature (0: the most likely)."""
    b, device = z.shape[0], z.device
    if spec.kind in CATEGORICAL_KINDS:
        noise = torch.rand(spec.io_shapes(b)["decoder_inputs"]["hit_noise"], generator=generator,
                           device=device)
        t = torch.full((b,), float(temperature), device=device)
        return model.generate_hits(z, t, noise)
    if temperature == 0:
        return model.decode(z, greedy=True, generator=generator)[0]
    return model.decode(z, temperature=temperature, generator=generator)[0]


@torch.no_grad()
def reconstructions(model, spec: ModelSpec, patterns: Patterns, temperature: float,
                    seed: int = 0, batch_size: int = 256) -> dict[str, np.ndarray]:
    """Hits (N, T, C) of the three modes, each from z = mu, batch by batch."""
    device = _device_of(model)
    generator = torch.Generator(device=device).manual_seed(seed)
    modes = ("teacher_forced", "greedy", "sampled")
    out: dict[str, list[np.ndarray]] = {m: [] for m in modes}
    for start in range(0, len(patterns), batch_size):
        batch = patterns[start:start + batch_size]
        x = torch.from_numpy(model.training_inputs(batch, spec)).to(device)
        mu, _ = model.encode(x)
        got = {"teacher_forced": teacher_forced_hits(model, spec, x, mu),
               "greedy": free_running_hits(model, spec, mu, 0.0, generator),
               "sampled": free_running_hits(model, spec, mu, temperature, generator)}
        for mode in modes:
            out[mode].append(got[mode].float().cpu().numpy())
    return {mode: np.concatenate(parts) for mode, parts in out.items()}


@torch.no_grad()
def prior_samples(model, spec: ModelSpec, n: int, temperature: float, seed: int = 0,
                  batch_size: int = 256) -> np.ndarray:
    """(n, T, C) hits of phrases from z ~ N(0, I) at temperature."""
    device = _device_of(model)
    generator = torch.Generator(device=device).manual_seed(seed)
    parts = []
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        z = torch.randn((b, spec.z_size), generator=generator, device=device)
        parts.append(free_running_hits(model, spec, z, temperature, generator).float().cpu()
                     .numpy())
    return np.concatenate(parts)


# --- the command ----------------------------------------------------------------------------

def _fmt(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"


def format_table(result: dict) -> str:
    t = result["temperature"]
    lines = [
        f"Per-step accuracy (every voice of the step right) and hit F1 of `{result['weights']}` "
        f"({result['kind']}, {result['bars']} bars) on {result['n_windows']} {result['split']} "
        f"windows of {result['dataset']}; z = posterior mean, seed {result['seed']}.",
        "",
        f"| | teacher-forced acc | F1 | greedy (T=0) acc | F1 | sampled (T={t:g}) acc | F1 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in result["rows"].items():
        cells = []
        for mode in ("teacher_forced", "greedy", "sampled"):
            cells += [_fmt(row[mode]["step_accuracy"]), _fmt(row[mode]["hit_f1"])]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "MusicVAE paper, Table 1 (drums, teacher-forced / sampled; far larger models "
              "and training corpus than ours: compare the ordering, not the digits):"]
    for name, row in result["paper_table1"].items():
        mark = "  <- this model's row" if name == result["paper_anchor"] else ""
        lines.append(f"- {name}: {row['teacher_forced']:.3f} / {row['sampled']:.3f}{mark}")
    structure = result.get("structure")
    if structure:
        m, g = structure["model"], structure["gmd"]
        lines += [
            "",
            f"Song structure: {m['n_phrases']} prior samples at T={structure['temperature']:g} "
            f"vs {g['n_phrases']} real {result['split']} windows.",
            f"self-similarity: {structure['similarity_measure']}; fill: {structure['fill_rule']}.",
            "",
            "| | self-similarity (std) | fill share | hits per bar |",
            "|---|---|---|---|",
        ]
        for name, s in (("model samples", m), ("GMD windows", g)):
            lines.append(f"| {name} | {_fmt(s['self_similarity'])} "
                         f"({_fmt(s['self_similarity_std'])}) | {_fmt(s['fill_share'])} | "
                         f"{s['hits_per_bar']:.1f} |")
    return "\n".join(lines)


def _load_windows(dataset_dir, split: str, spec: ModelSpec) -> Patterns:
    patterns, _ = load_split(dataset_dir, split)
    try:
        patterns.check_spec(spec)
    except ValueError as e:
        raise DataError(f"{dataset_dir}: {e} (a {spec.bars}-bar model needs a "
                        f"`groove-train prepare --bars {spec.bars}` cache)") from None
    return patterns


def evaluate_musicvae(run_dir: str | Path, dataset_dir: str | Path, split: str = "test",
                      temperature: float = 1.0, seed: int = 0, max_windows: int | None = None,
                      structure: int = 0, batch_size: int = 256, which: str = "best",
                      device: str = "cpu", out: str | Path | None = None) -> dict:
    """Score a run (categorical, hierarchical or GrooVAE) on a cached split; with `structure`
    > 0 also compare that many prior phrases' structure with the split's. Returns the JSON
    content plus "table"; with `out`, writes the JSON there."""
    if temperature < 0 or not math.isfinite(temperature):
        raise MusicVAEEvalError(f"temperature must be finite and >= 0, got {temperature}")
    if max_windows is not None and max_windows < 1:
        raise MusicVAEEvalError("--max-windows must be at least 1")
    if structure < 0:
        raise MusicVAEEvalError("--structure must be 0 or more phrases")
    t0 = time.perf_counter()
    model, _, spec = load_model(run_dir, which=which)
    if spec.kind not in KINDS_SCORED:
        raise MusicVAEEvalError(
            f"{run_dir}: a {spec.kind!r} model; this command scores sampling drum models "
            f"({', '.join(KINDS_SCORED)}) (task models: groove-train evaluate-task)")
    model.to(torch.device(device)).eval()
    windows = _load_windows(dataset_dir, split, spec)
    if len(windows) == 0:
        raise DataError(f"{dataset_dir}: the {split} split has no windows to evaluate")
    chosen = windows[spread_indices(len(windows), max_windows)]
    real = (chosen.hits > metrics.HIT_THRESHOLD).astype(np.float32)

    recon = reconstructions(model, spec, chosen, temperature, seed, batch_size)
    train = _load_windows(dataset_dir, "train", spec)
    baselines = {
        "baseline: train's most common class per step": baseline_hits(
            most_common_classes(train.hits), len(real), spec.n_drums),
        "baseline: all silent": np.zeros_like(real),
    }
    rows = {"model": {mode: scores(real, hits) for mode, hits in recon.items()}}
    for name, hits in baselines.items():
        s = scores(real, hits)  # no model, no decoding mode: one row of equal columns
        rows[name] = {mode: s for mode in recon}

    result = {
        "run": str(run_dir), "weights": spec.run_id, "kind": spec.kind, "bars": spec.bars,
        "dataset": str(dataset_dir), "split": split, "n_windows": int(len(real)),
        "n_windows_in_split": int(len(windows)), "temperature": temperature, "seed": seed,
        "metric": "per-step accuracy: share of steps with every voice right (MusicVAE Table 1)"
                  "; hit F1 over every (window, step, voice) cell",
        "rows": rows, "paper_table1": PAPER_TABLE1, "paper_anchor": paper_anchor(spec),
    }
    if structure:
        samples = prior_samples(model, spec, structure, temperature, seed, batch_size)
        result["structure"] = {
            "temperature": temperature, "similarity_measure": SIMILARITY_MEASURE,
            "fill_rule": FILL_RULE,
            "model": structure_summary(samples, spec.steps_per_bar),
            "gmd": structure_summary(windows.hits, spec.steps_per_bar),
        }
    result["seconds"] = round(time.perf_counter() - t0, 2)
    table = format_table(result)
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out, json_safe(result))
    return {**result, "table": table}
