"""MusicVAE drum models (kinds categorical and hierarchical) through export: toy runs trained on
the GMD fixture, exported, and decoded by the engine exactly as by torch."""
from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch

from groove_live.drum_classes import hits_to_classes
from groove_live.engine import Engine
from groove_live.export.verify import VerificationError, verify_against_torch
from groove_live.transforms import FIXED_VELOCITY

PRESETS = ["cat_drums_2bar_tiny", "hierdec_drums_16bar_tiny"]


def _torch_sample(model, z, t, hit_noise, cont_noise) -> list[np.ndarray]:
    with torch.no_grad():
        return [a.numpy() for a in model.sample(*(torch.from_numpy(np.ascontiguousarray(a))
                                                  for a in (z, t, hit_noise, cont_noise)))]


@pytest.mark.parametrize("preset", PRESETS)
def test_engine_decodes_as_torch(toy_musicvae_export, preset):
    toy = toy_musicvae_export(preset)
    assert toy.result.checks["hit_mismatches"] == 0
    engine = Engine.load(toy.model_path)
    spec = engine.spec
    rng = np.random.default_rng(42)  # other latents and noise than export's own check
    for n in (1, 5):  # neither is the traced batch (2): the batch is dynamic
        z = rng.standard_normal((n, spec.z_size)).astype(np.float32)
        hit_noise, cont_noise = engine.noise(n, rng)
        assert hit_noise.shape == (n, spec.steps, 1)  # one uniform per step (inverse CDF)
        for temperature in (0.0, 0.5, 1.0):
            t = np.full(n, temperature, np.float32)
            got = engine.decode_noise(z, t, hit_noise, cont_noise)
            want = _torch_sample(toy.model, z, t, hit_noise, cont_noise)
            assert got.hits.shape == (n, spec.steps, spec.n_drums)
            np.testing.assert_array_equal(got.hits, want[0])
            # the quantized pattern, exactly
            np.testing.assert_array_equal(got.velocities,
                                          np.float32(FIXED_VELOCITY) * got.hits)
            np.testing.assert_array_equal(got.offsets, np.zeros_like(got.offsets))


@pytest.mark.parametrize("preset", PRESETS)
def test_temperature_zero_is_the_argmax_decode(toy_musicvae_export, preset):
    """At T = 0 every step is the most likely class given the steps before it: fed its own
    output teacher-forced, the torch model's argmax gives that output back, whatever noise."""
    toy = toy_musicvae_export(preset)
    engine = Engine.load(toy.model_path)
    z = np.random.default_rng(3).standard_normal((6, engine.spec.z_size)).astype(np.float32)
    a = engine.decode(z, temperature=0.0, seed=1)
    hit_noise, cont_noise = engine.noise(6, np.random.default_rng(2))
    b = engine.decode_noise(z, 0.0, hit_noise, cont_noise)
    np.testing.assert_array_equal(a.hits, b.hits)
    with torch.no_grad():
        logits = toy.model.teacher_logits(torch.from_numpy(z), torch.from_numpy(a.hits))
    np.testing.assert_array_equal(logits.argmax(-1).numpy(), hits_to_classes(a.hits))
    # and T = 1 draws: another noise gives other patterns
    c = engine.decode(z, temperature=1.0, seed=1)
    d = engine.decode(z, temperature=1.0, seed=2)
    assert not np.array_equal(c.hits, d.hits)


@pytest.mark.parametrize("preset", PRESETS)
def test_encoder_matches_torch_and_reads_only_hits(toy_musicvae_export, preset):
    toy = toy_musicvae_export(preset)
    engine = Engine.load(toy.model_path)
    patterns = engine.sample(4, seed=7)
    mu, sigma = engine.encode(patterns)
    with torch.no_grad():
        ref_mu, ref_sigma = toy.model.encoder(torch.from_numpy(patterns.cleaned().to_flat()))
    np.testing.assert_allclose(mu, ref_mu.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(sigma, ref_sigma.numpy(), atol=1e-4, rtol=0)
    played = copy.deepcopy(patterns)
    played.velocities = played.hits * 0.9
    played.offsets = played.hits * 0.2
    np.testing.assert_array_equal(engine.encode(played)[0], mu)


@pytest.mark.parametrize("preset", PRESETS)
def test_graph_io_is_the_specs(toy_musicvae_export, preset):
    toy = toy_musicvae_export(preset)
    graph = onnx.load(toy.model_path).graph
    spec = Engine.load(toy.model_path).spec
    want = spec.io_shapes()["decoder_inputs"]
    found = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
             for i in graph.input}
    assert list(found) == list(want)  # cont_noise too, though nothing reads it
    assert found["hit_noise"] == ["batch", spec.steps, 1]
    ops = [node.op_type for node in graph.node]
    # The step loop's cells are matrix products on the LSTM's weights, not LSTM nodes: only
    # the hierarchical model's conductor (one node for all bars) is one.
    assert ops.count("LSTM") == (0 if spec.kind == "categorical" else 1)
    # One running sum per step (2 bars unroll 32 steps; 16 bars side by side, 16); no Gumbel
    # transform of per-class noise.
    assert ops.count("CumSum") == (32 if spec.kind == "categorical" else 16)
    assert "Log" not in ops


def test_verification_catches_a_decoder_that_differs(toy_musicvae_export):
    toy = toy_musicvae_export("cat_drums_2bar_tiny")
    engine = Engine.load(toy.model_path)
    changed = copy.deepcopy(toy.model)
    with torch.no_grad():
        changed.decoder.out.bias[0] += 50.0  # class 0 (silence) now wins nearly every step
    with pytest.raises(VerificationError, match="patterns differ from torch"):
        verify_against_torch(engine, changed)


@pytest.mark.slow
def test_flat_16bar_model_exports(toy_musicvae_export):
    """The flat 16-bar baseline unrolls all 256 steps; it must still export and match.

    Within export's tolerance, not exactly: the toy model is near uniform over 512 classes,
    so each of 256 steps offers its uniform hundreds of class boundaries that float rounding of
    the logits (~1e-7) can move, and one of the 48 checked patterns may go its own way from
    the step it flips at (export/verify.py CLASS_MAX_DIVERGED_SHARE)."""
    toy = toy_musicvae_export("flat_drums_16bar_tiny")
    assert toy.result.checks["diverged_patterns"] <= 1
    engine = Engine.load(toy.model_path)
    assert (engine.spec.kind, engine.spec.steps) == ("categorical", 256)
    z = np.random.default_rng(0).standard_normal((2, engine.spec.z_size)).astype(np.float32)
    hit_noise, cont_noise = engine.noise(2, np.random.default_rng(1))
    got = engine.decode_noise(z, 0.7, hit_noise, cont_noise)
    want = _torch_sample(toy.model, z, np.full(2, 0.7, np.float32), hit_noise, cont_noise)
    np.testing.assert_array_equal(got.hits, want[0])
