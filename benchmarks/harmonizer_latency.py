r"""Harmonizer latency: onnxruntime Engine.accompany of one 2-bar melody window (batch 1, one
intra-op thread), and groove_live.accompany.harmonize of a 16-bar melody (transposition, eight
windows, range folding), each as CPU and wall ms p50/p99 beside the goal (p99 <= 10 ms per
window on one core: a window is asked for a bar before it plays, but it holds the live worker).

CPU ms is this thread's CPU time, which leaves out the time other processes hold the core, so
it is the steadier number on a shared machine; wall ms is what a live coder waits.

Which model: --model PATH (an exported harmonizer), else a randomly initialised export of the
chorale_wgan_gp_cpu preset in a temporary folder (speed does not depend on the weights' values):

    .venv/bin/python benchmarks/harmonizer_latency.py
    .venv/bin/python benchmarks/harmonizer_latency.py \
        --model tests/fixtures/toy_chorale_harmonizer.onnx
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import click
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # decode_latency beside this file
from decode_latency import _cpu_name, _load, _random_preset_run, _times  # noqa: E402

GOAL_P99_MS = 10.0
DEFAULT_PRESET = "chorale_wgan_gp_cpu"
LONG_BARS = 16
# A soprano line inside Bach's soprano range: a C major scale up and down in quarter notes, with
# a rest at the end of each bar, repeated to the length needed.
SCALE = (60, 62, 64, 65, 67, 69, 71, 72, 74, 72, 71, 69, 67, 65, 64, 62)


def melody(steps: int, low: int) -> np.ndarray:
    """(steps,) quarter-note scale pitches from `low` up, REST on each bar's last 16th."""
    quarters = np.array(SCALE) - SCALE[0] + low
    m = np.repeat(np.resize(quarters, -(-steps // 4)), 4)[:steps]
    m[15::16] = -1
    return m


def _stats(wall: np.ndarray, cpu: np.ndarray) -> dict[str, float]:
    return {"wall_p50_ms": 1e3 * float(np.percentile(wall, 50)),
            "wall_p99_ms": 1e3 * float(np.percentile(wall, 99)),
            "cpu_p50_ms": 1e3 * float(np.percentile(cpu, 50)),
            "cpu_p99_ms": 1e3 * float(np.percentile(cpu, 99))}


def measure(model_path: Path, runs: int, threads: int) -> dict:
    from groove_live.accompany import harmonize
    from groove_live.chorale import VOICE_RANGES
    from groove_live.engine import Engine

    engine = Engine.load(model_path, intra_op_threads=threads)
    steps = engine.spec.steps
    low = VOICE_RANGES["soprano"][0] + 2
    window = melody(steps, low)[None]
    long = melody(LONG_BARS * 16, low)
    seeds = iter(range(10 ** 9))  # a new noise draw per call, as live use makes
    one = _stats(*_times(lambda: engine.accompany(window, seed=next(seeds)), runs))
    phrase = _stats(*_times(lambda: harmonize(engine, long, seed=next(seeds)),
                            max(10, runs // 8)))
    return {"model": str(model_path), "what": engine.what, "window_steps": steps,
            "threads": threads, "runs": runs, "window": one, f"melody_{LONG_BARS}_bars": phrase,
            "goal_window_p99_ms": GOAL_P99_MS, "cpu": _cpu_name(), "load_1min": _load()}


def report(r: dict) -> str:
    w, p = r["window"], r[f"melody_{LONG_BARS}_bars"]
    ok = "meets" if w["cpu_p99_ms"] <= GOAL_P99_MS else "MISSES"
    return "\n".join([
        f"{r['model']} ({r['what']}), {r['threads']} thread(s), {r['cpu']}, load {r['load_1min']}",
        f"accompany 1 window ({r['window_steps']} steps), {r['runs']} runs: CPU p50 "
        f"{w['cpu_p50_ms']:.2f} ms p99 {w['cpu_p99_ms']:.2f} ms; wall p50 {w['wall_p50_ms']:.2f} "
        f"ms p99 {w['wall_p99_ms']:.2f} ms ({ok} the CPU p99 <= {GOAL_P99_MS:g} ms goal)",
        f"harmonize {LONG_BARS} bars: CPU p50 {p['cpu_p50_ms']:.2f} ms p99 {p['cpu_p99_ms']:.2f} "
        f"ms; wall p50 {p['wall_p50_ms']:.2f} ms p99 {p['wall_p99_ms']:.2f} ms"])


@click.command()
@click.option("--model", "model_path", type=click.Path(dir_okay=False, exists=True),
              help="An exported harmonizer; default: random weights of chorale_wgan_gp_cpu.")
@click.option("--preset", default=DEFAULT_PRESET, show_default=True,
              help="Without --model: the preset whose random-weights export is timed.")
@click.option("--runs", default=300, show_default=True, type=click.IntRange(min=10),
              help="Timed one-window calls (the 16-bar melody gets runs/8, at least 10).")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(min=1),
              help="onnxruntime intra-op threads.")
@click.option("--json", "as_json", is_flag=True, help="Also print the numbers as JSON.")
def main(model_path, preset, runs, threads, as_json):
    if model_path:
        result = measure(Path(model_path), runs, threads)
    else:
        import torch

        from groove_live.export.onnx_export import export_run

        torch.set_num_threads(1)
        with tempfile.TemporaryDirectory() as tmp:
            path = export_run(_random_preset_run(Path(tmp), preset),
                              Path(tmp) / "harmonizer.onnx").decoder_path
            result = measure(path, runs, threads)
            result["model"] = f"random {preset}"
    click.echo(report(result))
    if as_json:
        click.echo(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
