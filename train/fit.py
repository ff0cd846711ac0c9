"""`groove-train fit`: the training loop, checkpointed, resumable, DDP-ready.

Runs alone or under `torchrun --nproc_per_node=N` (gloo on CPU, NCCL on GPU): each rank takes
its share of every global batch, rank 0 validates, logs and writes checkpoints.
"""
from __future__ import annotations

import csv
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from .config import ModelConfig, TrainConfig, get_preset, spec_for
from .data import load_split
from .model import GrooVAE, count_parameters, losses
from .run import (CheckpointError, clean_stale_temp_files, describe_mismatch,
                  drop_metrics_after_step, load_run_config, newest_loadable_checkpoint,
                  rotate_checkpoints, save_checkpoint_atomic, save_run_config,
                  set_aside_checkpoint)

LOG_FIELDS = ("step", "split", "loss", "recon", "hit_loss", "velocity_loss", "offset_loss", "kl",
              "kl_cost", "lr", "grad_norm", "examples_per_s")


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Magenta's schedule: exponential decay towards a floor."""
    return (cfg.learning_rate - cfg.min_learning_rate) * cfg.decay_rate ** step + cfg.min_learning_rate


def batch_indices(n: int, batch_size: int, seed: int, step: int, dist_info: DistInfo) -> np.ndarray:
    """Indices of global batch `step` for this rank: a pure function of step, so resume is exact."""
    per_epoch = max(1, n // batch_size)  # the last partial batch of an epoch is dropped
    epoch, pos = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    idx = perm[pos * batch_size:(pos + 1) * batch_size]
    return idx[dist_info.rank::dist_info.world]


def _init_distributed() -> DistInfo:
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return DistInfo()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def _pick_device(device: str, dist_info: DistInfo) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        torch.cuda.set_device(dist_info.local_rank)
        return torch.device("cuda", dist_info.local_rank)
    return torch.device(device)


def _say(message: str) -> None:
    print(f"groove-train: {message}", file=sys.stderr, flush=True)


def _resume_state(run_dir: Path, dist_info: DistInfo) -> dict:
    """The newest checkpoint that loads safely. Newer ones that do not (torn by a kill, empty,
    or holding code) are named with the reason, and rank 0 sets them aside."""
    _, state, skipped = newest_loadable_checkpoint(run_dir)
    if dist_info.main:
        for path, reason in skipped:
            _say(f"skipped {reason}; set aside as {set_aside_checkpoint(path).name}")
    return state


class StopFlag:
    """Set by SIGINT/SIGTERM; the loop checks it between steps and checkpoints before leaving."""

    def __init__(self):
        self.reason = ""
        self._old = {}

    def install(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.reason = signal.Signals(signum).name

    def restore(self):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def _validate(model: GrooVAE, x_val: torch.Tensor, cfg: ModelConfig, batch_size: int,
              max_batches: int, device, autocast) -> dict[str, float]:
    """Mean losses over the validation split, with a fixed z draw so runs compare exactly."""
    model.eval()
    gen = torch.Generator(device=device).manual_seed(0)
    totals: dict[str, float] = {}
    n = 0
    with torch.no_grad(), autocast():
        for i, lo in enumerate(range(0, len(x_val), batch_size)):
            if max_batches and i >= max_batches:
                break
            x = x_val[lo:lo + batch_size]
            heads, mu, sigma = model(x, generator=gen)
            for k, v in losses(heads, x, mu, sigma, cfg).items():
                totals[k] = totals.get(k, 0.0) + float(v) * len(x)
            n += len(x)
    model.train()
    return {k: v / max(n, 1) for k, v in totals.items()}


class Logger:
    """CSV always (the loss-curve PNG reads it); TensorBoard when it is installed."""

    def __init__(self, run_dir: Path, purge_step: int | None = None):
        self.path = run_dir / "metrics.csv"
        new = not self.path.exists()
        self.file = open(self.path, "a", newline="")
        self.csv = csv.DictWriter(self.file, LOG_FIELDS, extrasaction="ignore")
        if new:
            self.csv.writeheader()
        try:
            from torch.utils.tensorboard import SummaryWriter
            # purge_step hides events a killed run logged past its checkpoint (replayed now)
            self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=purge_step)
        except ImportError:
            self.tb = None

    def log(self, step: int, split: str, scalars: dict[str, float]) -> None:
        self.csv.writerow({"step": step, "split": split, **scalars})
        self.file.flush()
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(f"{split}/{k}", v, step)

    def close(self):
        self.file.close()
        if self.tb is not None:
            self.tb.close()


def plot_loss_curve(run_dir: Path) -> Path | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for split, style in (("train", "-"), ("validation", "o-")):
        pts = [(int(r["step"]), float(r["loss"]), float(r["recon"]), float(r["kl"]))
               for r in rows if r["split"] == split]
        if not pts:
            continue
        s, loss, recon, kl = zip(*pts)
        axes[0].plot(s, loss, style, label=f"{split} loss", alpha=0.8, markersize=3)
        axes[0].plot(s, recon, style, label=f"{split} recon", alpha=0.5, markersize=3)
        axes[1].plot(s, kl, style, label=f"{split} KL (nats)", alpha=0.8, markersize=3)
    axes[0].set_xlabel("step")
    axes[0].set_yscale("log")
    axes[0].legend()
    axes[1].set_xlabel("step")
    axes[1].legend()
    fig.suptitle(run_dir.name)
    fig.tight_layout()
    path = run_dir / "loss_curve.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def fit(run_dir: str | Path, data_dir: str | Path | None = None, preset: str = "groovae_4bar_small",
        model_overrides: dict | None = None, train_overrides: dict | None = None,
        resume: bool = False, device: str = "auto", threads: int = 0,
        progress: bool = True) -> dict:
    """Train (or continue) a run. Returns the final state summary."""
    run_dir = Path(run_dir)
    dist_info = _init_distributed()
    if threads:
        torch.set_num_threads(threads)
    if resume:
        preset, model_cfg, train_cfg, spec, data_dir_saved = load_run_config(run_dir)
        data_dir = data_dir or data_dir_saved
        if train_overrides:  # e.g. a longer max_steps or time budget for the continuation
            train_cfg = replace(train_cfg, **train_overrides)
    else:
        p = get_preset(preset)
        model_cfg = replace(p.model, **(model_overrides or {}))
        train_cfg = replace(p.train, **(train_overrides or {}))
        spec = spec_for(model_cfg, model_name="groovae", preset=preset,
                        training_data="Groove MIDI Dataset v1.0.0 (CC BY 4.0), 4/4 windows",
                        run_id=run_dir.name)
        if dist_info.main:
            if (run_dir / "config.json").exists():
                raise FileExistsError(f"{run_dir} already holds a run; use --resume to continue it")
            save_run_config(run_dir, preset, model_cfg, train_cfg, spec, str(data_dir))
    if data_dir is None:
        raise ValueError("no prepared dataset given (--data DATASET_DIR)")
    if dist_info.main:
        stale = clean_stale_temp_files(run_dir)
        if stale:
            _say(f"removed {len(stale)} stale temp file(s) of interrupted writes: "
                 + ", ".join(str(p.relative_to(run_dir)) for p in stale))
    state = _resume_state(run_dir, dist_info) if resume else None
    dev = _pick_device(device, dist_info)
    use_bf16 = dev.type == "cuda"

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16)

    train_p, _ = load_split(data_dir, "train")
    val_p, _ = load_split(data_dir, "validation")
    if len(train_p) == 0:
        raise ValueError(f"{data_dir}: the train split is empty")
    x_train = torch.from_numpy(train_p.to_flat()).to(dev)  # (N, T, 27)
    x_val = torch.from_numpy(val_p.to_flat()).to(dev)

    torch.manual_seed(train_cfg.seed + dist_info.rank)
    model = GrooVAE(model_cfg).to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=train_cfg.learning_rate)
    step, best_val, elapsed_s, examples = 0, math.inf, 0.0, 0
    if state is not None:  # loaded on the CPU: the RNG setters want CPU tensors, and
        # load_state_dict moves weights and optimizer moments onto the model's device
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError) as e:
            raise CheckpointError(f"{run_dir}: the checkpoint does not fit config.json "
                                  f"({describe_mismatch(e)})") from None
        step, best_val = state["step"], state["best_val"]
        elapsed_s, examples = state["elapsed_s"], state["examples"]
        torch.set_rng_state(state["rng"][dist_info.rank % len(state["rng"])])
        if use_bf16 and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"])
    ddp_model = model
    if dist_info.world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None)

    logger = None
    if dist_info.main:
        if resume:  # rows a killed run logged past its checkpoint are logged again from here
            dropped = drop_metrics_after_step(run_dir, step)
            if dropped:
                _say(f"dropped {dropped} metrics.csv row(s) logged after step {step}")
        logger = Logger(run_dir, purge_step=step + 1 if resume else None)
    stop = StopFlag()
    stop.install()

    def checkpoint(tag: str = "") -> None:
        # Every rank's RNG is gathered so a resumed DDP run continues each stream.
        rng = [torch.get_rng_state()]
        if dist_info.world > 1:
            rng = [None] * dist_info.world
            dist.all_gather_object(rng, torch.get_rng_state())
        if not dist_info.main:
            return
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                 "best_val": best_val, "elapsed_s": elapsed_s, "examples": examples, "rng": rng,
                 "cuda_rng": torch.cuda.get_rng_state() if use_bf16 else None}
        save_checkpoint_atomic(run_dir / "checkpoints" / f"step_{step:08d}.pt", state)
        rotate_checkpoints(run_dir, train_cfg.keep_last)

    if dist_info.main:
        print(f"groove-train: {preset} ({count_parameters(model) / 1e6:.2f} M params, "
              f"{model_cfg.continuous_head} head) on {dev}, {len(x_train)} train / "
              f"{len(x_val)} validation windows, world {dist_info.world}, "
              f"{'resuming at step ' + str(step) if resume else 'new run'} -> {run_dir}",
              file=sys.stderr, flush=True)
    bar = None
    if progress and dist_info.main:
        from tqdm import tqdm
        bar = tqdm(total=train_cfg.max_steps, initial=step, unit="step", dynamic_ncols=True)

    model.train()
    t_last = time.perf_counter()
    ex_since = 0
    t_start_s = time.perf_counter() - elapsed_s
    stopped_by = ""
    while step < train_cfg.max_steps:
        idx = torch.from_numpy(batch_indices(len(x_train), train_cfg.batch_size, train_cfg.seed,
                                             step, dist_info)).to(dev)
        x = x_train[idx]
        lr = learning_rate(train_cfg, step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with autocast():
            heads, mu, sigma = ddp_model(x)
            terms = losses({k: v.float() for k, v in heads.items()}, x, mu.float(), sigma.float(),
                           model_cfg)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(),
                                                         train_cfg.grad_clip_norm))
        if math.isfinite(grad_norm) and grad_norm <= train_cfg.grad_norm_reset:
            optimizer.step()
        # else: Magenta zeroes such an update; the step still counts.
        step += 1
        examples += train_cfg.batch_size
        ex_since += train_cfg.batch_size
        elapsed_s = time.perf_counter() - t_start_s

        if dist_info.main and (step % train_cfg.log_every == 0 or step == 1):
            now = time.perf_counter()
            eps = ex_since / max(now - t_last, 1e-9)
            t_last, ex_since = now, 0
            scalars = {k: float(v.detach()) for k, v in terms.items()}
            scalars.update(lr=lr, grad_norm=grad_norm, examples_per_s=eps)
            logger.log(step, "train", scalars)
            if bar is not None:
                bar.set_postfix(loss=f"{scalars['loss']:.1f}", kl=f"{scalars['kl']:.1f}",
                                ex_s=f"{eps:.0f}")
        if bar is not None:
            bar.update(1)

        # Agree on stopping across ranks, so every rank checkpoints/leaves at the same step.
        want_stop = bool(stop.reason) or (train_cfg.max_minutes > 0
                                          and elapsed_s >= 60 * train_cfg.max_minutes)
        if dist_info.world > 1:
            flag = torch.tensor([int(want_stop)], device=dev)
            dist.all_reduce(flag)
            want_stop = bool(flag.item())
        last = want_stop or step >= train_cfg.max_steps
        if step % train_cfg.eval_every == 0 or last:
            if dist_info.main:
                val = _validate(model, x_val, model_cfg, 256, train_cfg.eval_batches, dev, autocast)
                logger.log(step, "validation", val)
                if val["loss"] < best_val:
                    best_val = val["loss"]
                    save_checkpoint_atomic(run_dir / "best.pt",
                                           {"model": model.state_dict(), "step": step,
                                            "val": val})
                plot_loss_curve(run_dir)
                if bar is not None:
                    bar.write(f"step {step}: validation loss {val['loss']:.2f} (recon "
                              f"{val['recon']:.2f}, KL {val['kl']:.1f}), best {best_val:.2f}")
            if dist_info.world > 1:
                # rank 0's best_val is the one saved; keep ranks in step
                obj = [best_val]
                dist.broadcast_object_list(obj, src=0)
                best_val = obj[0]
        if step % train_cfg.checkpoint_every == 0 or last:
            checkpoint()
        if want_stop:
            stopped_by = stop.reason or "time budget"
            break

    stop.restore()
    if bar is not None:
        bar.close()
    if logger is not None:
        logger.close()
    if dist_info.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    summary = {"step": step, "best_val": best_val, "elapsed_s": elapsed_s, "examples": examples,
               "stopped_by": stopped_by, "run_dir": str(run_dir)}
    if dist_info.main:
        how = f"stopped by {stopped_by}" if stopped_by else "finished"
        print(f"groove-train: {how} at step {step} after {elapsed_s / 60:.1f} min; best validation "
              f"loss {best_val:.2f}; checkpoint in {run_dir}"
              + ("; continue with --resume" if stopped_by and stopped_by != "time budget" else ""),
              file=sys.stderr, flush=True)
    return summary
