"""Decode + humanize time per phrase of a MusicVAE drum model, as the live worker does it with
`serve --humanize` (Engine.decode of one latent, then tasks.groove_patterns), one onnxruntime
thread, wall time per phrase.

    python benchmarks/phrase_timing.py --model hierdec_drums_16bar --phrases 50
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from groove_live.bundled import resolve_model
from groove_live.engine import Engine
from groove_live.latent import random_latents
from groove_live.tasks import groove_patterns


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="hierdec_drums_16bar", help="bundled name or path")
    ap.add_argument("--humanize", default="humanize", help="bundled name or path")
    ap.add_argument("--phrases", type=int, default=50)
    args = ap.parse_args()
    engine = Engine.load(resolve_model(args.model))
    humanizer = Engine.load(resolve_model(args.humanize))
    rng = np.random.default_rng(0)
    decode_s, groove_s, windows = [], [], []
    for i in range(args.phrases + 2):
        z = random_latents(1, engine.spec.z_size, rng)
        t0 = time.perf_counter()
        phrase = engine.decode(z, temperature=1.0, seed=i)
        t1 = time.perf_counter()
        groove_patterns(humanizer, phrase, 1.0, i)
        t2 = time.perf_counter()
        if i >= 2:  # the first calls warm onnxruntime up
            decode_s.append(t1 - t0)
            groove_s.append(t2 - t1)
            windows.append(int(phrase.hits.reshape(-1, humanizer.spec.steps * phrase.n_drums)
                               .any(axis=1).sum()))

    def show(values) -> str:
        ms = np.asarray(values) * 1e3
        return f"p50 {np.median(ms):.1f} ms, p99 {np.percentile(ms, 99):.1f} ms, max {ms.max():.1f} ms"

    spec = engine.spec
    print(f"{spec.model_name} ({spec.kind}, {spec.bars} bars, preset {spec.preset}), "
          f"{args.phrases} phrases, 1 thread")
    print(f"  decode          {show(decode_s)}")
    print(f"  humanize        {show(groove_s)} (active 2-bar windows per phrase: "
          f"{min(windows)}..{max(windows)})")
    print(f"  decode+humanize {show(np.add(decode_s, groove_s))}")
    print("  one bar lasts 2000 ms at 120 BPM, 1200 ms at 200 BPM")


if __name__ == "__main__":
    main()
