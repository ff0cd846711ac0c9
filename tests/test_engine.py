"""The torch-free Engine on the committed toy model: spec checks, determinism, shapes, slerp."""
from __future__ import annotations

import json
import shutil
import threading

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import groove_live.engine as engine_module
from groove_live.engine import Engine, EngineError
from groove_live.latent import slerp_path
from groove_live.latent_fit import fit_latents
from groove_live.pattern import Patterns
from groove_live.spec import METADATA_KEY


@pytest.fixture(scope="module")
def engine(toy_model_path) -> Engine:
    return Engine.load(toy_model_path)


def _one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert message and "\n" not in message
    return message


def _rewrite_spec(src, dst, **changes):
    model = onnx.load(src)
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            spec = json.loads(prop.value)
            spec.update(changes)
            prop.value = json.dumps(spec)
    onnx.save(model, dst)


def test_corrupt_foreign_and_missing_files_are_refused(tmp_path):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07 this is not a protobuf" * 10)
    with pytest.raises(EngineError) as e:
        Engine.load(corrupt)
    assert "not a loadable ONNX model" in _one_line(e)

    foreign = tmp_path / "foreign.onnx"
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "foreign",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                ir_version=8), foreign)
    with pytest.raises(EngineError) as e:
        Engine.load(foreign)
    assert "not a groove-live model" in _one_line(e)

    with pytest.raises(EngineError) as e:
        Engine.load(tmp_path / "missing.onnx")
    assert "no such model file" in _one_line(e)


def test_unknown_schema_is_refused(toy_model_path, tmp_path):
    future = tmp_path / "future.onnx"
    _rewrite_spec(toy_model_path, future, schema_version=99)
    with pytest.raises(EngineError) as e:
        Engine.load(future)
    assert "schema 99 is not supported" in _one_line(e)


@pytest.mark.parametrize("kind, says", [
    # a harmonizer spec on a drum graph: decodable now, so refused by the graph's shapes
    ("pitched", "input 'z' has shape ['batch', 16], the spec says ['batch', 2, 8, 256]"),
    ("gan", "kind 'gan' is unknown"),
])
def test_a_kind_this_runtime_does_not_decode_is_refused(toy_model_path, tmp_path, kind, says):
    other = tmp_path / f"{kind}.onnx"
    if kind == "pitched":  # a whole, valid harmonizer spec on the drum model's graph
        from groove_live.spec import ModelSpec, Voice, pitched_fields
        spec = ModelSpec(**pitched_fields((Voice("alto", 1, 52, 74),)), bars=2).to_dict()
        _rewrite_spec(toy_model_path, other, **spec)
    else:
        _rewrite_spec(toy_model_path, other, schema_version=2, kind=kind, controls=[])
    with pytest.raises(EngineError) as e:
        Engine.load(other)
    assert says in _one_line(e)


def test_decode_paths_cover_the_implemented_kinds_only():
    from groove_live.spec import KINDS
    assert set(engine_module.DECODE_PATHS) == {"groovae", "conditioned", "categorical",
                                               "hierarchical", "pitched"}
    assert set(KINDS) >= set(engine_module.DECODE_PATHS)


def test_a_schema_2_groovae_file_loads_like_its_schema_1_original(toy_model_path, tmp_path,
                                                                    engine):
    v2 = tmp_path / "v2.onnx"
    _rewrite_spec(toy_model_path, v2, schema_version=2, kind="groovae", controls=[])
    again = Engine.load(v2)
    assert again.spec == engine.spec
    a, b = engine.sample(3, seed=5), again.sample(3, seed=5)
    np.testing.assert_array_equal(a.hits, b.hits)
    np.testing.assert_array_equal(a.velocities, b.velocities)


def test_spec_that_contradicts_the_graph_is_refused(toy_model_path, tmp_path):
    liar = tmp_path / "liar.onnx"
    _rewrite_spec(toy_model_path, liar, z_size=32)
    with pytest.raises(EngineError) as e:
        Engine.load(liar)
    assert "input 'z' has shape" in _one_line(e)


def test_encoder_file_is_not_a_model_and_a_missing_encoder_only_disables_encode(
        toy_model_path, tmp_path):
    with pytest.raises(EngineError) as e:
        Engine.load(toy_model_path.with_name("toy_model.encoder.onnx"))
    assert "not a decoder" in _one_line(e)

    alone = tmp_path / "alone.onnx"
    shutil.copy(toy_model_path, alone)
    engine = Engine.load(alone)
    assert not engine.has_encoder
    assert engine.sample(2, seed=0).hits.shape == (2, 64, 9)
    with pytest.raises(EngineError) as e:
        engine.encode(engine.sample(1, seed=0))
    assert "has no encoder" in _one_line(e)


def test_missing_bundled_model_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setattr(engine_module, "BUNDLED_MODEL_PATH", tmp_path / "groovae.onnx")
    with pytest.raises(EngineError) as e:
        Engine.load()
    assert "--model" in _one_line(e)


def test_providers(toy_model_path):
    assert Engine.load(toy_model_path, providers=["cpu"]).providers == ["CPUExecutionProvider"]
    with pytest.raises(EngineError) as e:
        Engine.load(toy_model_path, providers=["NoSuchExecutionProvider"])
    assert "not available" in _one_line(e)
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(EngineError) as e:
            Engine.load(toy_model_path, providers=["cuda"])
        assert "onnxruntime-gpu" in _one_line(e)
    else:  # pragma: no cover - GPU machines
        assert Engine.load(toy_model_path, providers=["cuda"]).providers[0] == \
            "CUDAExecutionProvider"
    assert Engine.load(toy_model_path, intra_op_threads=2).sample(1, seed=0).hits.shape[0] == 1


def test_samples_have_the_spec_shape_and_ranges(engine):
    p = engine.sample(6, temperature=1.0, seed=11)
    assert p.hits.shape == p.velocities.shape == p.offsets.shape == (6, 64, 9)
    assert set(np.unique(p.hits)) <= {0.0, 1.0} and p.hits.any()
    assert p.velocities.min() >= 0 and p.velocities.max() <= 1
    assert p.offsets.min() >= -0.5 and p.offsets.max() < 0.5
    rest = p.hits == 0
    assert not p.velocities[rest].any() and not p.offsets[rest].any()
    assert len(np.unique(p.velocities[p.hits > 0])) > 1
    assert len(engine.sample(1)) == 1


def test_seed_makes_it_deterministic(engine):
    a, b = engine.sample(4, 0.8, seed=3), engine.sample(4, 0.8, seed=3)
    np.testing.assert_array_equal(a.to_flat(), b.to_flat())
    assert not np.array_equal(a.hits, engine.sample(4, 0.8, seed=4).hits)
    z = np.random.default_rng(0).standard_normal(engine.spec.z_size).astype(np.float32)
    np.testing.assert_array_equal(engine.decode(z, 1.0, seed=9).to_flat(),
                                  engine.decode(z[None], 1.0, seed=9).to_flat())
    # temperature 0 is greedy: the noise no longer matters (mean head)
    np.testing.assert_array_equal(engine.decode(z, 0.0, seed=1).to_flat(),
                                  engine.decode(z, 0.0, seed=2).to_flat())


def test_threads_share_one_engine(engine):
    want = {seed: engine.sample(2, seed=seed).to_flat() for seed in range(4)}
    got = {}

    def work(seed):
        for _ in range(3):
            got[seed] = engine.sample(2, seed=seed).to_flat()
    threads = [threading.Thread(target=work, args=(s,)) for s in want]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for seed in want:
        np.testing.assert_array_equal(got[seed], want[seed])


def test_bad_arguments(engine):
    with pytest.raises(ValueError):
        engine.decode(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError):
        engine.sample(2, temperature=-1.0)
    with pytest.raises(ValueError):
        engine.sample(0)
    with pytest.raises(ValueError):
        engine.encode(Patterns.empty(1, engine.spec.replace(bars=2)))  # 32 steps, not 64


def test_interpolate_ends_are_fitted_greedy_decodes(engine):
    a, b = engine.sample(1, seed=1), engine.sample(1, seed=2)
    path = engine.interpolate(a, b, 5, temperature=0.5, seed=7)
    assert len(path) == 5
    ends = fit_latents(engine, Patterns.concat([a, b])).z
    hit_noise, cont_noise = engine.noise(1, np.random.default_rng(7))
    for index, z in ((0, ends[0]), (4, ends[1])):  # the ends at temperature 0, whatever T
        end = engine.decode_noise(z, 0.0, hit_noise, cont_noise * 0.0)
        np.testing.assert_array_equal(path[index].to_flat(), end.to_flat())
    middle = engine.decode_noise(slerp_path(ends[0], ends[1], 5)[2], 0.5, hit_noise,
                                 engine.tempered_noise(cont_noise, 0.5))
    np.testing.assert_array_equal(path[2].to_flat(), middle.to_flat())
    with pytest.raises(ValueError):
        engine.interpolate(a, b, 1)


def test_interpolate_without_fit_starts_at_the_posterior_means(engine):
    a, b = engine.sample(1, seed=1), engine.sample(1, seed=2)
    path = engine.interpolate(a, b, 3, temperature=1.0, seed=7, fit_rounds=0)
    mu, _ = engine.encode(Patterns.concat([a, b]))
    np.testing.assert_array_equal(path[0].to_flat(), engine.decode(mu[0], 0.0).to_flat())
    np.testing.assert_array_equal(path[2].to_flat(), engine.decode(mu[1], 0.0).to_flat())


def test_describe_names_the_model(engine, toy_model_path):
    text = engine.describe()
    assert str(toy_model_path) in text and "groovae_tiny" in text and "kick 36" in text
