"""Training: resume is exact, signals checkpoint, DDP runs on 2 CPU processes, loss falls."""
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from groove_live.train.data import prepare
from groove_live.train.fit import fit
from groove_live.train.run import latest_checkpoint, load_model

# The cadence these tests count on (validate and checkpoint every 5 steps, a metrics row
# every step); the tiny preset's own default is coarser, so 300-step smoke runs stay fast.
FINE_CADENCE = {"eval_every": 5, "checkpoint_every": 5, "log_every": 1}
FINE_CADENCE_ARGS = ("--eval-every", "5", "--checkpoint-every", "5", "--log-every", "1")

GMD = Path(__file__).parents[1] / "fixtures" / "gmd"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("ds")
    prepare(GMD, out, progress=False)
    return out


def _weights(run_dir, which="latest"):
    return load_model(run_dir, which=which)[0].state_dict()


def test_resume_continues_exactly(dataset, tmp_path):
    fit(tmp_path / "straight", dataset, "groovae_tiny", train_overrides={"max_steps": 20, **FINE_CADENCE},
        progress=False)
    fit(tmp_path / "split", dataset, "groovae_tiny", train_overrides={"max_steps": 10, **FINE_CADENCE},
        progress=False)
    fit(tmp_path / "split", None, resume=True, train_overrides={"max_steps": 20, **FINE_CADENCE}, progress=False)
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "split")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)
    # and it really trained: weights moved from their initialisation
    torch.manual_seed(1234)
    from groove_live.train.config import PRESETS
    from groove_live.train.model import GrooVAE
    init = GrooVAE(PRESETS["groovae_tiny"].model).state_dict()
    assert any(not torch.allclose(init[k], a[k]) for k in a)


def test_validation_loss_falls_on_real_gmd(dataset, tmp_path):
    fit(tmp_path / "run", dataset, "groovae_tiny",
        train_overrides={"max_steps": 80, "eval_every": 10, "eval_batches": 0,
                         "checkpoint_every": 5, "learning_rate": 3e-3},
        progress=False)
    rows = [r for r in csv.DictReader(open(tmp_path / "run" / "metrics.csv"))
            if r["split"] == "validation"]
    losses = [float(r["loss"]) for r in rows]
    assert len(losses) == 8
    assert min(losses[-3:]) < 0.8 * losses[0], losses
    assert (tmp_path / "run" / "best.pt").is_file() and (tmp_path / "run" / "loss_curve.png").is_file()
    assert len(list((tmp_path / "run" / "checkpoints").glob("*.pt"))) == 3  # keep_last


def _cli(*args):
    return [sys.executable, "-m", "groove_live.train.cli", *args]


def _wait_for_checkpoint(run_dir: Path, proc, min_step: int, timeout_s: float = 120) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "fit exited early"
        latest = latest_checkpoint(run_dir)
        if latest is not None and int(latest.stem.split("_")[1]) >= min_step:
            return int(latest.stem.split("_")[1])
        time.sleep(0.05)  # polling a file the other process writes; no event to wait on
    raise TimeoutError("no checkpoint appeared")


def test_sigterm_checkpoints_and_resume_goes_on(dataset, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(_cli("fit", "--data", str(dataset), "--run", str(run), "--preset",
                                 "groovae_tiny", "--max-steps", "100000", *FINE_CADENCE_ARGS,
                                 "--no-progress"),
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_checkpoint(run, proc, 5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "stopped by SIGTERM" in err
    step = torch.load(latest_checkpoint(run), weights_only=True)["step"]
    assert step >= 5
    r = subprocess.run(_cli("fit", "--run", str(run), "--resume", "--max-steps", str(step + 3),
                            "--no-progress"), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"resuming at step {step}" in r.stderr
    assert torch.load(latest_checkpoint(run), weights_only=True)["step"] == step + 3


def test_kill_9_loses_at_most_one_checkpoint_interval(dataset, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(_cli("fit", "--data", str(dataset), "--run", str(run), "--preset",
                                 "groovae_tiny", "--max-steps", "100000", *FINE_CADENCE_ARGS,
                                 "--checkpoint-every", "3", "--no-progress"), stderr=subprocess.DEVNULL)
    try:
        _wait_for_checkpoint(run, proc, 9)
        proc.kill()  # SIGKILL: no handler runs
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    state = torch.load(latest_checkpoint(run), weights_only=True)  # never a torn file
    assert state["step"] >= 9 and state["step"] % 3 == 0
    load_model(run, which="latest")
    # resuming clears what the kill left: a torn *.tmp, rows logged past the checkpoint
    fit(run, None, resume=True, train_overrides={"max_steps": state["step"] + 1}, progress=False)
    assert not list(run.rglob("*.tmp"))
    rows = [(r["step"], r["split"]) for r in csv.DictReader(open(run / "metrics.csv"))]
    assert len(rows) == len(set(rows))
    assert sorted(int(s) for s, split in rows if split == "train") == list(
        range(1, state["step"] + 2))


@pytest.mark.slow
def test_ddp_two_cpu_processes(dataset, tmp_path):
    run = tmp_path / "ddp"
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc_per_node=2", "-m", "groove_live.train.cli", "fit", "--data",
                        str(dataset), "--run-dir", str(run), "--preset", "groovae_tiny",
                        "--max-steps", "6", "--no-progress"],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "world 2" in r.stderr
    state = torch.load(latest_checkpoint(run), weights_only=True)
    assert state["step"] == 6 and len(state["rng"]) == 2  # both ranks' RNG streams saved
    load_model(run, which="latest")


def test_no_progress_still_says_each_validation(dataset, tmp_path):
    r = subprocess.run(_cli("fit", "--data", str(dataset), "--run", str(tmp_path / "run"),
                            "--preset", "groovae_tiny", "--max-steps", "10", "--eval-every", "5",
                            "--no-progress"), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    said = [line for line in r.stderr.splitlines() if line.startswith("groove-train: step ")]
    assert [line.split(": ")[1] for line in said] == ["step 5", "step 10"], r.stderr
