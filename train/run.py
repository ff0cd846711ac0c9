"""The run folder: resolved config, spec and checkpoints; everything export needs.

Layout:
  config.json          preset name, model and train configs, data path
  spec.json            the runtime ModelSpec (groove_live.spec)
  checkpoints/step_00001000.pt   the last K, written atomically
  best.pt              lowest validation loss so far
  metrics.csv, tb/, loss_curve.png
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

from groove_live.spec import ModelSpec

from .config import (ModelConfig, TrainConfig, model_config_from_dict, to_dict,
                     train_config_from_dict)
from .model import GrooVAE

CHECKPOINT_RE = re.compile(r"step_(\d+)\.pt$")


class RunError(ValueError):
    """A run folder that is missing or incomplete: one clear line."""


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


def save_checkpoint_atomic(path: Path, state: dict) -> None:
    """Write to a temporary name then rename: a kill mid-write never leaves a torn file."""
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


def weights_path(run_dir: str | Path, which: str = "best") -> Path:
    """best.pt when it exists (selected on validation), else the latest checkpoint."""
    run_dir = Path(run_dir)
    best = run_dir / "best.pt"
    if which == "best" and best.is_file():
        return best
    latest = latest_checkpoint(run_dir)
    if latest is None:
        raise RunError(f"{run_dir}: has no weights yet (no best.pt, no checkpoints/)")
    return latest


def load_model(run_dir: str | Path, which: str = "best", map_location="cpu"
               ) -> tuple[GrooVAE, ModelConfig, ModelSpec]:
    """Rebuild the model from the run folder alone, in eval mode."""
    _, model_cfg, _, spec, _ = load_run_config(run_dir)
    path = weights_path(run_dir, which)
    state = torch.load(path, map_location=map_location, weights_only=False)
    model = GrooVAE(model_cfg)
    model.load_state_dict(state["model"])
    model.eval()
    spec = spec.replace(run_id=f"{Path(run_dir).resolve().name}@step{state.get('step', 0)}")
    return model, model_cfg, spec
