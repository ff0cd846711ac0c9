"""One set of weights from a stretch of a run's checkpoints: their element-wise mean.

A GAN trained at a constant learning rate does not settle on a point: its generator keeps
circling a good region while the critic moves, and any one checkpoint is somewhere on that
circle (the harmonizer's validation scores jump from checkpoint to checkpoint with no trend).
The mean of the weights over a stretch of checkpoints (Polyak averaging; "stochastic weight
averaging", Izmailov et al. 2018, uses a constant rate the same way) lands nearer the middle
and is steadier than any one of them. Batch-norm running statistics are averaged like the
weights: recomputing them over training batches afterwards scored the same on the harmonizer.

The result is a new run folder (the source run is left as it is) with the source's config.json
and spec.json and the averaged weights as best.pt, so every command that reads a run
(`groove-export onnx --run`, `groove-train evaluate* --run`) takes it as it is. It has no
optimizer state and no checkpoints/: `fit --resume` has nothing to continue there, by design.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from .run import (CheckpointError, RunError, list_checkpoints, load_checkpoint_safely,
                  load_run_config, save_checkpoint_atomic, write_json_atomic)

MIN_CHECKPOINTS = 2
AVERAGED_FILE = "averaged.json"  # which run and steps the weights came from, for people


def checkpoints_between(run_dir: Path, from_step: int, to_step: int) -> list[tuple[int, Path]]:
    """(step, path) of the run's kept checkpoints with from_step <= step <= to_step, or RunError
    naming what is kept when fewer than two are."""
    if from_step > to_step:
        raise RunError(f"--from-step {from_step} is after --to-step {to_step}")
    kept = list_checkpoints(run_dir)
    chosen = [(s, p) for s, p in kept if from_step <= s <= to_step]
    if len(chosen) < MIN_CHECKPOINTS:
        listed = ", ".join(str(s) for s, _ in kept) or "none"
        raise RunError(f"{run_dir}: {len(chosen)} checkpoint(s) between steps {from_step} and "
                       f"{to_step}; averaging needs at least {MIN_CHECKPOINTS} (checkpoints "
                       f"kept: {listed})")
    return chosen


def _header(state: dict) -> tuple:
    # The spec text and model_args identify the architecture; checkpoints from before the
    # header existed have neither, and then the run's own config.json stands for all of them.
    return state.get("spec"), repr(state.get("model_args"))


def average_states(states: list[tuple[Path, dict]]) -> dict:
    """The element-wise mean of the "model" tensors of every state (accumulated in float64,
    stored in each tensor's own dtype); integer tensors (batch norm's counters) are taken from
    the last state. All states must hold the same names and shapes, else CheckpointError."""
    first_path, first = states[0]
    names = first["model"].keys()
    total = {}
    for path, state in states:
        model = state["model"]
        if model.keys() != names:
            raise CheckpointError(f"{path}: holds other weights than {first_path.name} "
                                  f"({len(model)} tensors against {len(names)})")
        for name, tensor in model.items():
            if not isinstance(tensor, torch.Tensor):
                raise CheckpointError(f"{path}: {name} is a {type(tensor).__name__}, not a "
                                      f"tensor")
            if tensor.shape != first["model"][name].shape:
                raise CheckpointError(f"{path}: {name} has shape {tuple(tensor.shape)}, "
                                      f"{first_path.name} {tuple(first['model'][name].shape)}")
            if tensor.is_floating_point():
                total[name] = total.get(name, 0) + tensor.to(torch.float64)
    last = states[-1][1]["model"]
    return {name: (total[name] / len(states)).to(tensor.dtype) if name in total
            else last[name].clone() for name, tensor in last.items()}


def average_run(run_dir: str | Path, from_step: int, to_step: int,
                out_dir: str | Path) -> dict:
    """Average the checkpoints of steps from_step..to_step of `run_dir` into a new run folder
    `out_dir` (which must not exist yet, or be empty). Returns {"steps", "out", "weights"}."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    load_run_config(run_dir)  # a missing or foreign run folder is named as such
    if out_dir.resolve() == run_dir.resolve():
        raise RunError(f"{out_dir}: write the average to a new folder, not into its source run")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise RunError(f"{out_dir}: exists and is not an empty folder; choose a new --out")
    chosen = checkpoints_between(run_dir, from_step, to_step)
    states = [(path, load_checkpoint_safely(path)) for _, path in chosen]
    header = _header(states[0][1])
    for path, state in states[1:]:
        if _header(state) != header:
            raise CheckpointError(f"{path}: another model than {chosen[0][1].name} (its spec or "
                                  f"model_args differ); average checkpoints of one run")
    weights = average_states(states)
    steps = [s for s, _ in chosen]
    last = states[-1][1]
    # Which steps it came from is written once, in averaged.json (what export reads).
    state = {"model": weights, "step": steps[-1], "val": None}
    for key in ("spec", "model_args"):
        if key in last:
            state[key] = last[key]
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        for name in ("config.json", "spec.json"):
            shutil.copyfile(run_dir / name, out_dir / name)
        save_checkpoint_atomic(out_dir / "best.pt", state)
        write_json_atomic(out_dir / AVERAGED_FILE,
                          {"source_run": str(run_dir.resolve()), "steps": steps,
                           "note": "best.pt is the element-wise mean of these checkpoints' "
                                   "weights; it has no optimizer state to resume from"})
    except BaseException:  # no half-written run is left to be used
        for name in ("config.json", "spec.json", "best.pt", AVERAGED_FILE):
            (out_dir / name).unlink(missing_ok=True)
        if created:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    return {"steps": steps, "out": str(out_dir), "weights": str(out_dir / "best.pt")}


def averaged_steps(run_dir: str | Path, weights: Path) -> list[int] | None:
    """The steps whose mean `weights` is, when it is the best.pt of a folder `average` wrote
    (from its averaged.json); None for any other weights or an unreadable note."""
    if Path(weights).name != "best.pt":
        return None
    try:
        note = json.loads((Path(run_dir) / AVERAGED_FILE).read_text())
    except (OSError, ValueError):
        return None
    steps = note.get("steps") if isinstance(note, dict) else None
    if not isinstance(steps, list) or not steps or not all(type(s) is int for s in steps):
        return None
    return steps


def describe_average(steps: list[int]) -> str:
    return f"the mean of {len(steps)} checkpoints, steps {steps[0]}-{steps[-1]}"
