"""`groove-train fit`: the training loop, checkpointed, resumable, DDP-ready.

Runs alone or under `torchrun --nproc_per_node=N` (gloo on CPU, NCCL on GPU): each rank takes
its share of every global batch, rank 0 validates, logs and writes checkpoints. Read `fit` from
the top: set up the run, load the data, build model and optimizer, resume, then loop over
train step / evaluate / checkpoint / log, each a small function below.

A model whose training is not one loss and one optimizer (a GAN: two optimizers, several critic
updates per generator update) defines its own step, and fit runs it in the same loop with the
same batches, checkpoints, resume and logs. Such a model class defines:
  make_optimizers(train_cfg) -> {name: optimizer}   (each one's state is checkpointed)
  train_step(batches, optimizers, step, lr) -> {term: tensor}, "loss" among them
  batches_per_step   how many batches a step takes (global batches step*k .. step*k + k-1)
  evaluate_terms(x, generator) -> {term: float}     validation of one batch, "loss" among them
  log_fields         the metrics.csv columns of its terms
  read_split(data_dir, split)                       its data cache's windows (training_inputs
                                                    then makes the tensors, as for every model)
  describe_validation(val, best), progress_terms(scalars), plot_curves(run_dir)
Under DDP it is not wrapped: fit copies rank 0's weights to every rank and sets model.world,
and the model averages its gradients over the ranks itself (DDP does not support
torch.autograd.grad, which a gradient penalty needs).
"""
from __future__ import annotations

import contextlib
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

from groove_live.spec import ModelSpec

from .config import ModelConfig, TrainConfig, get_preset
from .data import DataError, load_dataset_info, load_split
from .model import MODELS, GrooVAE, build_model, count_parameters
from .run import (CheckpointError, clean_stale_temp_files, describe_mismatch,
                  drop_metrics_after_step, load_run_config, model_header,
                  newest_loadable_checkpoint, rotate_checkpoints, save_checkpoint_atomic,
                  save_run_config, set_aside_checkpoint)

LOG_FIELDS = ("step", "split", "loss", "recon", "hit_loss", "velocity_loss", "offset_loss", "kl",
              "kl_cost", "lr", "grad_norm", "examples_per_s", "accuracy")
EVAL_BATCH_SIZE = 256


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


@dataclass(frozen=True)
class RunPlan:
    """What a run trains: resolved once, from the preset (new run) or config.json (resume)."""
    run_dir: Path
    preset: str
    model_cfg: ModelConfig
    train_cfg: TrainConfig
    spec: ModelSpec
    data_dir: Path


@dataclass
class Progress:
    """The loop's counters: all a checkpoint must restore besides weights, moments and RNG."""
    step: int = 0
    best_val: float = math.inf
    elapsed_s: float = 0.0
    examples: int = 0


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


def _say(message: str) -> None:
    print(f"groove-train: {message}", file=sys.stderr, flush=True)


# --- setup: processes, device, the run's plan ---------------------------------------------------
def init_distributed() -> DistInfo:
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return DistInfo()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def pick_device(device: str, dist_info: DistInfo) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        torch.cuda.set_device(dist_info.local_rank)
        return torch.device("cuda", dist_info.local_rank)
    return torch.device(device)


def check_dataset(data_dir: Path | None, spec: ModelSpec, expecting: str) -> str:
    """Refuse a data cache whose shape is not the model's, in one line naming the field; return
    the cache's description (the spec's training_data)."""
    if data_dir is None:
        raise DataError("no prepared dataset given (--data DATASET_DIR)")
    data_spec, description = load_dataset_info(data_dir)
    # A task model reads a GrooVAE's windows and makes its controls from them.
    mismatch = spec.window_spec().data_shape_mismatch(data_spec)
    if mismatch:
        name, theirs, ours = mismatch
        raise DataError(f"data cache {data_dir} has {name}={theirs}, {expecting} expects {ours}")
    return description


def plan_run(run_dir: Path, data_dir, preset: str, model_overrides: dict | None,
             train_overrides: dict | None, resume: bool, dist_info: DistInfo) -> RunPlan:
    """A new run from its preset (config and spec written), or the saved plan of a run to
    resume. Either way the data cache must have the spec's shape."""
    if resume:
        preset, model_cfg, train_cfg, spec, data_dir_saved = load_run_config(run_dir)
        data_dir = Path(data_dir or data_dir_saved)
        if train_overrides:  # e.g. a longer max_steps or time budget for the continuation
            train_cfg = replace(train_cfg, **train_overrides)
        check_dataset(data_dir, spec, f"run {run_dir.name}")
        return RunPlan(run_dir, preset, model_cfg, train_cfg, spec, data_dir)
    p = get_preset(preset)
    model_cfg = replace(p.model, **(model_overrides or {}))
    train_cfg = replace(p.train, **(train_overrides or {}))
    if dist_info.main and (run_dir / "config.json").exists():
        raise FileExistsError(f"{run_dir} already holds a run; use --resume to continue it")
    data_dir = Path(data_dir) if data_dir is not None else None
    description = check_dataset(data_dir, p.spec(model_cfg), f"preset {preset}")
    spec = p.spec(model_cfg, model_name=p.model_name, training_data=description,
                  run_id=run_dir.name)
    if dist_info.main:
        save_run_config(run_dir, preset, model_cfg, train_cfg, spec, str(data_dir))
    return RunPlan(run_dir, preset, model_cfg, train_cfg, spec, data_dir)


def clean_run_folder(run_dir: Path) -> None:
    stale = clean_stale_temp_files(run_dir)
    if stale:
        _say(f"removed {len(stale)} stale temp file(s) of interrupted writes: "
             + ", ".join(str(p.relative_to(run_dir)) for p in stale))


def defines_own_step(model) -> bool:
    """A model (or model class) that trains through its own step (see the top of this file)."""
    return hasattr(model, "make_optimizers") and hasattr(model, "train_step")


# --- data ---------------------------------------------------------------------------------------
def load_data(data_dir: Path, spec: ModelSpec, dev: torch.device
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, validation) batches' source tensors on the device, as the spec's kind of model
    reads them (a GrooVAE the windows, a task model the windows beside their task inputs)."""
    model_class = MODELS[spec.kind]
    if hasattr(model_class, "read_split"):  # a cache of its own kind (e.g. chorale windows)
        train_p = model_class.read_split(data_dir, "train")
        val_p = model_class.read_split(data_dir, "validation")
    else:
        train_p, _ = load_split(data_dir, "train")
        val_p, _ = load_split(data_dir, "validation")
    if len(train_p) == 0:
        raise DataError(f"{data_dir}: the train split is empty")
    inputs = model_class.training_inputs
    x_train = torch.from_numpy(inputs(train_p, spec)).to(dev)  # (N, T, D)
    x_val = torch.from_numpy(inputs(val_p, spec)).to(dev)  # (M, T, D)
    return x_train, x_val


# --- model, optimizer, resume -------------------------------------------------------------------
def model_and_optimizer(plan: RunPlan, dev: torch.device, dist_info: DistInfo
                        ) -> tuple[GrooVAE, torch.optim.Optimizer]:
    """The model and its optimizer, or for a model with its own step its {name: optimizer}."""
    torch.manual_seed(plan.train_cfg.seed + dist_info.rank)  # each rank its own stream
    model = build_model(plan.model_cfg, plan.spec).to(dev)
    if defines_own_step(model):
        return model, model.make_optimizers(plan.train_cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=plan.train_cfg.learning_rate)
    return model, optimizer


def optimizer_state(optimizer) -> dict:
    """One optimizer's state, or {name: state} of a model's several."""
    if isinstance(optimizer, dict):
        return {name: opt.state_dict() for name, opt in optimizer.items()}
    return optimizer.state_dict()


def load_optimizer_state(optimizer, state: dict) -> None:
    if not isinstance(optimizer, dict):
        optimizer.load_state_dict(state)
        return
    if not isinstance(state, dict) or set(state) != set(optimizer):
        raise ValueError(f"optimizers {sorted(state) if isinstance(state, dict) else state!r}, "
                         f"the model has {sorted(optimizer)}")
    for name, opt in optimizer.items():
        opt.load_state_dict(state[name])


def load_resume_state(run_dir: Path, dist_info: DistInfo) -> dict:
    """The newest checkpoint that loads safely. Newer ones that do not (torn by a kill, empty,
    or holding code) are named with the reason, and rank 0 sets them aside."""
    _, state, skipped = newest_loadable_checkpoint(run_dir)
    if dist_info.main:
        for path, reason in skipped:
            _say(f"skipped {reason}; set aside as {set_aside_checkpoint(path).name}")
    return state


def restore(state: dict, model: GrooVAE, optimizer, dist_info: DistInfo, use_cuda_rng: bool,
            run_dir: Path) -> Progress:
    """Weights, optimizer moments, counters and this rank's RNG from a checkpoint (loaded on
    the CPU: the RNG setters want CPU tensors, and load_state_dict moves weights and moments
    onto the model's device)."""
    try:
        model.load_state_dict(state["model"])
        load_optimizer_state(optimizer, state["optimizer"])
    except (RuntimeError, ValueError) as e:
        raise CheckpointError(f"{run_dir}: the checkpoint does not fit config.json "
                              f"({describe_mismatch(e)})") from None
    torch.set_rng_state(state["rng"][dist_info.rank % len(state["rng"])])
    if use_cuda_rng and state.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(state["cuda_rng"])
    return Progress(state["step"], state["best_val"], state["elapsed_s"], state["examples"])


# --- one step, evaluation, checkpoints ----------------------------------------------------------
def train_step(ddp_model, model: GrooVAE, optimizer, x: torch.Tensor, lr: float,
               plan: RunPlan, autocast) -> tuple[dict[str, torch.Tensor], float]:
    """Forward, backward, clip, update: the loss terms and the global gradient norm."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    with autocast():
        terms = model.loss_terms(ddp_model(x), x)
    optimizer.zero_grad(set_to_none=True)
    terms["loss"].backward()
    grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(),
                                                     plan.train_cfg.grad_clip_norm))
    if math.isfinite(grad_norm) and grad_norm <= plan.train_cfg.grad_norm_reset:
        optimizer.step()
    # else: Magenta zeroes such an update; the step still counts.
    return terms, grad_norm


def evaluate(model: GrooVAE, x_val: torch.Tensor, cfg: ModelConfig, batch_size: int,
             max_batches: int, device, autocast) -> dict[str, float]:
    """Mean losses over the validation split, with a fixed z draw so runs compare exactly.
    A model with `evaluate_terms` gives each batch's terms itself (a GAN's critic needs
    gradients there, for its penalty)."""
    model.eval()
    gen = torch.Generator(device=device).manual_seed(0)
    totals: dict[str, float] = {}
    n = 0
    own_terms = getattr(model, "evaluate_terms", None)
    with (contextlib.nullcontext() if own_terms else torch.no_grad()), autocast():
        for i, lo in enumerate(range(0, len(x_val), batch_size)):
            if max_batches and i >= max_batches:
                break
            x = x_val[lo:lo + batch_size]
            terms = (own_terms(x, gen) if own_terms
                     else model.loss_terms(model(x, generator=gen), x))
            for k, v in terms.items():
                totals[k] = totals.get(k, 0.0) + float(v) * len(x)
            n += len(x)
    model.train()
    return {k: v / max(n, 1) for k, v in totals.items()}


def save_best(plan: RunPlan, model: GrooVAE, step: int, val: dict[str, float]) -> None:
    save_checkpoint_atomic(plan.run_dir / "best.pt",
                           {"model": model.state_dict(), "step": step, "val": val,
                            **model_header(plan.model_cfg, plan.spec)})


def save_training_checkpoint(plan: RunPlan, model: GrooVAE, optimizer, progress: Progress,
                             dist_info: DistInfo, use_cuda_rng: bool) -> None:
    """Everything resume needs, on every rank's call (the RNG of each is gathered so a resumed
    DDP run continues each stream); rank 0 writes it and rotates old ones."""
    rng = [torch.get_rng_state()]
    if dist_info.world > 1:
        rng = [None] * dist_info.world
        dist.all_gather_object(rng, torch.get_rng_state())
    if not dist_info.main:
        return
    state = {"model": model.state_dict(), "optimizer": optimizer_state(optimizer),
             "step": progress.step, "best_val": progress.best_val,
             "elapsed_s": progress.elapsed_s, "examples": progress.examples, "rng": rng,
             "cuda_rng": torch.cuda.get_rng_state() if use_cuda_rng else None,
             **model_header(plan.model_cfg, plan.spec)}
    save_checkpoint_atomic(plan.run_dir / "checkpoints" / f"step_{progress.step:08d}.pt", state)
    rotate_checkpoints(plan.run_dir, plan.train_cfg.keep_last)


def share_weights(model: torch.nn.Module, dist_info: DistInfo) -> None:
    """Rank 0's weights and buffers on every rank, and the model told the world size: what DDP
    does for the models it wraps, for a model that averages its own gradients."""
    with torch.no_grad():
        for t in model.state_dict().values():
            dist.broadcast(t, src=0)
    model.world = dist_info.world


def agree_to_stop(want_stop: bool, dist_info: DistInfo, dev: torch.device) -> bool:
    """Stop on every rank if on any, so all checkpoint and leave at the same step."""
    if dist_info.world == 1:
        return want_stop
    flag = torch.tensor([int(want_stop)], device=dev)
    dist.all_reduce(flag)
    return bool(flag.item())


def share_best_val(best_val: float, dist_info: DistInfo) -> float:
    """Rank 0's best validation loss (the one saved), on every rank."""
    if dist_info.world == 1:
        return best_val
    obj = [best_val]
    dist.broadcast_object_list(obj, src=0)
    return obj[0]


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


# --- logging ------------------------------------------------------------------------------------
class Logger:
    """CSV always (the loss-curve PNG reads it); TensorBoard when it is installed."""

    def __init__(self, run_dir: Path, purge_step: int | None = None,
                 fields: tuple[str, ...] = LOG_FIELDS):
        self.path = run_dir / "metrics.csv"
        new = not self.path.exists()
        self.file = open(self.path, "a", newline="")
        self.csv = csv.DictWriter(self.file, fields, extrasaction="ignore")
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


def open_logger(run_dir: Path, step: int, resume: bool, fields: tuple[str, ...] = LOG_FIELDS
                ) -> Logger:
    if resume:  # rows a killed run logged past its checkpoint are logged again from here
        dropped = drop_metrics_after_step(run_dir, step)
        if dropped:
            _say(f"dropped {dropped} metrics.csv row(s) logged after step {step}")
    return Logger(run_dir, purge_step=step + 1 if resume else None, fields=fields)


class Throughput:
    """Examples per second between log lines."""

    def __init__(self):
        self.t_last_s = time.perf_counter()
        self.examples = 0

    def add(self, examples: int) -> None:
        self.examples += examples

    def take(self) -> float:
        now_s = time.perf_counter()
        rate = self.examples / max(now_s - self.t_last_s, 1e-9)
        self.t_last_s, self.examples = now_s, 0
        return rate


def plot_loss_curve(run_dir: Path) -> Path | None:
    """loss_curve.png from metrics.csv; None without matplotlib. Figure API, no pyplot: no
    global backend switch or figure registry in the training process."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    fig = Figure(figsize=(11, 4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
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
    return path


# --- the loop -----------------------------------------------------------------------------------
def fit(run_dir: str | Path, data_dir: str | Path | None = None, preset: str = "groovae_4bar_small",
        model_overrides: dict | None = None, train_overrides: dict | None = None,
        resume: bool = False, device: str = "auto", threads: int = 0,
        progress: bool = True) -> dict:
    """Train (or continue) a run. Returns the final state summary."""
    # setup
    dist_info = init_distributed()
    if threads:
        torch.set_num_threads(threads)
    plan = plan_run(Path(run_dir), data_dir, preset, model_overrides, train_overrides, resume,
                    dist_info)
    cfg, run_dir = plan.train_cfg, plan.run_dir
    if dist_info.main:
        clean_run_folder(run_dir)
    state = load_resume_state(run_dir, dist_info) if resume else None
    dev = pick_device(device, dist_info)
    use_bf16 = dev.type == "cuda"

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16)

    # data, model, optimizer, resume
    x_train, x_val = load_data(plan.data_dir, plan.spec, dev)
    model, optimizer = model_and_optimizer(plan, dev, dist_info)
    done = Progress() if state is None else restore(state, model, optimizer, dist_info,
                                                    use_bf16, run_dir)
    own_step = defines_own_step(model)
    per_step = getattr(model, "batches_per_step", 1) if own_step else 1
    ddp_model = model
    if dist_info.world > 1 and own_step:
        share_weights(model, dist_info)
    elif dist_info.world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None)
    logger = None
    if dist_info.main:
        logger = open_logger(run_dir, done.step, resume,
                             getattr(model, "log_fields", LOG_FIELDS) if own_step else LOG_FIELDS)
    stop = StopFlag()
    stop.install()
    if dist_info.main:
        _say(f"{plan.preset} ({count_parameters(model) / 1e6:.2f} M params, "
             f"kind {plan.spec.kind}) on {dev}, {len(x_train)} train / "
             f"{len(x_val)} validation windows, world {dist_info.world}, "
             f"{'resuming at step ' + str(done.step) if resume else 'new run'} -> {run_dir}")
    bar = None
    if progress and dist_info.main:
        from tqdm import tqdm
        bar = tqdm(total=cfg.max_steps, initial=done.step, unit="step", dynamic_ncols=True)

    # Gradients fading through hundreds of LSTM steps reach denormal floats, which x86 CPUs
    # compute ~100x slower: a 16-bar model's backward pass took 5.7 s instead of 1.0 s at batch
    # 64. Flushing them to zero changes nothing a model can learn from. Undone at the end.
    torch.set_flush_denormal(True)
    model.train()
    rate = Throughput()
    t_start_s = time.perf_counter() - done.elapsed_s
    stopped_by = ""
    while done.step < cfg.max_steps:
        # one train step
        lr = learning_rate(cfg, done.step)
        if own_step:  # the model's own step, on its global batches step*k .. step*k + k-1
            batches = [x_train[torch.from_numpy(batch_indices(
                len(x_train), cfg.batch_size, cfg.seed, done.step * per_step + j,
                dist_info)).to(dev)] for j in range(per_step)]
            terms = model.train_step(batches, optimizer, done.step, lr)
            grad_norm = None
        else:
            idx = torch.from_numpy(batch_indices(len(x_train), cfg.batch_size, cfg.seed,
                                                 done.step, dist_info)).to(dev)
            if hasattr(model, "set_train_step"):  # step-scheduled training (scheduled sampling)
                model.set_train_step(done.step)
            terms, grad_norm = train_step(ddp_model, model, optimizer, x_train[idx], lr, plan,
                                          autocast)
        done.step += 1
        done.examples += cfg.batch_size * per_step
        rate.add(cfg.batch_size * per_step)
        done.elapsed_s = time.perf_counter() - t_start_s

        # log
        if dist_info.main and (done.step % cfg.log_every == 0 or done.step == 1):
            scalars = {k: float(v.detach()) for k, v in terms.items()}
            scalars["lr"] = lr
            if grad_norm is not None:  # a model with its own step reports its own terms
                scalars["grad_norm"] = grad_norm
            scalars["examples_per_s"] = rate.take()
            logger.log(done.step, "train", scalars)
            if bar is not None and own_step:
                bar.set_postfix(**model.progress_terms(scalars),
                                ex_s=f"{scalars['examples_per_s']:.0f}")
            elif bar is not None:
                bar.set_postfix(loss=f"{scalars['loss']:.1f}", kl=f"{scalars['kl']:.1f}",
                                ex_s=f"{scalars['examples_per_s']:.0f}")
        if bar is not None:
            bar.update(1)

        want_stop = agree_to_stop(bool(stop.reason) or (
            cfg.max_minutes > 0 and done.elapsed_s >= 60 * cfg.max_minutes), dist_info, dev)
        last = want_stop or done.step >= cfg.max_steps

        # evaluate
        if done.step % cfg.eval_every == 0 or last:
            if dist_info.main:
                val = evaluate(model, x_val, plan.model_cfg, EVAL_BATCH_SIZE, cfg.eval_batches,
                               dev, autocast)
                logger.log(done.step, "validation", val)
                if val["loss"] < done.best_val:
                    done.best_val = val["loss"]
                    save_best(plan, model, done.step, val)
                # Also without a progress bar (--no-progress, logs): a long run must still
                # say how it is doing at every validation.
                if own_step:
                    model.plot_curves(run_dir)
                    line = f"step {done.step}: " + model.describe_validation(val, done.best_val)
                else:
                    plot_loss_curve(run_dir)
                    line = (f"step {done.step}: validation loss {val['loss']:.2f} (recon "
                            f"{val['recon']:.2f}, KL {val['kl']:.1f}), best {done.best_val:.2f}")
                if bar is not None:
                    bar.write(line)
                else:
                    _say(line)
            done.best_val = share_best_val(done.best_val, dist_info)

        # checkpoint
        if done.step % cfg.checkpoint_every == 0 or last:
            save_training_checkpoint(plan, model, optimizer, done, dist_info, use_bf16)
        if want_stop:
            stopped_by = stop.reason or "time budget"
            break

    # teardown
    stop.restore()
    torch.set_flush_denormal(False)  # process-wide: leave the caller's maths as IEEE says
    if bar is not None:
        bar.close()
    if logger is not None:
        logger.close()
    if dist_info.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    if dist_info.main:
        how = f"stopped by {stopped_by}" if stopped_by else "finished"
        _say(f"{how} at step {done.step} after {done.elapsed_s / 60:.1f} min; best validation "
             f"loss {done.best_val:.2f}; checkpoint in {run_dir}"
             + ("; continue with --resume" if stopped_by and stopped_by != "time budget" else ""))
    return {"step": done.step, "best_val": done.best_val, "elapsed_s": done.elapsed_s,
            "examples": done.examples, "stopped_by": stopped_by, "run_dir": str(run_dir)}
