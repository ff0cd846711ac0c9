"""The engine on MusicVAE drum models (kinds categorical and hierarchical), from the committed toy
exports: no torch needed."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from groove_live.engine import Engine, EngineError
from groove_live.pattern import Patterns
from groove_live.spec import METADATA_KEY, ModelSpec
from groove_live.transforms import FIXED_VELOCITY

KINDS = {"categorical": 2, "hierarchical": 16}  # kind -> the toy model's bars


@pytest.fixture(scope="module")
def engines(toy_musicvae_model_path):
    return {kind: Engine.load(toy_musicvae_model_path(kind)) for kind in KINDS}


def _assert_quantized(p: Patterns, n: int, steps: int) -> None:
    assert p.hits.shape == (n, steps, 9)
    assert np.isin(p.hits, (0.0, 1.0)).all()
    np.testing.assert_array_equal(p.velocities, np.float32(FIXED_VELOCITY) * p.hits)
    np.testing.assert_array_equal(p.offsets, np.zeros_like(p.offsets))


@pytest.mark.parametrize("kind", KINDS)
def test_sample_is_a_quantized_phrase(engines, kind):
    engine = engines[kind]
    assert (engine.spec.kind, engine.spec.bars) == (kind, KINDS[kind])
    steps = 16 * KINDS[kind]
    p = engine.sample(3, temperature=1.0, seed=0)
    _assert_quantized(p, 3, steps)
    assert 0.0 < p.hits.mean() < 1.0  # hits and rests, not a constant
    _assert_quantized(engine.sample(1, temperature=0.0, seed=0), 1, steps)


@pytest.mark.parametrize("kind", KINDS)
def test_seed_fixes_the_patterns(engines, kind):
    engine = engines[kind]
    a, b = engine.sample(4, seed=11), engine.sample(4, seed=11)
    np.testing.assert_array_equal(a.hits, b.hits)
    assert not np.array_equal(a.hits, engine.sample(4, seed=12).hits)


@pytest.mark.parametrize("kind", KINDS)
def test_temperature_zero_ignores_the_seed(engines, kind):
    engine = engines[kind]
    z = np.random.default_rng(5).standard_normal((4, engine.spec.z_size)).astype(np.float32)
    greedy = engine.decode(z, temperature=0.0, seed=1)
    np.testing.assert_array_equal(greedy.hits, engine.decode(z, temperature=0.0, seed=2).hits)
    # the same as decoding with drawn noise at T = 0, or noise at its ends: the argmax
    hit_noise, cont_noise = engine.noise(4, np.random.default_rng(9))
    assert hit_noise.shape == (4, engine.spec.steps, 1)  # one uniform per step
    assert hit_noise.shape == engine.spec.io_shapes(4)["decoder_inputs"]["hit_noise"]
    for noise in (hit_noise, np.zeros_like(hit_noise), np.ones_like(hit_noise)):
        np.testing.assert_array_equal(greedy.hits,
                                      engine.decode_noise(z, 0.0, noise, cont_noise).hits)
    drawn = [engine.decode(z, temperature=1.0, seed=s).hits for s in (1, 2)]
    assert not np.array_equal(*drawn)


@pytest.mark.parametrize("kind", KINDS)
def test_encode_decode_and_interpolate(engines, kind):
    engine = engines[kind]
    steps = engine.spec.steps
    played = engine.sample(2, seed=3)
    played.velocities = played.hits * 0.9  # a played pattern: only the hits are read
    played.offsets = played.hits * 0.1
    mu, sigma = engine.encode(played)
    assert mu.shape == sigma.shape == (2, engine.spec.z_size)
    assert np.isfinite(mu).all() and (sigma > 0).all()
    _assert_quantized(engine.decode(mu, temperature=0.0), 2, steps)
    path = engine.interpolate(played[0], played[1], 5, temperature=0.5, seed=4)
    _assert_quantized(path, 5, steps)


@pytest.mark.parametrize("kind", KINDS)
def test_describe_shows_kind_and_phrase(engines, kind):
    text = engines[kind].describe()
    assert f"kind        {kind}" in text
    assert f"phrase      {KINDS[kind]} bars x 16 steps" in text
    assert "one class of 512 per step" in text


@pytest.mark.parametrize("kind", KINDS)
def test_groovae_only_paths_refuse_or_skip(engines, kind):
    engine = engines[kind]
    with pytest.raises(EngineError, match=f"a {kind} MusicVAE drum model .* not a task model"):
        engine.transform(engine.sample(1, seed=0))
    z = np.zeros((1, engine.spec.z_size), np.float32)
    hit_noise, cont_noise = engine.noise(1, np.random.default_rng(0))
    with pytest.raises(EngineError, match="takes no control pattern"):
        engine.decode_noise(z, 1.0, hit_noise, cont_noise, np.zeros((1, engine.spec.steps, 27)))
    # the velocity/timing noise a GrooVAE scales by temperature: nothing to scale here
    assert engine.tempered_noise(cont_noise, 0.5) is cont_noise


def _with_spec(src, dst, edit) -> None:
    model = onnx.load(src)
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            spec = json.loads(prop.value)
            edit(spec)
            prop.value = json.dumps(spec)
    onnx.save(model, dst)


def _thirteen_drums(spec: dict) -> None:
    extra = [{"name": f"extra{i}", "in_pitches": [80 + i], "out_pitch": 80 + i}
             for i in range(13 - len(spec["drums"]))]
    spec["drums"] = spec["drums"] + extra


@pytest.mark.parametrize("edit, message", [
    (_thirteen_drums, "has 13 drum classes; at most 12"),
    (lambda spec: spec.update(kind="hierarchical", bars=1), "needs at least 2 bars"),
])
def test_hostile_spec_is_refused_in_one_line(toy_musicvae_model_path, tmp_path, edit, message):
    path = tmp_path / "hostile.onnx"
    _with_spec(toy_musicvae_model_path("categorical"), path, edit)
    with pytest.raises(EngineError, match=message) as info:
        Engine.load(path)
    assert len(str(info.value).splitlines()) == 1


def test_a_groovae_graph_claiming_to_be_categorical_is_refused(toy_model_path, tmp_path):
    """Its hit noise is per voice, not one per step: the shapes the spec promises do not
    hold."""
    path = tmp_path / "claims.onnx"
    model = onnx.load(toy_model_path)
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:  # read as today's schema, then claim the other kind
            prop.value = ModelSpec.from_json(prop.value).replace(kind="categorical").to_json()
    onnx.save(model, path)
    with pytest.raises(EngineError, match="input 'hit_noise' has shape") as info:
        Engine.load(path)
    assert len(str(info.value).splitlines()) == 1


def test_runs_without_torch(run_torch_free, toy_musicvae_model_path):
    result = run_torch_free("""
        import sys
        from groove_live.engine import Engine
        for path in sys.argv[1:]:
            engine = Engine.load(path)
            print(engine.spec.kind, engine.sample(2, seed=0).hits.shape)
    """, toy_musicvae_model_path("categorical"), toy_musicvae_model_path("hierarchical"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["categorical (2, 32, 9)",
                                             "hierarchical (2, 256, 9)"]
    assert result.stdout.strip().endswith("torch-free")
