"""GrooVAE shapes, losses on hand-computed cases, free bits and the sampling rule."""
import math
from dataclasses import replace

import pytest
import torch

from groove_live.train.config import PRESETS, ModelConfig
from groove_live.train.model import Decoder, GrooVAE, count_parameters, kl_divergence, losses

TINY = PRESETS["groovae_tiny"].model


def test_parameter_counts_match_the_presets():
    assert count_parameters(GrooVAE(PRESETS["groovae_4bar"].model)) == pytest.approx(4.09e6, rel=0.01)
    assert count_parameters(GrooVAE(PRESETS["groovae_4bar_small"].model)) == pytest.approx(1.06e6, rel=0.02)


@pytest.mark.parametrize("head", ["mean", "gaussian"])
def test_shapes_and_value_ranges(head):
    cfg = replace(TINY, continuous_head=head)
    model = GrooVAE(cfg).eval()
    x = torch.rand(5, 64, 27)
    heads, mu, sigma = model(x)
    assert heads["hit_logits"].shape == (5, 64, 9)
    assert mu.shape == sigma.shape == (5, cfg.z_size) and (sigma > 0).all()
    with torch.no_grad():
        hits, vel, off = model.decode(mu, temperature=0.7, generator=torch.Generator().manual_seed(1))
    assert hits.shape == vel.shape == off.shape == (5, 64, 9)
    assert set(hits.unique().tolist()) <= {0.0, 1.0}
    assert ((vel >= 0) & (vel <= 1)).all() and ((off >= -0.5) & (off < 0.5)).all()
    assert (vel[hits == 0] == 0).all() and (off[hits == 0] == 0).all()


def test_kl_is_zero_at_the_prior_and_known_elsewhere():
    mu = torch.zeros(2, 4)
    assert kl_divergence(mu, torch.ones(2, 4)).tolist() == [0.0, 0.0]
    # KL(N(1, 1) || N(0, 1)) = 0.5 per dimension; sigma 2: 0.5 * (4 - 1 - ln 4)
    assert kl_divergence(torch.ones(1, 4), torch.ones(1, 4)).item() == pytest.approx(2.0)
    assert kl_divergence(torch.zeros(1, 1), torch.full((1, 1), 2.0)).item() == pytest.approx(
        0.5 * (4 - 1 - math.log(4)))


def _heads(c, logit, vel, off):
    full = lambda v: torch.full((1, 1, c), float(v))
    return {"hit_logits": full(logit), "velocity_mean": full(vel), "offset_mean": full(off)}


def test_mean_head_losses_by_hand():
    cfg = ModelConfig(z_size=1, free_bits=0, beta=1.0)
    target = torch.tensor([[[1.0, 0.0, 0.5, 0.0, 0.25, 0.0]]])  # hits, velocities, offsets
    out = losses(_heads(2, 0.0, 0.5, 0.0), target, torch.zeros(1, 1), torch.ones(1, 1), cfg)
    assert out["hit_loss"].item() == pytest.approx(2 * math.log(2))  # BCE at p = 0.5, 2 cells
    assert out["velocity_loss"].item() == pytest.approx(0.0 + 0.25)  # (0.5-0.5)^2 + (0.5-0)^2
    # offsets compared in Magenta's [-1, 1) scale: (2*0 - 2*0.25)^2
    assert out["offset_loss"].item() == pytest.approx(0.25)
    assert out["kl"].item() == pytest.approx(0.0)


def test_gaussian_head_only_scores_true_hits():
    cfg = ModelConfig(z_size=1, continuous_head="gaussian")
    target = torch.tensor([[[1.0, 0.0, 0.5, 0.9, 0.25, -0.3]]])  # cell 2 is silent: ignored
    heads = _heads(2, 0.0, 0.5, 0.0)
    heads["velocity_std"] = torch.full((1, 1, 2), 0.1)
    heads["offset_std"] = torch.full((1, 1, 2), 0.05)  # 0.1 in the [-1, 1) scale
    out = losses(heads, target, torch.zeros(1, 1), torch.ones(1, 1), cfg)
    nll0 = math.log(0.1) + 0.5 * math.log(2 * math.pi)
    assert out["velocity_loss"].item() == pytest.approx(nll0)  # mean exact -> only the log term
    assert out["offset_loss"].item() == pytest.approx(nll0 + 0.5 * (0.5 / 0.1) ** 2, rel=1e-5)


def test_free_bits_subtract_from_the_summed_kl():
    cfg = ModelConfig(z_size=4, free_bits=2.0, beta=0.5)
    target = torch.zeros(2, 1, 3)
    heads = _heads(1, -20.0, 0.0, 0.0)
    heads = {k: v.expand(2, 1, 1) for k, v in heads.items()}
    # example 0: KL 2.0 nats < 2 bits (1.386 nats)? no: 2.0 > 1.386 -> cost 0.614; example 1: 0
    mu = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    out = losses(heads, target, mu, torch.ones(2, 4), cfg)
    assert out["kl"].item() == pytest.approx(1.0)  # mean of 2.0 and 0.0
    assert out["kl_cost"].item() == pytest.approx((2.0 - 2 * math.log(2)) / 2)
    assert out["loss"].item() == pytest.approx(out["recon"].item() + 0.5 * out["kl_cost"].item())


def test_temperature_and_noise_decide_hits():
    heads = {"hit_logits": torch.tensor([[[2.0, -2.0]]]), "velocity_mean": torch.full((1, 1, 2), 0.5),
             "offset_mean": torch.full((1, 1, 2), 0.1)}
    noise = torch.tensor([[0.85, 0.2]])
    # sigmoid(2) = 0.881 > 0.85 -> hit; sigmoid(-2) = 0.119 < 0.2 -> none
    hits, vel, off = Decoder.choose(heads, 1.0, noise, None)
    assert hits.tolist() == [[1.0, 0.0]] and vel.tolist() == [[0.5, 0.0]]
    # a hotter temperature flattens the probabilities: sigmoid(2/4) = 0.62 < 0.85 and
    # sigmoid(-2/4) = 0.38 > 0.2, so the likely hit goes and the unlikely one plays
    hits, _, _ = Decoder.choose(heads, 4.0, noise, None)
    assert hits.tolist() == [[0.0, 1.0]]
    hits, _, _ = Decoder.choose(heads, 1.0, noise, None, greedy=True)
    assert hits.tolist() == [[1.0, 0.0]]


def test_gaussian_sampling_spreads_values_around_the_mean():
    cfg = replace(TINY, continuous_head="gaussian")
    model = GrooVAE(cfg).eval()
    z = torch.zeros(64, cfg.z_size)
    g = torch.Generator().manual_seed(0)
    hit_noise = torch.zeros(64, 64, 9)  # every cell is a hit: u=0 < any probability
    with torch.no_grad():
        _, v_mean, _ = model.decoder.sample(z, hit_noise=hit_noise, cont_noise=torch.zeros(64, 64, 18))
        _, v_samp, _ = model.decoder.sample(z, hit_noise=hit_noise, cont_noise=torch.randn(64, 64, 18, generator=g))
    assert v_mean[:, 0].std(dim=0).max().item() < 1e-6  # same z, no noise: identical
    assert v_samp[:, 0].std(dim=0).min().item() > 1e-3


def test_the_spec_gives_the_data_shape_and_the_config_the_network():
    from groove_live.spec import DEFAULT_SPEC
    from groove_live.train.config import spec_for
    from groove_live.train.model import build_model
    two_bars = spec_for(TINY, DEFAULT_SPEC.replace(bars=2, drums=DEFAULT_SPEC.drums[:3]))
    model = build_model(TINY, two_bars).eval()
    heads, mu, _ = model(torch.rand(2, 32, 9))  # (B, 2 bars x 16 steps, 3 x 3 voices)
    assert heads["hit_logits"].shape == (2, 32, 3) and mu.shape == (2, TINY.z_size)
    with torch.no_grad():
        assert model.decoder.sample(mu)[0].shape == (2, 32, 3)
    with pytest.raises(ValueError, match="differ from the config"):
        GrooVAE(TINY, two_bars.replace(z_size=TINY.z_size + 1))
    with pytest.raises(ValueError, match="cannot build"):
        build_model(TINY, two_bars.replace(kind="nonesuch"))
