"""The chorale harmonizer GAN: shapes, the gradient penalty by hand, the pitched spec's rules, and
fit running it through the model-defined step with exact resume."""
import csv
import json

import numpy as np
import pytest
import torch

from groove_live.chorale import REST, voices_to_roll
from groove_live.spec import DEFAULT_SPEC, Control, ModelSpec, SpecError, Voice
from groove_live.train import model as model_module
from groove_live.train.chorale_gan import ChoraleGAN, gradient_penalty, voices_to_rolls
from groove_live.train.config import CHORALE_2BAR, PRESETS
from groove_live.train.fit import fit
from groove_live.train.run import load_model

TINY = PRESETS["chorale_wgan_gp_tiny"]
SPEC = TINY.spec()
FINE = {"eval_every": 2, "checkpoint_every": 2, "log_every": 1}


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    """fit and load_model build models by kind from model.MODELS."""
    monkeypatch.setitem(model_module.MODELS, "pitched", ChoraleGAN)


def _model() -> ChoraleGAN:
    torch.manual_seed(0)
    return ChoraleGAN(TINY.model, SPEC)


def _windows(n: int, seed: int) -> np.ndarray:
    """(n, 32, 4) pitches in each voice's range, a rest here and there."""
    rng = np.random.default_rng(seed)
    lows, highs = np.array([60, 52, 46, 36]), np.array([81, 74, 69, 66])
    v = rng.integers(lows, highs + 1, size=(n, 32, 4))
    v[rng.random(v.shape) < 0.05] = REST
    return v.astype(np.int8)


def _cache(folder, n_train=24, n_val=8):
    """A chorale cache as train/chorale_data.py writes it, with the pitched spec fit checks."""
    folder.mkdir()
    for split, n, seed in (("train", n_train, 1), ("validation", n_val, 2), ("test", 4, 3)):
        np.savez_compressed(folder / f"{split}.npz", voices=_windows(n, seed))
    spec = DEFAULT_SPEC.replace(**CHORALE_2BAR)
    (folder / "dataset.json").write_text(json.dumps({"spec": spec.to_dict(),
                                                     "description": "hand-made windows"}))
    return folder


def test_generator_and_critic_shapes():
    model = _model().eval()
    melody = torch.from_numpy(voices_to_roll(_windows(3, 0)[..., :1]))[..., 0]
    z = model.noise(3, "cpu")
    with torch.no_grad():
        rolls = model(z, melody)
        score = model.critic(rolls, melody)
    shapes = SPEC.io_shapes(3)
    assert z.shape == shapes["decoder_inputs"]["z"] == (3, 2, 8, TINY.model.z_size)
    assert melody.shape == shapes["decoder_inputs"]["melody"] == (3, 32, 128)
    assert rolls.shape == shapes["decoder_outputs"]["rolls"] == (3, 32, 128, 3)
    assert rolls.abs().max() <= 1.0 and score.shape == (3, 1)


def test_rolls_on_the_device_match_the_shared_representation():
    v = _windows(2, 5).astype(np.int64)
    v[0, 0] = [REST, 52, REST, 36]
    assert np.array_equal(voices_to_rolls(torch.from_numpy(v)).numpy(), voices_to_roll(v))


def test_gradient_penalty_of_a_linear_critic_is_known():
    # critic(x) = <w, x>: its gradient is w at every x, so the penalty is (||w|| - 1)^2 whatever
    # the interpolation, and its gradient by w is 2 (||w|| - 1) w / ||w||.
    w = torch.zeros(2, 3, 4)
    w[0, 0, 0], w[1, 2, 3] = 2.0, -2.0 * 2 ** 0.5  # ||w|| = sqrt(4 + 8) = sqrt(12)
    w.requires_grad_(True)
    critic = lambda x, melody: (x * w).sum(dim=(1, 2, 3))[:, None]
    real, fake = torch.randn(5, 2, 3, 4), torch.randn(5, 2, 3, 4)
    gp = gradient_penalty(critic, real, fake, None, torch.rand(5))
    norm = 12 ** 0.5
    assert gp.item() == pytest.approx((norm - 1) ** 2)
    gp.backward()
    torch.testing.assert_close(w.grad, 2 * (norm - 1) * w.detach() / norm)
    # a unit-norm critic is not penalised
    unit = lambda x, melody: x[:, 0, 0, 0][:, None]
    assert gradient_penalty(unit, real, fake, None, torch.rand(5)).item() == pytest.approx(0.0)


def test_one_train_step_updates_both_networks_and_reports_its_terms():
    model = _model().train()
    opts = model.make_optimizers(TINY.train)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batches = [torch.from_numpy(_windows(4, s).astype(np.int64))
               for s in range(model.batches_per_step)]
    terms = model.train_step(batches, opts, 0, 1e-3)
    assert set(terms) == {"loss", "critic_loss", "wasserstein", "gradient_penalty",
                          "generator_loss"}
    assert all(torch.isfinite(v) for v in terms.values())
    after = model.state_dict()
    for part in ("generator.", "critic."):
        assert any(not torch.equal(before[k], after[k]) for k in after if k.startswith(part))


def test_pitched_spec_round_trips_and_states_its_shapes():
    assert ModelSpec.from_json(SPEC.to_json()) == SPEC
    assert [v.name for v in SPEC.voices] == ["alto", "tenor", "bass"]
    assert [v.midi_channel for v in SPEC.voices] == [1, 2, 3]
    assert SPEC.io_shapes()["encoder_inputs"] == {} and SPEC.window_spec() is SPEC
    assert "voices" not in json.loads(ModelSpec().to_json())  # drum specs as before
    assert SPEC.data_shape_mismatch(SPEC.replace(voices=SPEC.voices[:2]))[0] == "voices"


@pytest.mark.parametrize("changes, says", [
    ({"drums": DEFAULT_SPEC.drums}, "voices, not drums"),
    ({"voices": ()}, "needs 1..16 voices"),
    ({"controls": ()}, "needs at least one control"),
    ({"controls": (Control("melody", 64),)}, "piano roll of 128 channels"),
    ({"bars": 1, "steps_per_bar": 8}, "not a multiple of 16"),
    ({"voices": (Voice("alto", 1, 52, 128),)}, "not a MIDI pitch"),
    ({"voices": (Voice("alto", 16, 52, 74),)}, "MIDI channel 16"),
    ({"voices": (Voice("alto", 1, 74, 52),)}, "empty pitch range"),
    ({"decoder_outputs": ("hits", "velocities", "offsets")}, "not 1 tensor names"),
])
def test_pitched_spec_refusals_name_the_field(changes, says):
    with pytest.raises(SpecError, match=says):
        SPEC.replace(**changes).validate()


def test_voices_are_refused_on_a_drum_spec():
    with pytest.raises(SpecError, match="only for kind 'pitched'"):
        ModelSpec(voices=SPEC.voices).validate()


def _weights(run_dir):
    return load_model(run_dir, which="latest")[0].state_dict()


def test_fit_trains_the_gan_and_resumes_exactly(tmp_path):
    data = _cache(tmp_path / "data")
    fit(tmp_path / "straight", data, "chorale_wgan_gp_tiny",
        train_overrides={"max_steps": 4, **FINE}, progress=False)
    fit(tmp_path / "split", data, "chorale_wgan_gp_tiny",
        train_overrides={"max_steps": 2, **FINE}, progress=False)
    fit(tmp_path / "split", None, resume=True, train_overrides={"max_steps": 4, **FINE},
        progress=False)
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "split")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)
    init = _model().state_dict()  # fit seeds with the preset's seed; this is another draw
    assert any(not torch.equal(init[k], a[k]) for k in a if k.startswith("generator."))

    run = tmp_path / "straight"
    state = torch.load(run / "checkpoints" / "step_00000004.pt", weights_only=True)
    assert set(state["optimizer"]) == {"generator", "critic"}
    assert state["examples"] == 4 * TINY.train.batch_size * ChoraleGAN.batches_per_step
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [r["step"] for r in rows if r["split"] == "train"] == ["1", "2", "3", "4"]
    val = [r for r in rows if r["split"] == "validation"]
    assert [r["step"] for r in val] == ["2", "4"]
    for r in val:
        assert float(r["gradient_penalty"]) >= 0 and 0 <= float(r["empty_bar_rate"]) <= 1
        assert float(r["loss"]) == float(r["wasserstein"])
    assert (run / "best.pt").is_file() and (run / "loss_curve.png").is_file()


LAUNCHER = '''
import os, sys, torch
from groove_live.train import model as model_module
from groove_live.train.chorale_gan import ChoraleGAN
from groove_live.train.fit import fit

class Recorded(ChoraleGAN):
    """Saves this rank's weights after every step: the ranks must stay identical."""
    def train_step(self, *args, **kwargs):
        terms = super().train_step(*args, **kwargs)
        torch.save(self.state_dict(), os.path.join(sys.argv[3], f"rank{os.environ['RANK']}.pt"))
        return terms

model_module.MODELS["pitched"] = Recorded
fit(sys.argv[2], sys.argv[1], "chorale_wgan_gp_tiny", train_overrides={"max_steps": 3},
    progress=False)
'''


@pytest.mark.slow
def test_ddp_two_cpu_processes_keep_identical_weights(tmp_path):
    import os
    import subprocess
    import sys
    data = _cache(tmp_path / "data")
    script = tmp_path / "launch.py"
    script.write_text(LAUNCHER)
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc_per_node=2", str(script), str(data), str(tmp_path / "run"),
                        str(tmp_path)], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "world 2" in r.stderr
    a, b = (torch.load(tmp_path / f"rank{i}.pt", weights_only=True) for i in (0, 1))
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6, msg=name)
    state = torch.load(tmp_path / "run" / "checkpoints" / "step_00000003.pt", weights_only=True)
    assert len(state["rng"]) == 2 and set(state["optimizer"]) == {"generator", "critic"}
