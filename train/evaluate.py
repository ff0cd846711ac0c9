"""`groove-train evaluate`: score a run on a split (reconstructions and prior samples).

Writes `evaluation_<split>.json` (every number) and `evaluation_<split>.md` (the table with
the quality goals) into the run folder, and with a plot folder piano-roll PNGs.

Reconstructions use z = mu and greedy hits (logit > 0), so the scores are deterministic and
measure the model rather than the dice: "teacher_forced" feeds the true previous step,
"free_running" feeds the model's own previous choices (MusicVAE's Table 1 columns).
Samples draw z ~ N(0, I) and hits at the given temperature, like the live runtime.

`evaluate_model_file` scores an exported ONNX model through the runtime's Engine instead: what
ships (an int8 decoder, say) rather than the torch weights it came from. The exported decoder
only runs free, so that table has no teacher-forced column.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from groove_live.pattern import Patterns
from groove_live.spec import ModelSpec

from . import metrics
from .data import DataError, load_split
from .model import GrooVAE
from .run import load_model, write_json_atomic

def _device(device: str) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def _to_patterns(hits: torch.Tensor, velocities: torch.Tensor, offsets: torch.Tensor) -> Patterns:
    # cleaned(): teacher-forced decoding returns unmasked means; masking them by the hits
    # makes every mode look like a played pattern (and changes no matched-hit value).
    return Patterns(hits.float().cpu().numpy(), velocities.float().cpu().numpy(),
                    offsets.float().cpu().numpy()).cleaned()


def _model_device(model: GrooVAE) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def reconstruct(model: GrooVAE, patterns: Patterns, teacher_forced: bool,
                batch_size: int = 512) -> Patterns:
    """Encode -> z = mu -> decode with greedy hits, batch by batch, on the model's device."""
    device = _model_device(model)
    out = []
    for start in range(0, len(patterns), batch_size):
        x = torch.from_numpy(patterns[start:start + batch_size].to_flat()).to(device)  # (B, T, 3C)
        mu, _ = model.encode(x)  # (B, Z)
        # A generator keeps the global RNG untouched (greedy decoding draws unused noise).
        generator = torch.Generator(device=device).manual_seed(0)
        decoded = model.decode(mu, targets=x if teacher_forced else None, greedy=True,
                               generator=generator)
        out.append(_to_patterns(*decoded))
    return Patterns.concat(out)


@torch.inference_mode()
def sample_prior(model: GrooVAE, n: int, temperature: float = 1.0, seed: int = 0,
                 batch_size: int = 512) -> Patterns:
    """n patterns from z ~ N(0, I), hits at temperature, seeded, on the model's device."""
    device = _model_device(model)
    generator = torch.Generator(device=device).manual_seed(seed)
    out = []
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        z = torch.randn((b, model.cfg.z_size), generator=generator, device=device)  # (B, Z)
        out.append(_to_patterns(*model.decode(z, temperature=temperature, generator=generator)))
    return Patterns.concat(out)


def evaluate_model(model: GrooVAE, spec: ModelSpec, patterns: Patterns, bpm: np.ndarray,
                   n_samples: int = 1024, temperature: float = 1.0, seed: int = 0,
                   batch_size: int = 512) -> tuple[dict[str, float], dict[str, Patterns], Patterns]:
    """(flat metrics, reconstructions by mode, samples) of a model on windows at their bpm."""
    patterns.check_spec(spec)
    if len(patterns) == 0:
        raise DataError("the split has no windows to evaluate")
    if len(bpm) != len(patterns):
        raise ValueError(f"{len(bpm)} tempos for {len(patterns)} windows")
    model.eval()  # dropout off, whatever state the caller left it in
    reconstructions = {
        mode: reconstruct(model, patterns, teacher_forced, batch_size)
        for mode, teacher_forced in (("teacher_forced", True), ("free_running", False))
    }
    samples = sample_prior(model, n_samples, temperature, seed, batch_size)
    summary = metrics.summarize(patterns, bpm, reconstructions, samples, spec.drum_names,
                                spec.steps_per_beat, seed=seed)
    return summary, reconstructions, samples


def engine_reconstruct(engine, patterns: Patterns, batch_size: int = 512) -> Patterns:
    """Free-running reconstructions by the runtime Engine, as `reconstruct` does in torch:
    z = mu, greedy hits (temperature 0), velocity and offset at their means (zero noise)."""
    out = []
    for start in range(0, len(patterns), batch_size):
        batch = patterns[start:start + batch_size]
        mu, _ = engine.encode(batch)  # (B, Z)
        hit_noise, cont_noise = engine.noise(len(batch), np.random.default_rng(0))
        out.append(engine.decode_noise(mu, 0.0, hit_noise, np.zeros_like(cont_noise)).cleaned())
    return Patterns.concat(out)


def evaluate_model_file(model_path: str | Path, dataset_dir: str | Path, split: str = "test",
                        n_samples: int = 1024, temperature: float = 1.0, seed: int = 0,
                        batch_size: int = 512, out_dir: str | Path | None = None) -> dict:
    """Evaluate an exported model file with the runtime Engine (free-running reconstructions
    and prior samples); with out_dir, write evaluation_<split>.json/.md there."""
    from groove_live.engine import Engine

    t0 = time.perf_counter()
    engine = Engine.load(model_path)
    if not engine.has_encoder:
        raise DataError(f"{model_path}: no encoder beside it, so nothing to reconstruct with")
    spec = engine.spec
    patterns, bpm = load_split(dataset_dir, split)
    try:
        patterns.check_spec(spec)
    except ValueError as e:
        raise DataError(f"{dataset_dir}: {e}") from None
    if len(patterns) == 0:
        raise DataError("the split has no windows to evaluate")
    reconstructions = {"free_running": engine_reconstruct(engine, patterns, batch_size)}
    samples = engine.sample(n_samples, temperature, seed)
    summary = metrics.summarize(patterns, bpm, reconstructions, samples, spec.drum_names,
                                spec.steps_per_beat, seed=seed)
    result = {
        "model": str(model_path), "variant": engine.variant, "weights": spec.run_id,
        "dataset": str(dataset_dir), "split": split, "n_windows": len(patterns),
        "n_samples": n_samples, "temperature": temperature, "seed": seed,
        "continuous_head": spec.continuous_head, "metrics": summary,
        "goals": {name: str(goal) for name, goal in metrics.GOALS.items()}, "files": [],
        "seconds": round(time.perf_counter() - t0, 2),
    }
    table = (f"Evaluation of `{Path(model_path).name}` ({engine.variant}, from {spec.run_id}, "
             f"{spec.continuous_head} head) with the runtime engine on the {split} split: "
             f"{len(patterns)} windows, {n_samples} prior samples at temperature "
             f"{temperature:g}, seed {seed}.\n\n" + metrics.format_table(summary))
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        json_path, md_path = (out_dir / f"evaluation_{split}.{ext}" for ext in ("json", "md"))
        result["files"] = [str(json_path), str(md_path)]
        md_path.write_text(table)
        write_json_atomic(json_path, json_safe(result))
    return {**result, "table": table}


def json_safe(value):
    # json.dumps would write NaN, which strict JSON readers refuse.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    return value


def _plot(plot_dir: Path, split: str, spec: ModelSpec, patterns: Patterns, bpm: np.ndarray,
          reconstructions: dict[str, Patterns], samples: Patterns, n_plot: int) -> list[Path]:
    from groove_live.plot import grid_png

    # Spread over the split: neighbouring windows overlap by all but one bar.
    windows = np.unique(np.linspace(0, len(patterns) - 1, n_plot).round().astype(int))
    items = []
    for i in windows:
        items.append((f"{split} window {i} ({bpm[i]:.0f} bpm)", patterns[int(i)]))
        items += [(f"{mode.replace('_', '-')} reconstruction", r[int(i)])
                  for mode, r in reconstructions.items()]
    recon_png = grid_png(items, spec, plot_dir / f"evaluation_{split}_reconstructions.png",
                         columns=1 + len(reconstructions))
    sample_items = [(f"sample {i}", samples[i]) for i in range(min(n_plot, len(samples)))]
    samples_png = grid_png(sample_items, spec, plot_dir / f"evaluation_{split}_samples.png",
                           columns=2)
    return [recon_png, samples_png]


def evaluate_run(run_dir: str | Path, dataset_dir: str | Path, split: str = "test",
                 n_samples: int = 1024, temperature: float = 1.0,
                 plot_dir: str | Path | None = None, device: str = "auto", seed: int = 0,
                 batch_size: int = 512, which: str = "best", n_plot: int = 4) -> dict:
    """Evaluate a run folder's weights on a prepared split; write JSON, table and PNGs.

    With plot_dir: n_plot windows beside their two reconstructions, and n_plot samples.

    Returns the JSON content plus "table" (the markdown) for the command line to print.
    """
    if plot_dir is not None:
        from groove_live.plot import require_matplotlib
        require_matplotlib()  # fail before minutes of decoding, not after
    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    model, _, spec = load_model(run_dir, which=which)
    model.to(_device(device))
    patterns, bpm = load_split(dataset_dir, split)
    try:
        patterns.check_spec(spec)
    except ValueError as e:
        raise DataError(f"{dataset_dir}: {e}") from None
    summary, reconstructions, samples = evaluate_model(
        model, spec, patterns, bpm, n_samples, temperature, seed, batch_size)

    result = {
        "run": str(run_dir), "weights": spec.run_id, "dataset": str(dataset_dir),
        "split": split, "n_windows": len(patterns), "n_samples": n_samples,
        "temperature": temperature, "seed": seed, "continuous_head": spec.continuous_head,
        "metrics": summary, "goals": {name: str(goal) for name, goal in metrics.GOALS.items()},
        "files": [],
    }
    if plot_dir is not None:
        paths = _plot(Path(plot_dir), split, spec, patterns, bpm, reconstructions, samples,
                      n_plot)
        result["files"] += [str(p) for p in paths]
    result["seconds"] = round(time.perf_counter() - t0, 2)

    table = (f"Evaluation of `{spec.run_id}` ({spec.continuous_head} head) on the {split} "
             f"split: {len(patterns)} windows, {n_samples} prior samples at temperature "
             f"{temperature:g}, seed {seed}.\n\n" + metrics.format_table(summary))
    json_path = run_dir / f"evaluation_{split}.json"
    md_path = run_dir / f"evaluation_{split}.md"
    result["files"] += [str(json_path), str(md_path)]
    md_path.write_text(table)
    write_json_atomic(json_path, json_safe(result))
    return {**result, "table": table}
