"""Reconstruction of held-out windows by a shipped model, through the runtime (onnxruntime):
encode each window to its posterior mean, decode at temperature 0 and 1, and score the decoded
hits against the window's quantized hits with MusicVAE's per-step accuracy (a step is right only
if all its voices are) and hit F1.

This is the "sampled" column of MusicVAE's Table 1 for any exported model, GrooVAE included
(its teacher-forced column needs the torch run: `groove-train evaluate-musicvae`).

    python benchmarks/shipped_reconstruction.py --model groovae --data data_cache/gmd_4bar
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from groove_live.bundled import resolve_model
from groove_live.engine import Engine
from groove_live.pattern import Patterns
from groove_live.train.data import load_split
from groove_live.train.musicvae_eval import scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="groovae", help="bundled name or path")
    ap.add_argument("--data", required=True, help="a `groove-train prepare` cache of the model's bars")
    ap.add_argument("--split", default="test")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the numbers here")
    args = ap.parse_args()
    engine = Engine.load(resolve_model(args.model))
    patterns, _ = load_split(args.data, args.split)
    patterns.check_spec(engine.spec)
    real = patterns.hits
    decoded = {0.0: [], 1.0: []}
    for lo in range(0, len(patterns), args.batch):
        window = Patterns(*(a[lo:lo + args.batch] for a in
                            (patterns.hits, patterns.velocities, patterns.offsets)))
        mu, _ = engine.encode(window)
        for t in decoded:
            decoded[t].append(engine.decode(mu, temperature=t, seed=args.seed + lo).hits)
    spec = engine.spec
    result = {"model": str(args.model), "kind": spec.kind, "bars": spec.bars,
              "preset": spec.preset, "split": args.split, "windows": len(patterns)}
    print(f"{args.model}: {spec.kind}, {spec.bars} bars, preset {spec.preset}; "
          f"{len(patterns)} {args.split} windows; z = posterior mean")
    for t, parts in decoded.items():
        s = scores(real, np.concatenate(parts))
        result[f"T{t:g}"] = s
        print(f"  decoded at T={t:g}: per-step accuracy {s['step_accuracy']:.3f}, "
              f"hit F1 {s['hit_f1']:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
