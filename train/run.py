"""The run folder: resolved config, spec and checkpoints; everything export needs.

Layout:
  config.json          preset name, model and train configs, data path
  spec.json            the runtime ModelSpec (groove_live.spec)
  checkpoints/step_00001000.pt   the last K, written atomically
  best.pt              lowest validation loss so far
  metrics.csv, tb/, loss_curve.png

Every checkpoint also carries the spec (JSON text) and the model's hyper-parameters
("model_args", nanoGPT's name), so a `.pt` alone rebuilds its model: `model_from_checkpoint`.
Checkpoints written before that still load, through the config.json and spec.json beside them.

Checkpoints hold only tensors and plain data (dicts, lists, numbers, strings, None) and are read
with `torch.load(weights_only=True)`: a run folder is something people share, and a pickle from
it must never run code here.
"""
from __future__ import annotations

import csv
import json
import os
import pickle
import re
import warnings
from pathlib import Path

import torch

from groove_live.spec import ModelSpec

from .config import (ModelConfig, TrainConfig, model_config_from_dict, to_dict,
                     train_config_from_dict)
from .model import GrooVAE, build_model
from .which import WHICH_HELP, WHICH_RE

CHECKPOINT_RE = re.compile(r"step_(\d+)\.pt$")
# What fit needs to continue; best.pt holds only "model", "step" and "val".
RESUME_KEYS = ("model", "optimizer", "step", "best_val", "elapsed_s", "examples", "rng")
# Scalars a checkpoint may hold besides tensors; weights_only=True refuses e.g. numpy arrays.
PLAIN_TYPES = (bool, int, float, str, type(None))


class RunError(ValueError):
    """A run folder that is missing or incomplete: one clear line."""


class CheckpointError(RunError):
    """A checkpoint that cannot be loaded safely (torn, empty, foreign, or holding code)."""


def write_json_atomic(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def save_run_config(run_dir: Path, preset: str, model: ModelConfig, train: TrainConfig,
                    spec: ModelSpec, data: str) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "config.json", {"preset": preset, "model": to_dict(model),
                                                "train": to_dict(train), "data": data})
    (run_dir / "spec.json").write_text(spec.to_json())


def model_header(model_cfg: ModelConfig, spec: ModelSpec) -> dict:
    """What a checkpoint needs besides weights to rebuild its model, as plain data."""
    return {"spec": spec.to_json(), "model_args": to_dict(model_cfg)}


def load_run_config(run_dir: str | Path) -> tuple[str, ModelConfig, TrainConfig, ModelSpec, str]:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: no such run folder")
    try:
        d = json.loads((run_dir / "config.json").read_text())
        spec = ModelSpec.from_json((run_dir / "spec.json").read_text())
        return (d["preset"], model_config_from_dict(d["model"]), train_config_from_dict(d["train"]),
                spec, d.get("data", ""))
    except FileNotFoundError as e:
        raise RunError(f"{run_dir}: not a groove-train run folder ({Path(e.filename).name} "
                       "missing)") from None
    except (KeyError, TypeError, ValueError) as e:
        raise RunError(f"{run_dir}: config.json does not describe a run ({e})") from None


def _plain_data_problem(obj, where: str = "state") -> str | None:
    """Where `obj` holds something weights_only=True would refuse, or None."""
    if isinstance(obj, torch.Tensor) or isinstance(obj, PLAIN_TYPES):
        return None
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}"
    for key, value in items:
        if not isinstance(key, PLAIN_TYPES):
            return f"{where} has a key of type {type(key).__qualname__}"
        problem = _plain_data_problem(value, f"{where}[{key!r}]")
        if problem:
            return problem
    return None


def save_checkpoint_atomic(path: Path, state: dict) -> None:
    """Write to a temporary name then rename: a kill mid-write never leaves a torn file."""
    problem = _plain_data_problem(state)
    if problem:  # a bug here, not the user's: the run could never be resumed or exported
        raise TypeError(f"checkpoint {path.name}: {problem}; store tensors and plain data only")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    found = []
    for p in (run_dir / "checkpoints").glob("step_*.pt"):
        m = CHECKPOINT_RE.search(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def rotate_checkpoints(run_dir: Path, keep_last: int) -> None:
    for _, p in list_checkpoints(run_dir)[:-keep_last]:
        p.unlink(missing_ok=True)


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def _refusal_detail(message: str) -> str:
    """The one telling line of torch's many-line weights_only refusal."""
    m = re.search(r"GLOBAL ([\w.]+)", message)
    if m:
        return f"it would call or build {m.group(1)}"
    m = re.search(r"Unsupported operand (\d+)", message)
    return f"pickle opcode {m.group(1)}, which a plain-data load does not allow" if m else \
        "not tensors and plain data"


def load_checkpoint_safely(path: Path, required: tuple[str, ...] = ("model",),
                           map_location="cpu") -> dict:
    """torch.load(weights_only=True) with every way a file can be bad turned into one line."""
    name = str(path)
    if path.is_file() and path.stat().st_size == 0:
        raise CheckpointError(f"{name}: empty file (a write that never finished)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. a pickle protocol note: the error says enough
            state = torch.load(path, map_location=map_location, weights_only=True)
    except OSError as e:
        raise CheckpointError(f"{name}: cannot read it ({e.strerror or e})") from None
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{name}: refused, it holds more than tensors and plain data "
                              f"({_refusal_detail(str(e))}); not loaded") from None
    except EOFError:
        raise CheckpointError(f"{name}: cut short (a write that never finished)") from None
    except RuntimeError as e:  # the zip reader's or the legacy format's complaint
        raise CheckpointError(f"{name}: truncated or not a torch checkpoint "
                              f"({str(e).split('.')[0].splitlines()[0]})") from None
    except Exception as e:  # torch.load of arbitrary bytes raises IndexError, KeyError, ...
        raise CheckpointError(f"{name}: not a torch checkpoint ({type(e).__name__})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{name}: holds a {type(state).__name__}, not a checkpoint dict")
    missing = [key for key in required if key not in state]
    if missing:
        raise CheckpointError(f"{name}: not a training checkpoint (no {', '.join(missing)})")
    if not isinstance(state.get("model", {}), dict):
        raise CheckpointError(f"{name}: its 'model' is not a state dict")
    return state


def _resume_problem(state: dict) -> str | None:
    """What makes a (plain-data) checkpoint unfit to resume from, or None."""
    rng = state["rng"]
    if not (isinstance(rng, (list, tuple)) and rng and all(
            isinstance(r, torch.Tensor) and r.dtype == torch.uint8 for r in rng)):
        return "its rng is not a list of byte tensors"
    for key, types in (("step", int), ("examples", int), ("best_val", (int, float)),
                       ("elapsed_s", (int, float)), ("optimizer", dict)):
        if not isinstance(state[key], types) or isinstance(state[key], bool):
            return f"its {key} is a {type(state[key]).__name__}"
    return None


def newest_loadable_checkpoint(run_dir: Path) -> tuple[Path, dict, list[tuple[Path, str]]]:
    """The newest checkpoint that loads safely and can be resumed from, its state, and the newer
    ones skipped (path, reason). Raises CheckpointError, one line naming every reason, when none
    loads."""
    found = list_checkpoints(run_dir)
    if not found:
        raise RunError(f"{run_dir}: nothing to resume (no checkpoints/)")
    skipped: list[tuple[Path, str]] = []
    for _, path in reversed(found):
        try:
            state = load_checkpoint_safely(path, RESUME_KEYS)
        except CheckpointError as e:
            skipped.append((path, str(e)))
            continue
        problem = _resume_problem(state)
        if problem is None:
            return path, state, skipped
        skipped.append((path, f"{path}: not a training checkpoint ({problem})"))
    raise CheckpointError(f"{run_dir}: no checkpoint loads: " + "; ".join(r for _, r in skipped))


def set_aside_checkpoint(path: Path) -> Path:
    """Rename a checkpoint that does not load, so it neither shadows the newer ones a resumed
    run writes as "latest" nor is rotated in their place; kept for whoever wants to look."""
    aside = path.with_name(path.name + ".unloadable")
    os.replace(path, aside)
    return aside


def clean_stale_temp_files(run_dir: Path) -> list[Path]:
    """Remove the *.tmp left by writes a kill interrupted (the rename never happened, so the
    file is torn or orphaned and nothing reads it). Call only before this run writes any.
    NAME.tmp is this module's temporary name; .NAME.tmp-XXXX.EXT is groove_live.atomic_io's,
    which writes e.g. evaluate's PNGs into the run folder."""
    stale = sorted(p for folder in (run_dir, run_dir / "checkpoints")
                   for pattern in ("*.tmp", ".*.tmp-*") for p in folder.glob(pattern))
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def drop_metrics_after_step(run_dir: Path, step: int) -> int:
    """Rewrite metrics.csv (atomically) without the rows logged after checkpoint `step`, and
    without a row a kill tore: the resumed run logs those steps again. Returns rows dropped."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return 0
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or "step" not in rows[0]:
        raise RunError(f"{path}: no header with a 'step' column; move it away to start a new log")
    header, body = rows[0], rows[1:]
    col = header.index("step")

    def keep(row: list[str]) -> bool:
        return (len(row) == len(header) and row[col].isdigit() and int(row[col]) <= step)

    kept = [row for row in body if keep(row)]
    if len(kept) == len(body):
        return 0
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        csv.writer(f).writerows([header, *kept])
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return len(body) - len(kept)


def describe_mismatch(error: Exception) -> str:
    """The first specific line of load_state_dict's complaint (its first line is a title)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("Error(s) in loading"):
        return lines[1]
    return lines[0] if lines else type(error).__name__


def weights_path(run_dir: str | Path, which: str = "best") -> Path:
    """best.pt when it exists (selected on validation), else the latest checkpoint; with
    which = "stepN", the checkpoint of step N (for a selection made on other metrics)."""
    run_dir = Path(run_dir)
    m = WHICH_RE.match(which)
    if m is None:
        raise RunError(f"which weights: {which!r}; say {WHICH_HELP}")
    if m.group(2) is not None:
        step = int(m.group(2))
        found = dict(list_checkpoints(run_dir))
        if step not in found:
            kept = ", ".join(str(n) for n in sorted(found)) or "none"
            raise RunError(f"{run_dir}: no checkpoint of step {step} (checkpoints kept: {kept})")
        return found[step]
    best = run_dir / "best.pt"
    if which == "best" and best.is_file():
        return best
    latest = latest_checkpoint(run_dir)
    if latest is None:
        raise RunError(f"{run_dir}: has no weights yet (no best.pt, no checkpoints/)")
    return latest


def _header_of(path: Path, state: dict) -> tuple[ModelConfig, ModelSpec, str]:
    """(model config, spec, where they came from) of a checkpoint: its own header, or for an
    older checkpoint without one the run folder it sits in (beside it, or one folder up)."""
    if "spec" in state or "model_args" in state:
        try:
            if not isinstance(state.get("model_args"), dict):
                raise TypeError("model_args is not a dict")
            return (model_config_from_dict(state["model_args"]), ModelSpec.from_json(state["spec"]),
                    "its own spec")
        except (KeyError, TypeError, ValueError) as e:  # SpecError is a ValueError
            raise CheckpointError(f"{path}: its spec or model_args are unusable ({e})") from None
    for run_dir in (path.parent, path.parent.parent):
        if (run_dir / "config.json").is_file():
            _, model_cfg, _, spec, _ = load_run_config(run_dir)
            return model_cfg, spec, "config.json"
    raise CheckpointError(f"{path}: has no spec of its own (an older checkpoint) and no "
                          "config.json beside it")


def model_from_checkpoint(path: str | Path, map_location="cpu"
                          ) -> tuple[GrooVAE, ModelConfig, ModelSpec, dict]:
    """Rebuild a model from one `.pt` file, in eval mode: (model, config, spec, state)."""
    path = Path(path)
    state = load_checkpoint_safely(path, map_location=map_location)
    model_cfg, spec, source = _header_of(path, state)
    try:
        model = build_model(model_cfg, spec)
    except ValueError as e:  # a kind not built here, or an older run's spec.json and
        # config.json that disagree
        raise CheckpointError(f"{path}: cannot rebuild its model: {e}") from None
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:  # weights of another shape than the spec/config say
        raise CheckpointError(f"{path}: the weights do not fit "
                              f"{source} ({describe_mismatch(e)})") from None
    model.eval()
    return model, model_cfg, spec, state


def load_model(run_dir: str | Path, which: str = "best", map_location="cpu"
               ) -> tuple[GrooVAE, ModelConfig, ModelSpec]:
    """Rebuild the model from the run folder alone, in eval mode."""
    load_run_config(run_dir)  # a missing or foreign run folder is named as such
    path = weights_path(run_dir, which)
    model, model_cfg, spec, state = model_from_checkpoint(path, map_location)
    spec = spec.replace(run_id=f"{Path(run_dir).resolve().name}@step{state.get('step', 0)}")
    return model, model_cfg, spec
