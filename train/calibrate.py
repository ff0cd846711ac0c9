"""`groove-train calibrate-task`: the hit threshold of a task model that writes hits (drumify,
infill), chosen on the validation split.

Why: at temperature 0 the graph plays a hit wherever the model gives it more than even odds.
Most cells of a drum pattern are empty, so a drummer's less certain hits (a kick before the
downbeat, the hats of a busy bar) sit under one half, and the single most likely pattern is
sparser than any real take: precise, but missing hits (drumify at T = 0 found 37 % of the real
hits and was right on 59 % of its own). A bias added to the hit logits moves the threshold;
the one that maximizes the task's hit F1 on the validation split is written beside the run
(calibration.json, tied to the checkpoint it was fit for) and `groove-export onnx` bakes it
into the graph (ConditionedVAE.hit_bias).

In the graph the bias acts in full at temperature 0 and fades linearly to nothing at
temperature 1: T = 0 is the F1-best decision, T = 1 still samples the model's own
distribution (whose density already matches the drummer's: precision ~ recall there).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from groove_live.pattern import Patterns
from groove_live.transforms import task_input

from .data import load_split
from .run import load_model, weights_path, write_json_atomic
from .task_eval import drumify_scores, infill_scores

CALIBRATION_FILE = "calibration.json"
# Logit biases tried: a threshold from sigmoid(1) ~ 0.73 down to sigmoid(-3) ~ 0.05.
BIAS_GRID = tuple(float(b) for b in np.arange(-1.0, 3.0001, 0.125))
# The F1 each task is judged by (train/task_eval.py) and the function that scores it.
SCORED = {"drumify": ("hit_f1", drumify_scores), "infill": ("hat_f1", infill_scores)}


class CalibrationError(ValueError):
    """A run that cannot be calibrated (not a hit-writing task model, no data): one line."""


def greedy_outputs(model, patterns: Patterns, biases, batch: int = 512):
    """For each bias, the model's T = 0 output on `patterns` with that bias on its hit logits:
    z at the prior's mean, as the engine decodes at temperature 0. The decoder runs once; each
    bias only re-finishes its heads (ConditionedVAE.finish, what the exported graph computes)."""
    control = torch.from_numpy(task_input(model.spec.task, patterns, model.spec).to_flat())
    with torch.inference_mode():
        heads = [model.decoder(part.new_zeros((len(part), model.cfg.z_size)), part)
                 for part in torch.split(control, batch)]
        heads = {k: torch.cat([h[k] for h in heads]) for k in heads[0]}
        zero_t = torch.zeros(len(patterns))
        no_hit_noise = torch.full(control.shape[:2] + (model.spec.n_drums,), 0.5)
        no_cont_noise = torch.zeros(control.shape[:2] + (2 * model.spec.n_drums,))
        for bias in biases:
            out = model.finish(heads, zero_t, no_hit_noise, no_cont_noise, control,
                               torch.tensor(float(bias)))
            yield bias, Patterns(*(a.float().numpy() for a in out))


def fit_hit_bias(model, dataset_dir: str | Path, split: str = "validation",
                 grid=BIAS_GRID) -> dict:
    """The bias of `grid` with the best task F1 on `split` (ties: the smallest |bias|), and the
    whole curve."""
    task = model.spec.task
    if task not in SCORED:
        raise CalibrationError(f"a {task or model.spec.kind!r} model writes no hits of its own "
                               f"to threshold (calibrated: {', '.join(SCORED)})")
    key, score = SCORED[task]
    real, bpm = load_split(dataset_dir, split)
    real = real.cleaned()
    if len(real) == 0:
        raise CalibrationError(f"{dataset_dir}: the {split} split has no windows")
    window_spec = model.spec.window_spec()
    curve = {}
    for bias, out in greedy_outputs(model, real, grid):
        s = score(real, out, bpm, window_spec)
        curve[bias] = {"f1": s[key], "precision": s[key.replace("f1", "precision")],
                       "recall": s[key.replace("f1", "recall")]}
    best = max(curve, key=lambda b: (round(curve[b]["f1"], 6), -abs(b)))
    return {"task": task, "split": split, "n_windows": len(real), "metric": key,
            "hit_bias": best, "at_bias": curve[best], "at_zero": curve.get(0.0),
            "curve": {f"{b:g}": v for b, v in curve.items()}}


def calibrate_run(run_dir: str | Path, dataset_dir: str | Path, which: str = "best",
                  split: str = "validation") -> dict:
    """fit_hit_bias for a run's `which` checkpoint; writes RUN/calibration.json (with the
    checkpoint's run id, so an export of another checkpoint does not take it) and returns it."""
    model, _, spec = load_model(run_dir, which)
    if spec.kind != "conditioned":
        raise CalibrationError(f"{run_dir}: a {spec.kind!r} model, not a task model")
    result = fit_hit_bias(model, dataset_dir, split)
    result.update({"run_id": spec.run_id, "weights": weights_path(run_dir, which).name,
                   "data": str(dataset_dir)})
    write_json_atomic(Path(run_dir) / CALIBRATION_FILE, result)
    return result


def calibration_for(run_dir: str | Path, run_id: str) -> dict | None:
    """The run's calibration when it was fit for the checkpoint `run_id`; None when there is
    none; CalibrationError when there is one for another checkpoint or it is malformed."""
    path = Path(run_dir) / CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        bias = float(data["hit_bias"])
        fit_for = str(data["run_id"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CalibrationError(f"{path}: not a calibration file ({e})") from None
    if not np.isfinite(bias) or abs(bias) > 10:
        raise CalibrationError(f"{path}: hit_bias {bias} is out of range")
    if fit_for != run_id:
        raise CalibrationError(f"{path} was fit for {fit_for}, not {run_id}: run "
                               f"`groove-train calibrate-task` again for these weights")
    return {"hit_bias": bias, "split": data.get("split"), "metric": data.get("metric"),
            "at_bias": data.get("at_bias"), "at_zero": data.get("at_zero")}
