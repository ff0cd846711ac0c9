r"""Decode latency of one 4-bar pattern: the onnxruntime Engine against torch eager.

Prints, in one run: batch-1 p50/p99 (one intra-op thread) for the engine and torch eager and
their ratio, batch-32 throughput, and the engine's cold start (import + load + first sample in
a fresh process), beside its goals (p99 ≤ 3 ms, ≥ 10x torch eager). Which model:

  (no options)          the bundled model; torch eager on its run folder when --run is given,
                        else on random weights of its preset (speed does not depend on values)
  --model PATH          an exported model, likewise
  --run RUN_DIR         export the run (each --variant) to a temporary folder and time that
  --preset NAME         a randomly initialised run of that preset (to choose the export route)

    .venv/bin/python benchmarks/decode_latency.py --preset groovae_4bar_small \
        --variant fp32 --variant int8 --compare-routes

--tasks times the task models instead (humanize, drumify, infill), a row each: a request to
pattern ready, i.e. Engine.transform of one 2-bar played pattern (the task's input made from
it, noise drawn, the decoder run), batch 1, one thread. Which models: each --task-model PATH,
else the bundled task models, else randomly initialised exports of the groovae_2bar_TASK_small
presets (speed does not depend on the weights' values):

    .venv/bin/python benchmarks/decode_latency.py --tasks

--musicvae times MusicVAE's drum models instead (kinds categorical and hierarchical), a row
each: Engine.sample of one phrase (one 2-bar pattern, one 16-bar phrase), batch 1, one thread,
the class noise (one uniform per step: inverse-CDF sampling) drawn inside the call as live use
draws it; the noise draw alone is timed beside it. Which models: each --musicvae-model PATH,
else the bundled cat_drums_2bar and hierdec_drums_16bar, else randomly initialised exports of
their _cpu presets:

    .venv/bin/python benchmarks/decode_latency.py --musicvae
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import click
import numpy as np

GOAL_P99_MS = 3.0
# A task request (humanize, drumify, infill) -> pattern ready: the live goal is p99 <= 5 ms on one
# core, which leaves the clock thread its share of a 2-core machine.
TASK_GOAL_P99_MS = 5.0
# A 16-bar MusicVAE phrase is asked for a bar or more ahead of when it plays, but decoding it
# still holds the worker: p99 <= 10 ms on one core.
PHRASE_GOAL_P99_MS = 10.0
MUSICVAE_MODELS = {"cat_drums_2bar": "cat_drums_2bar_cpu",
                   "hierdec_drums_16bar": "hierdec_drums_16bar_cpu"}  # bundled name -> preset
GOAL_RATIO = 10.0
GOAL_BATCH32_PER_S = 2000.0
GOAL_COLD_S = 1.0

COLD_START = """
import json, sys, time
t0 = time.perf_counter()
from groove_live.engine import Engine
t1 = time.perf_counter()
engine = Engine.load(sys.argv[1])  # includes the one warm-up decode
t2 = time.perf_counter()
engine.sample(1, seed=0)
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "first_s": t3 - t2,
                  "total_s": t3 - t0, "torch_imported": "torch" in sys.modules}))
"""


def _times(fn, runs: int, warm: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """(wall seconds, this thread's CPU seconds) per call. CPU time leaves out the time other
    processes hold the core, so it is the steadier number on a shared machine."""
    for _ in range(warm):
        fn()
    wall, cpu = np.empty(runs), np.empty(runs)
    for i in range(runs):
        c0, w0 = time.thread_time(), time.perf_counter()
        fn()
        wall[i], cpu[i] = time.perf_counter() - w0, time.thread_time() - c0
    return wall, cpu


def _cold_start(model_path: Path, repeats: int) -> dict:
    results = []
    for _ in range(repeats):
        w0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", COLD_START, str(model_path)],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        r["process_s"] = time.perf_counter() - w0
        results.append(r)
    return {k: float(np.median([r[k] for r in results])) for k in results[0]
            if k != "torch_imported"} | {"torch_imported": any(r["torch_imported"]
                                                                for r in results)}


def _random_run(root: Path, preset: str, head: str) -> Path:
    import torch

    from groove_live.train.config import get_preset, spec_for
    from groove_live.train.model import GrooVAE
    from groove_live.train.run import save_checkpoint_atomic, save_run_config

    p = get_preset(preset)
    model_cfg = dataclasses.replace(p.model, continuous_head=head)
    run = root / f"random_{preset}_{head}"
    save_run_config(run, preset, model_cfg, p.train, spec_for(model_cfg, model_name="groovae",
                                                              preset=preset), "none")
    torch.manual_seed(0)
    save_checkpoint_atomic(run / "best.pt", {"model": GrooVAE(model_cfg).state_dict(), "step": 0})
    return run


def _models(paths: tuple[str, ...], root: Path, presets: dict[str, str], option: str,
            what: str) -> tuple[dict[str, Path], str]:
    """name -> model file, and where they came from (for the report): the files given with
    `option`, else the bundled ones named by `presets`' keys, else exports of random weights of
    their presets (what: how the report names the group)."""
    from groove_live.engine import BUNDLED_MODEL_PATH

    if paths:
        return {f"{i}:{Path(p).name}": Path(p) for i, p in enumerate(paths)}, option
    bundled = {name: BUNDLED_MODEL_PATH.with_name(f"{name}.onnx") for name in presets}
    if all(p.is_file() for p in bundled.values()):
        return bundled, f"the bundled {what}"
    from groove_live.export.onnx_export import export_run
    made = {name: export_run(_random_preset_run(root, preset), root / f"{name}.onnx").decoder_path
            for name, preset in presets.items()}
    return made, (f"random weights of the {', '.join(presets.values())} presets "
                  f"(no bundled {what})")


def _task_models(paths: tuple[str, ...], root: Path) -> tuple[dict[str, Path], str]:
    from groove_live.spec import TASKS
    return _models(paths, root, {task: f"groovae_2bar_{task}_small" for task in TASKS},
                   "--task-model", "task models")


def task_rows(paths: tuple[str, ...], runs: int, threads: int) -> None:
    """A row per task model: Engine.transform of one played 2-bar pattern, batch 1."""
    from groove_live.engine import Engine
    from groove_live.ort import ort as onnxruntime  # telemetry off
    from groove_live.pattern import Patterns

    load_start = _load()
    root = Path(tempfile.mkdtemp(prefix="decode_latency_tasks-"))
    models, source = _task_models(paths, root)
    rows = {}
    for name, path in models.items():
        engine = Engine.load(path, intra_op_threads=threads)
        spec = engine.spec
        rng = np.random.default_rng(0)
        shape = (1, spec.steps, spec.n_drums)
        hits = (rng.random(shape) < 0.2).astype(np.float32)  # a played pattern's density
        played = Patterns(hits, rng.uniform(0.2, 1.0, shape).astype(np.float32),
                          rng.uniform(-0.3, 0.3, shape).astype(np.float32)).cleaned()
        wall, cpu = _times(lambda: engine.transform(played, 1.0, seed=int(rng.integers(1 << 31))),
                           runs)
        rows[name] = {"task": engine.task, "preset": spec.preset, "z": spec.z_size,
                      "mb": path.stat().st_size / 1e6, "p50_ms": np.median(wall) * 1e3,
                      "p99_ms": np.percentile(wall, 99) * 1e3, "cpu_p50_ms": np.median(cpu) * 1e3,
                      "cpu_p99_ms": np.percentile(cpu, 99) * 1e3}
    load_end = _load()
    waited = any(r["p50_ms"] > 1.05 * r["cpu_p50_ms"] for r in rows.values())
    print(f"# Task model latency, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC\n")
    print(f"    {' '.join([Path(sys.executable).name, *sys.argv])}\n")
    print(f"- machine: {_cpu_name()}, {os.cpu_count()} cores; load average {load_start} at start, "
          f"{load_end} at end" + (" (the CPU was shared with other work: wall times include "
                                  "waiting for it; CPU times do not)" if waited else
                                  " (wall p50 within 5 % of CPU p50: the core was ours)"))
    print(f"- onnxruntime {onnxruntime.__version__}, {threads} intra-op thread(s); one request ="
          f" Engine.transform of one 2-bar played pattern (task input, noise, decoder), "
          f"{runs} timed")
    print(f"- models: {source}\n")
    print("| model | task | preset | decoder file MB | p50 ms | p99 ms | CPU p50 ms | "
          "CPU p99 ms |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['task']} | {r['preset']} | {r['mb']:.2f} | {r['p50_ms']:.3f} | "
              f"{r['p99_ms']:.3f} | {r['cpu_p50_ms']:.3f} | {r['cpu_p99_ms']:.3f} |")
    print(f"\nGoal: p99 <= {TASK_GOAL_P99_MS:g} ms per request: "
          + "; ".join(f"{name} {'met' if r['p99_ms'] <= TASK_GOAL_P99_MS else 'MISSED'}"
                      for name, r in rows.items()))


def _random_preset_run(root: Path, preset: str) -> Path:
    """A run folder holding random weights of any preset built by build_model."""
    import torch

    from groove_live.train.config import get_preset
    from groove_live.train.model import build_model
    from groove_live.train.run import save_checkpoint_atomic, save_run_config

    p = get_preset(preset)
    spec = p.spec(model_name=p.model_name)
    run = root / f"random_{p.name}"
    save_run_config(run, p.name, p.model, p.train, spec, "none")
    torch.manual_seed(0)
    save_checkpoint_atomic(run / "best.pt", {"model": build_model(p.model, spec).state_dict(),
                                             "step": 0})
    return run


def _musicvae_models(paths: tuple[str, ...], root: Path) -> tuple[dict[str, Path], str]:
    return _models(paths, root, MUSICVAE_MODELS, "--musicvae-model", "MusicVAE drum models")


def musicvae_rows(paths: tuple[str, ...], runs: int, threads: int) -> None:
    """A row per MusicVAE drum model: Engine.sample of one phrase at temperature 1, batch 1."""
    from groove_live.engine import Engine
    from groove_live.ort import ort as onnxruntime  # telemetry off

    load_start = _load()
    root = Path(tempfile.mkdtemp(prefix="decode_latency_musicvae-"))
    models, source = _musicvae_models(paths, root)
    rows = {}
    for name, path in models.items():
        t0 = time.perf_counter()
        engine = Engine.load(path, intra_op_threads=threads)  # includes the warm-up decode
        load_s = time.perf_counter() - t0
        spec = engine.spec
        rng = np.random.default_rng(0)
        wall, cpu = _times(lambda: engine.sample(1, 1.0, seed=int(rng.integers(1 << 31))), runs)
        _, noise_cpu = _times(lambda: engine.noise(1, rng), runs)
        greedy, _ = _times(lambda: engine.sample(1, 0.0, seed=0), max(30, runs // 3))
        rows[name] = {"kind": spec.kind, "bars": spec.bars, "preset": spec.preset,
                      "mb": (path.stat().st_size) / 1e6, "load_s": load_s,
                      "p50_ms": np.median(wall) * 1e3, "p99_ms": np.percentile(wall, 99) * 1e3,
                      "cpu_p50_ms": np.median(cpu) * 1e3,
                      "cpu_p99_ms": np.percentile(cpu, 99) * 1e3,
                      "noise_cpu_p50_ms": np.median(noise_cpu) * 1e3,
                      "noise_shape": "x".join(str(d) for d in spec.io_shapes(1)[
                          "decoder_inputs"][spec.decoder_inputs[2]][1:]),
                      "greedy_p50_ms": np.median(greedy) * 1e3}
    load_end = _load()
    waited = any(r["p50_ms"] > 1.05 * r["cpu_p50_ms"] for r in rows.values())
    print(f"# MusicVAE drum model latency, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC\n")
    print(f"    {' '.join([Path(sys.executable).name, *sys.argv])}\n")
    print(f"- machine: {_cpu_name()}, {os.cpu_count()} cores; load average {load_start} at start, "
          f"{load_end} at end" + (" (the CPU was shared with other work: wall times include "
                                  "waiting for it; CPU times do not)" if waited else
                                  " (wall p50 within 5 % of CPU p50: the core was ours)"))
    print(f"- onnxruntime {onnxruntime.__version__}, {threads} intra-op thread(s); one request ="
          f" Engine.sample(1, temperature 1): z and the class noise drawn, the decoder run, "
          f"{runs} timed; 'T=0' is the same at temperature 0 (no noise drawn)")
    print(f"- models: {source}\n")
    print("| model | kind | bars | preset | decoder MB | load s | p50 ms | p99 ms | CPU p50 ms | "
          "CPU p99 ms | noise draw CPU p50 ms | T=0 p50 ms |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['kind']} | {r['bars']} | {r['preset']} | {r['mb']:.2f} | "
              f"{r['load_s']:.2f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
              f"{r['cpu_p50_ms']:.3f} | {r['cpu_p99_ms']:.3f} | "
              f"{r['noise_cpu_p50_ms']:.3f} ({r['noise_shape']}) | {r['greedy_p50_ms']:.3f} |")
    print(f"\nGoal: p99 <= {PHRASE_GOAL_P99_MS:g} ms for a 16-bar phrase: "
          + "; ".join(f"{name} {'met' if r['p99_ms'] <= PHRASE_GOAL_P99_MS else 'MISSED'}"
                      for name, r in rows.items() if r["bars"] >= 16))


def _torch_model(run: Path | None, spec):
    import torch

    from groove_live.train.config import get_preset
    from groove_live.train.model import GrooVAE
    from groove_live.train.run import load_model

    if run is not None:
        return load_model(run)[0], f"run {run}"
    cfg = dataclasses.replace(get_preset(spec.preset).model, continuous_head=spec.continuous_head)
    torch.manual_seed(0)
    return GrooVAE(cfg).eval(), f"random weights of preset {spec.preset}"


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _load() -> str:
    try:
        return open("/proc/loadavg").read().split()[0]
    except OSError:
        return "?"


@click.command()
@click.option("--model", "model_path", type=click.Path(dir_okay=False, exists=True))
@click.option("--run", "run_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--preset", help="Time a randomly initialised run of this preset.")
@click.option("--head", default="mean", type=click.Choice(["mean", "gaussian"]),
              help="With --preset.")
@click.option("--variant", "variants", multiple=True, default=("fp32",),
              type=click.Choice(["fp32", "int8"]), help="With --run/--preset; repeat to compare.")
@click.option("--runs", default=300, show_default=True, help="Batch-1 engine decodes timed.")
@click.option("--torch-runs", default=60, show_default=True, help="Batch-1 torch decodes timed.")
@click.option("--cold-runs", default=5, show_default=True, help="Fresh processes for cold start.")
@click.option("--threads", default=1, show_default=True, help="Intra-op threads (both sides).")
@click.option("--compare-routes", is_flag=True,
              help="Also time the TorchScript-loop and step-driven exports (route choice).")
@click.option("--tasks", is_flag=True,
              help="Time the task models (humanize, drumify, infill) instead: a row each.")
@click.option("--task-model", "task_models", multiple=True,
              type=click.Path(dir_okay=False, exists=True),
              help="With --tasks: a task model file to time (repeat); default the bundled ones.")
@click.option("--musicvae", is_flag=True,
              help="Time MusicVAE's drum models (2-bar categorical, 16-bar hierarchical) instead.")
@click.option("--musicvae-model", "musicvae_models", multiple=True,
              type=click.Path(dir_okay=False, exists=True),
              help="With --musicvae: a categorical/hierarchical model file to time (repeat).")
def main(model_path, run_dir, preset, head, variants, runs, torch_runs, cold_runs, threads,
         compare_routes, tasks, task_models, musicvae, musicvae_models):
    if tasks or task_models:
        task_rows(task_models, runs, threads)
        return
    if musicvae or musicvae_models:
        musicvae_rows(musicvae_models, runs, threads)
        return
    import torch

    from groove_live.engine import BUNDLED_MODEL_PATH, Engine

    torch.set_num_threads(threads)
    load_start = _load()
    tmp = Path(tempfile.mkdtemp(prefix="decode_latency-"))
    models: dict[str, Path] = {}
    if preset:
        run_dir = _random_run(tmp, preset, head)
    if run_dir and not model_path:
        from groove_live.export.onnx_export import export_run
        for variant in variants:
            exported = export_run(run_dir, tmp / f"{variant}.onnx", variant=variant)
            models[variant] = exported.decoder_path
    else:
        path = Path(model_path) if model_path else BUNDLED_MODEL_PATH
        if not path.is_file():
            raise click.UsageError(f"no model at {path}: pass --model, --run or --preset")
        models[Engine.load(path).variant] = path
    engines = {name: Engine.load(path, intra_op_threads=threads) for name, path in models.items()}
    spec = next(iter(engines.values())).spec
    model, torch_source = _torch_model(Path(run_dir) if run_dir else None, spec)
    n_params = sum(p.numel() for p in model.parameters())
    n_decoder = sum(p.numel() for p in model.decoder.parameters())

    rows: dict[str, dict] = {}
    for name, engine in engines.items():
        rng = np.random.default_rng(0)
        wall, cpu = _times(lambda: engine.sample(1, 1.0, seed=int(rng.integers(1 << 31))), runs)
        w32, c32 = _times(lambda: engine.sample(32, 1.0, seed=int(rng.integers(1 << 31))),
                          max(10, runs // 10))
        rows[f"engine {name}"] = {"p50_ms": np.median(wall) * 1e3,
                                  "p99_ms": np.percentile(wall, 99) * 1e3,
                                  "cpu_p50_ms": np.median(cpu) * 1e3,
                                  "batch32_per_s": 32 / np.median(w32),
                                  "batch32_cpu_per_s": 32 / np.median(c32),
                                  "cold": _cold_start(models[name], cold_runs)}
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        z1, z32 = torch.randn(1, spec.z_size), torch.randn(32, spec.z_size)
        wall, cpu = _times(lambda: model.decoder.sample(z1, 1.0, generator=gen), torch_runs, 3)
        w32, c32 = _times(lambda: model.decoder.sample(z32, 1.0, generator=gen), 10, 2)
    rows["torch eager"] = {"p50_ms": np.median(wall) * 1e3, "p99_ms": np.percentile(wall, 99) * 1e3,
                           "cpu_p50_ms": np.median(cpu) * 1e3, "batch32_per_s": 32 / np.median(w32),
                           "batch32_cpu_per_s": 32 / np.median(c32)}
    if compare_routes:
        from alt_routes import step_driven, torchscript_loop
        for name, make in (("TorchScript Loop", torchscript_loop), ("step-driven", step_driven)):
            decode = make(model, spec, threads)
            rng = np.random.default_rng(0)
            wall, cpu = _times(lambda: decode(1, rng), max(30, runs // 3))
            row = {"p50_ms": np.median(wall) * 1e3, "p99_ms": np.percentile(wall, 99) * 1e3,
                   "cpu_p50_ms": np.median(cpu) * 1e3}
            if name != "step-driven":
                w32, c32 = _times(lambda: decode(32, rng), 10, 2)
                row["batch32_per_s"] = 32 / np.median(w32)
                row["batch32_cpu_per_s"] = 32 / np.median(c32)
            rows[name] = row
    load_end = _load()

    torch_p50 = rows["torch eager"]["p50_ms"]
    print(f"# Decode latency, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC\n")
    print(f"    {' '.join([Path(sys.executable).name, *sys.argv])}\n")
    from groove_live.ort import ort as onnxruntime  # telemetry off
    # The load average counts this benchmark too (one busy thread: ~1 by the end), so it cannot
    # say whether others took the CPU; wall time well above this thread's CPU time can.
    waited = any(r["p50_ms"] > 1.05 * r["cpu_p50_ms"] for r in rows.values())
    print(f"- machine: {_cpu_name()}, {os.cpu_count()} cores; load average {load_start} at start, "
          f"{load_end} at end" + (" (the CPU was shared with other work: wall times include "
                                  "waiting for it; CPU p50 does not)" if waited else
                                  " (wall p50 within 5 % of CPU p50: the core was ours)"))
    print(f"- onnxruntime {onnxruntime.__version__}, torch {torch.__version__}, {threads} "
          f"intra-op thread(s), batch 1 = one {spec.bars}-bar pattern ({spec.steps} steps)")
    print(f"- model: {spec.model_name} preset {spec.preset}, {spec.continuous_head} head, z "
          f"{spec.z_size}, {n_params / 1e6:.2f} M parameters ({n_decoder / 1e6:.2f} M decoder), "
          f"run {spec.run_id or '?'}; engine files: "
          + ", ".join(f"{k} {p.name} ({p.stat().st_size / 1e6:.1f} MB)" for k, p in models.items()))
    print(f"- torch eager: {torch_source}\n")
    torch_cpu = rows["torch eager"]["cpu_p50_ms"]
    print("| batch 1 unless said | p50 ms | p99 ms | CPU p50 ms | torch / this (p50, CPU) | "
          "batch 32 patterns/s (CPU) | cold start s (process) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        cold = r.get("cold")
        batch32 = (f"{r['batch32_per_s']:.0f} ({r['batch32_cpu_per_s']:.0f})"
                   if "batch32_per_s" in r else "-")
        print(f"| {name} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['cpu_p50_ms']:.2f} | "
              f"{torch_p50 / r['p50_ms']:.1f}x, {torch_cpu / r['cpu_p50_ms']:.1f}x | {batch32} | "
              + (f"{cold['total_s']:.2f} ({cold['process_s']:.2f}) |" if cold else "- |"))
    print(f"\nGoals: p99 <= {GOAL_P99_MS:g} ms, >= {GOAL_RATIO:g}x torch eager, >= "
          f"{GOAL_BATCH32_PER_S:,.0f} patterns/s at batch 32, cold start <= {GOAL_COLD_S:g} s.")
    for name in engines:
        r = rows[f"engine {name}"]
        checks = [("p99", r["p99_ms"] <= GOAL_P99_MS, f"{r['p99_ms']:.2f} ms"),
                  ("vs torch", torch_p50 / r["p50_ms"] >= GOAL_RATIO,
                   f"{torch_p50 / r['p50_ms']:.1f}x"),
                  ("batch 32", r["batch32_per_s"] >= GOAL_BATCH32_PER_S,
                   f"{r['batch32_per_s']:.0f}/s (CPU time {r['batch32_cpu_per_s']:.0f}/s)"),
                  ("cold start", r["cold"]["total_s"] <= GOAL_COLD_S,
                   f"{r['cold']['total_s']:.2f} s")]
        print(f"- engine {name}: " + "; ".join(
            f"{what} {value} {'met' if ok else 'MISSED'}" for what, ok, value in checks)
            + f"; cold start = import {r['cold']['import_s']:.2f} + load and warm-up "
              f"{r['cold']['load_s']:.2f} + first sample {r['cold']['first_s'] * 1e3:.1f} ms"
            + ("" if not r["cold"]["torch_imported"] else "; TORCH WAS IMPORTED"))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # alt_routes beside this file
    main()
