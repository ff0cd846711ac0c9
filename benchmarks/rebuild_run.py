"""Rebuild a torch run folder from an exported GrooVAE (decoder + encoder ONNX), checked.

    .venv/bin/python benchmarks/rebuild_run.py --model groovae --out runs/groovae_bundled_rebuilt

For a shipped model whose training run is gone: the folder (config.json, spec.json, best.pt,
rebuild.json) is what `groove-train evaluate-musicvae --run` and `groove-export onnx --run` read.
An int8 export comes back with its quantized weights dequantized to fp32, so what is measured
on the folder is the shipped int8 weights (see export/rebuild.py for how, and what is checked).
Prints rebuild.json: the source, and the checks against onnxruntime.
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

from groove_live.bundled import resolve_model
from groove_live.engine import EngineError
from groove_live.export.rebuild import RebuildError, rebuild_run
from groove_live.export.verify import VerificationError


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="groovae", help="bundled GrooVAE name or decoder path")
    ap.add_argument("--out", required=True, help="run folder to write (a new one)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    try:
        record = rebuild_run(resolve_model(args.model), args.out)
    except (RebuildError, VerificationError, EngineError) as e:
        sys.exit(f"rebuild_run: {e}")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
