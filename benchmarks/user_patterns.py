"""Does a model reconstruct the patterns a live coder types? Prints numbers.

    .venv/bin/python benchmarks/user_patterns.py [--model NAME|PATH] [--patterns DIR]
        [--fit-rounds N] [--json FILE]

`groove-live interpolate` starts and ends on the model's decodes (temperature 0) of the user's
two patterns, from latents fitted to them (groove_live/latent_fit.py: a search around the
encoder's posterior), so when a model cannot reconstruct a typed pattern the morph starts
somewhere the user never wrote. GMD test windows do not show this: they are played by the
drummers the model learned from. These are hand-written, quantized 2-bar patterns in common
styles (benchmarks/patterns/*.txt), tiled to the model's phrase (4 bars for a 4-bar GrooVAE, 16
for a 16-bar model).

Per pattern: hit F1 over its (step, voice) cells and per-step accuracy (every voice of the step
right) of the fitted endpoint, what interpolate plays, then the means, beside the goal: mean
hit F1 >= 0.9. Beside them the hit F1 of the plain posterior mean (encode -> mu -> decode at
temperature 0, `--fit-rounds 0`), and the search's time per pattern. Any model kind with an
encoder (a GrooVAE, categorical or hierarchical export); torch-free, through the runtime Engine;
default: interpolate's default model.

Pattern files: one `voice steps` line per voice (the voice names of the model's spec, the step
strings of groove_live/step_pattern.py: 16 steps repeat for both bars, or 32 for two different
bars; `|` and spaces are ignored), `#` lines are comments; the first comment describes it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from groove_live.bundled import INTERPOLATE_MODEL, resolve_model
from groove_live.engine import Engine, EngineError
from groove_live.latent_fit import FIT_ROUNDS, fit_latents, hit_f1
from groove_live.pattern import Patterns
from groove_live.spec import ModelSpec
from groove_live.step_pattern import StepPatternError, parse_step_pattern

PATTERNS_DIR = Path(__file__).resolve().parent / "patterns"
PATTERN_BARS = 2  # every file is written as (up to) two bars
GOAL_F1 = 0.9


def read_pattern_file(path: Path) -> tuple[str, list[tuple[str, str]]]:
    """(description, [(voice, step string), ...]) of one pattern file."""
    description, pairs = "", []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            description = description or line.lstrip("# ")
            continue
        parts = line.split(None, 1)
        if len(parts) != 2:
            raise StepPatternError(f"{path.name}:{number}: expected `voice steps`")
        pairs.append((parts[0], parts[1]))
    return description, pairs


def load_patterns(folder: Path, spec: ModelSpec) -> list[tuple[str, str, Patterns]]:
    """(name, description, pattern in the spec's length) of every *.txt, by name. Each must be
    a 2-bar pattern: it is parsed at 2 bars first, then tiled to the model's phrase."""
    two_bars = ModelSpec(bars=PATTERN_BARS, steps_per_bar=spec.steps_per_bar, drums=spec.drums)
    if spec.steps % two_bars.steps:
        raise StepPatternError(f"a {spec.bars}-bar model: 2-bar patterns do not tile its phrase")
    found = []
    for path in sorted(folder.glob("*.txt")):
        description, pairs = read_pattern_file(path)
        try:
            parse_step_pattern(pairs, two_bars)  # longer than 2 bars is an error here
            pattern = parse_step_pattern(pairs, spec)
        except StepPatternError as e:
            raise StepPatternError(f"{path.name}: {e}") from None
        found.append((path.stem, description, pattern))
    if not found:
        raise StepPatternError(f"{folder}: no *.txt pattern files")
    return found


def endpoint_scores(engine: Engine, patterns: Patterns,
                    fit_rounds: int = FIT_ROUNDS) -> tuple[list[dict[str, float]], float]:
    """(per pattern: hit F1 and per-step accuracy of the fitted latent's decode at temperature 0,
    and the posterior mean's hit F1; seconds per pattern of the fit)."""
    t0 = time.perf_counter()
    fit = fit_latents(engine, patterns, rounds=fit_rounds)
    fit_s = (time.perf_counter() - t0) / len(patterns)
    out = engine.decode(fit.z, temperature=0.0)
    rows = []
    for i in range(len(patterns)):
        real, pred = patterns.hits[i] > 0.5, out.hits[i] > 0.5  # (T, C)
        rows.append({"hit_f1": hit_f1(real, pred),
                     "step_accuracy": float(np.all(real == pred, axis=-1).mean()),
                     "hits": int(real.sum()), "reconstructed_hits": int(pred.sum()),
                     "hit_f1_mean_latent": float(fit.mu_hit_f1[i])})
    return rows, fit_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None,
                        help=f"bundled model name or .onnx path (default: {INTERPOLATE_MODEL}, "
                             f"interpolate's default)")
    parser.add_argument("--patterns", type=Path, default=PATTERNS_DIR)
    parser.add_argument("--fit-rounds", type=int, default=FIT_ROUNDS,
                        help="rounds of the endpoint search (0: the posterior mean)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    try:
        path = resolve_model(args.model, INTERPOLATE_MODEL)
        engine = Engine.load(path)
        if engine.task or not engine.has_encoder:
            raise EngineError(f"{path}: needs a sampling model with an encoder beside it")
        named = load_patterns(args.patterns, engine.spec)
    except (EngineError, StepPatternError, OSError) as e:
        print(f"user_patterns: {e}", file=sys.stderr)
        return 2
    rows, fit_s = endpoint_scores(engine, Patterns.concat([p for _, _, p in named]),
                                  args.fit_rounds)
    spec = engine.spec
    tiled = f", tiled to {spec.bars} bars," if spec.bars != PATTERN_BARS else ""
    print(f"Endpoint reconstruction (latent fitted in {args.fit_rounds} rounds -> decode at "
          f"temperature 0, as `groove-live interpolate` does) of {len(named)} hand-written "
          f"2-bar patterns{tiled} by {path.name} ({spec.kind}, {spec.run_id or '?'}).")
    print()
    print("| pattern | hits | reconstructed hits | hit F1 | step accuracy | "
          "hit F1 of the posterior mean |")
    print("|---|---|---|---|---|---|")
    for (name, _, _), row in zip(named, rows):
        print(f"| {name} | {row['hits']} | {row['reconstructed_hits']} | {row['hit_f1']:.3f} | "
              f"{row['step_accuracy']:.3f} | {row['hit_f1_mean_latent']:.3f} |")
    mean_f1 = float(np.mean([r["hit_f1"] for r in rows]))
    mean_acc = float(np.mean([r["step_accuracy"] for r in rows]))
    mean_mu = float(np.mean([r["hit_f1_mean_latent"] for r in rows]))
    print(f"| mean | | | {mean_f1:.3f} | {mean_acc:.3f} | {mean_mu:.3f} |")
    print()
    print(f"endpoint search: {fit_s:.2f} s per pattern ({os.cpu_count()} cores, onnxruntime "
          f"default threads)")
    verdict = "met" if mean_f1 >= GOAL_F1 else "missed"
    print(f"goal: mean endpoint hit F1 >= {GOAL_F1}: {verdict} ({mean_f1:.3f})")
    if args.json:
        args.json.write_text(json.dumps({
            "model": str(path), "kind": spec.kind, "bars": spec.bars, "weights": spec.run_id,
            "fit_rounds": args.fit_rounds, "fit_s_per_pattern": fit_s,
            "patterns": {name: row for (name, _, _), row in zip(named, rows)},
            "mean_hit_f1": mean_f1, "mean_step_accuracy": mean_acc, "goal_hit_f1": GOAL_F1,
            "mean_hit_f1_mean_latent": mean_mu},
            indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
