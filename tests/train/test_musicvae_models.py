"""MusicVAE's drum models (categorical flat, hierarchical): shapes, the class loss on
hand-computed cases, the sampling rule, scheduled sampling and the conductor's bar structure."""
import math

import pytest
import torch

from groove_live.drum_classes import class_bits, hits_to_classes
from groove_live.train.categorical import (CDF_U_MAX, CategoricalVAE, class_loss_terms,
                                           draw_class, gumbel, sampling_probability)
from groove_live.train.config import PRESETS, ModelConfig
from groove_live.train.hierarchical import HierarchicalVAE
from groove_live.train.model import build_model, count_parameters


def _tiny(preset: str):
    p = PRESETS[preset]
    torch.manual_seed(0)
    return build_model(p.model, p.spec()).eval(), p.spec()


def _random_hits(b, t, p=0.2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand((b, t, 9), generator=g) < p).float()


@pytest.mark.parametrize("preset, cls, steps", [("cat_drums_2bar_tiny", CategoricalVAE, 32),
                                                ("flat_drums_16bar_tiny", CategoricalVAE, 256),
                                                ("hierdec_drums_16bar_tiny", HierarchicalVAE, 256)])
def test_shapes_losses_and_the_finished_pattern(preset, cls, steps):
    model, spec = _tiny(preset)
    assert isinstance(model, cls) and spec.steps == steps
    x = _random_hits(3, steps)
    logits, mu, sigma = model(x)
    assert logits.shape == (3, steps, 512) and mu.shape == sigma.shape == (3, spec.z_size)
    terms = model.loss_terms((logits, mu, sigma), x)
    assert {"loss", "recon", "kl", "kl_cost", "accuracy"} <= set(terms)
    assert all(torch.isfinite(v) for v in terms.values())
    # An untrained model is near uniform over 512 classes: about ln 512 nats per step.
    assert terms["recon"].item() / steps == pytest.approx(math.log(512), rel=0.05)
    # The flat layout (hits, velocities, offsets) reads as its hits alone.
    flat = torch.cat([x, torch.rand(3, steps, 18)], dim=-1)
    assert torch.equal(model.encode(flat)[0], model.encode(x)[0])
    with torch.no_grad():
        hits, vel, off = model.sample(mu, torch.ones(3), torch.rand(3, steps, 1),
                                      torch.randn(3, steps, 18))
    assert hits.shape == (3, steps, 9) and set(hits.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(vel, 0.6 * hits) and not off.any()  # quantized, the humanize input level


def test_class_loss_by_hand():
    cfg = ModelConfig(z_size=1, free_bits=0, beta=1.0)
    logits = torch.zeros(1, 2, 512)
    logits[0, 0, 5] = 10.0  # step 0 sure of class 5; step 1 uniform
    targets = torch.tensor([[5, 3]])
    out = class_loss_terms(logits, targets, torch.zeros(1, 1), torch.ones(1, 1), cfg)
    first = -torch.log_softmax(logits[0, 0], -1)[5].item()
    assert out["recon"].item() == pytest.approx(first + math.log(512), rel=1e-5)
    assert out["accuracy"].item() == 0.5  # step 0 right, step 1 argmax is class 0
    assert out["kl"].item() == 0.0 and out["loss"].item() == pytest.approx(out["recon"].item())


def test_sampling_is_argmax_at_temperature_0_and_softmax_sampling_above():
    model, spec = _tiny("cat_drums_2bar_tiny")
    z = torch.randn(2, spec.z_size)
    with torch.no_grad():
        a = model.generate_hits(z, torch.zeros(2), torch.rand(2, 32, 1))
        b = model.generate_hits(z, torch.zeros(2), torch.rand(2, 32, 1))
        assert torch.equal(a, b)  # T = 0 ignores the noise
    # Inverse CDF: class frequencies follow softmax(logits / T).
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, -30.0])
    g = torch.Generator().manual_seed(3)
    n = 20000
    for t in (1.0, 0.5):
        draws = draw_class(logits.expand(n, -1) / t, torch.zeros(n, dtype=torch.bool),
                           torch.rand((n, 1), generator=g))
        freq = torch.bincount(draws, minlength=5).float() / n
        assert torch.allclose(freq, torch.softmax(logits / t, -1), atol=0.01)
    # Training's scheduled sampling still draws by Gumbel-max: the same distribution.
    draws = torch.argmax(logits + gumbel(torch.rand((n, 5), generator=g)), dim=-1)
    freq = torch.bincount(draws, minlength=5).float() / n
    assert torch.allclose(freq, torch.softmax(logits, -1), atol=0.01)


def test_draw_class_edges():
    """u at its ends never lands on a class of zero weight; greedy rows are the argmax (the
    first of tied maxima, as torch and onnxruntime break ties) whatever u is."""
    scaled = torch.tensor([[-200.0, 0.0, -200.0, 1.0, -200.0]] * 4)  # exp(-201) is 0 in fp32
    greedy = torch.tensor([False, False, True, True])
    u = torch.tensor([[0.0], [CDF_U_MAX], [0.0], [CDF_U_MAX]])
    assert draw_class(scaled, greedy, u).tolist() == [1, 3, 3, 3]
    tied = torch.tensor([[0.0, 5.0, 5.0, 1.0]])
    for u in (0.0, 0.5, CDF_U_MAX):
        assert draw_class(tied, torch.tensor([True]), torch.tensor([[u]])).item() == 1


def _sample_with_nn_lstm(decoder, cond, temperature, u):
    """The reference: ClassDecoder.sample's loop on the nn.LSTM module itself, one step per call,
    with the same draw (what the explicit cell math must reproduce)."""
    greedy = temperature <= 0
    inv_t = 1.0 / torch.where(greedy, torch.ones_like(temperature), temperature)[:, None]
    state = decoder.initial_state(cond)
    x = cond.new_zeros((cond.shape[0], decoder.n_drums))
    drawn = []
    for i in range(decoder.steps):
        out, state = decoder.rnn(torch.cat([x, cond], dim=-1)[:, None], state)
        cls = draw_class(decoder.out(out[:, 0]) * inv_t, greedy, u[:, i].clamp(0, CDF_U_MAX))
        x = decoder.bits[cls]
        drawn.append(x)
    return torch.stack(drawn, dim=1)


@pytest.mark.parametrize("preset", ["cat_drums_2bar_cpu", "hierdec_drums_16bar_cpu"])
def test_sample_computes_the_nn_lstm_it_was_trained_as(preset):
    """sample() writes the LSTM cells out on the module's weights (two layers here, as the
    bundled models): the same patterns as stepping nn.LSTM itself, at T = 0 and when drawing."""
    p = PRESETS[preset]
    torch.manual_seed(1)
    decoder = build_model(p.model, p.spec()).eval().decoder
    for name, param in decoder.named_parameters():  # an untrained model is near uniform
        param.data.mul_(3.0 if "out" in name else 1.0)
    g = torch.Generator().manual_seed(2)
    n = 24
    cond = torch.randn(n, decoder.init.in_features, generator=g)
    u = torch.rand(n, decoder.steps, 1, generator=g)
    for t in (0.0, 0.5, 1.0):
        temperature = torch.full((n,), t)
        with torch.no_grad():
            got = decoder.sample(cond, temperature, u)
            want = _sample_with_nn_lstm(decoder, cond, temperature, u)
        # float rounding differs (~1e-7): allow one near-tie among the patterns
        assert (got != want).any(dim=(1, 2)).sum() <= 1, t
        if t == 0.0:
            assert torch.equal(got, want)


def test_decoder_classes_use_the_runtime_bit_order():
    model, _ = _tiny("cat_drums_2bar_tiny")
    hits = _random_hits(2, 32, p=0.5)
    assert model.decoder.classes(hits).tolist() == hits_to_classes(hits.numpy()).tolist()
    assert torch.equal(model.decoder.bits, torch.from_numpy(class_bits(9)))


def test_scheduled_sampling_follows_magentas_inverse_sigmoid_and_only_in_training():
    assert sampling_probability(0.0, 10_000) == 0.0
    assert sampling_probability(1000.0, 0) == pytest.approx(1 / 1001)
    assert sampling_probability(1000.0, 5000) == pytest.approx(1 - 1000 / (1000 + math.exp(5)))
    assert sampling_probability(1000.0, 10 ** 9) == 1.0  # no overflow
    model, spec = _tiny("cat_drums_2bar_tiny")
    x = _random_hits(4, 32)
    model.set_train_step(10 ** 6)  # feeds only its own draws when training
    model.eval()
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        teacher = model(x, generator=g)[0]
        z = model.encode(x)[0]
        # eval: the teacher-forced pass whatever the schedule says
        assert torch.allclose(model.teacher_logits(z, x), model.teacher_logits(z, x, 0.0))
        fed_self = model.teacher_logits(z, x, 1.0, torch.Generator().manual_seed(1))
    assert teacher.shape == fed_self.shape
    assert not torch.allclose(model.teacher_logits(z, x).detach(), fed_self)


def test_the_hierarchical_decoder_decodes_each_bar_from_its_own_embedding():
    model, spec = _tiny("hierdec_drums_16bar_tiny")
    x = _random_hits(2, 256)
    with torch.no_grad():
        z = model.encode(x)[0]
        full = model.teacher_logits(z, x)
        # Change only bar 5's notes: every other bar's logits stay exactly the same
        # (bars are decoded side by side), bar 5's change.
        y = x.clone()
        y[:, 5 * 16:6 * 16] = 1.0 - y[:, 5 * 16:6 * 16]
        changed = model.teacher_logits(z, y)
    same = torch.isclose(full, changed).all(dim=-1).all(dim=0)  # (256,)
    bar_of = torch.arange(256) // 16
    assert same[bar_of != 5].all()
    assert not same[5 * 16 + 1:6 * 16].all()  # step t sees step t-1 of its own bar
    assert model.conductor(z).shape == (2, 16, model.conductor.hidden)


def test_cpu_presets_fit_the_bundle_budget():
    # Each bundled MusicVAE model must stay near 3 MB of fp32 weights (0.85 M parameters).
    for name in ("cat_drums_2bar_cpu", "hierdec_drums_16bar_cpu"):
        p = PRESETS[name]
        assert count_parameters(build_model(p.model, p.spec())) < 0.85e6, name
