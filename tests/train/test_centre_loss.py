"""The humanize model's centre term: what temperature 0 plays is trained to be the score's
expected performance, not whatever z = 0 happens to decode to."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from groove_live.pattern import Patterns  # noqa: E402
from groove_live.train.model import ConditionedVAE  # noqa: E402
from groove_live.train.config import ModelConfig, spec_for, task_fields  # noqa: E402

CFG = ModelConfig(enc_rnn_sizes=(16,), dec_rnn_sizes=(16,), z_size=4, dropout=0.0,
                  continuous_head="gaussian", free_bits=0.0)
KICK_OFFSET = 0.2  # every kick of the toy takes is played this late (step fractions)


def _model(centre_weight: float, seed: int = 0) -> ConditionedVAE:
    torch.manual_seed(seed)
    cfg = dataclasses.replace(CFG, centre_weight=centre_weight)
    return ConditionedVAE(cfg, spec_for(cfg, **task_fields("humanize")))


def _takes(model: ConditionedVAE, n: int = 64, seed: int = 0) -> torch.Tensor:
    """Played windows: random hits, the kick always KICK_OFFSET late, the rest of the timing
    and every velocity random per take (what no score can tell)."""
    spec = model.spec
    rng = np.random.default_rng(seed)
    shape = (n, spec.steps, spec.n_drums)
    hits = (rng.random(shape) < 0.3).astype(np.float32)
    vel = rng.uniform(0.3, 1.0, shape).astype(np.float32) * hits
    off = rng.uniform(-0.3, 0.3, shape).astype(np.float32)
    off[..., 0] = KICK_OFFSET
    played = Patterns(hits, vel, off * hits)
    return torch.from_numpy(ConditionedVAE.training_inputs(played, spec))


def test_without_the_centre_weight_the_loss_is_the_vae_loss_alone():
    model = _model(0.0)
    x = _takes(model)
    terms = model.loss_terms(model(x, generator=torch.Generator().manual_seed(1)), x)
    assert "centre_loss" not in terms
    assert torch.allclose(terms["loss"], terms["recon"] + CFG.beta * terms["kl_cost"])


def test_the_centre_term_is_the_z0_decodes_squared_error_on_the_played_hits():
    model = _model(3.0)
    x = _takes(model)
    terms = model.loss_terms(model(x, generator=torch.Generator().manual_seed(1)), x)
    assert torch.allclose(terms["loss"],
                          terms["recon"] + CFG.beta * terms["kl_cost"] + 3.0 * terms["centre_loss"])
    c = model.spec.n_drums
    target, control = model.split(x)
    heads = model.decoder(torch.zeros(len(x), CFG.z_size), control)
    hits = target[..., :c]
    by_hand = ((heads["velocity_mean"] - target[..., c:2 * c]) ** 2
               + (2 * heads["offset_mean"] - 2 * target[..., 2 * c:]) ** 2) * hits
    assert torch.allclose(terms["centre_loss"], by_hand.sum(dim=(1, 2)).mean())


def test_the_centre_term_trains_the_decoder_only():
    model = _model(1.0)
    x = _takes(model)
    target, control = model.split(x)
    c = model.spec.n_drums
    hits, vel, off = target[..., :c], target[..., c:2 * c], target[..., 2 * c:]
    model.centre_loss(control, vel, off, hits * model.generated).backward()
    assert all(p.grad is None or not p.grad.any() for p in model.encoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.decoder.parameters())


def _kick_error_at_temperature_zero(model: ConditionedVAE, steps: int) -> float:
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(2)
    for i in range(steps):
        x = _takes(model, seed=i)
        loss = model.loss_terms(model(x, generator=gen), x)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    x = _takes(model, seed=10_000)
    with torch.no_grad():
        _, control = model.split(x)
        hits, _, off = model.generate(control, temperature=0.0)
    kicks = hits[..., 0] > 0
    return float((off[..., 0][kicks] - KICK_OFFSET).abs().mean())


def test_with_the_centre_term_temperature_zero_plays_what_the_score_predicts():
    """The kick's lateness is the one thing the score tells; with the centre term the most
    likely take learns it, and it learns it better than without the term."""
    with_centre = _kick_error_at_temperature_zero(_model(10.0), steps=60)
    without = _kick_error_at_temperature_zero(_model(0.0), steps=60)
    assert with_centre < 0.05
    assert with_centre < without
