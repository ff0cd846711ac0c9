"""GrooVAE's task models (humanize, drumify, infill) in the runtime: Engine.transform on the
committed toy exports, the refusals, and export's check against torch."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import helper, numpy_helper

from groove_live.engine import Engine, EngineError
from groove_live.pattern import Patterns
from groove_live.spec import TASKS
from groove_live.transforms import HIHAT_VOICES, task_input

TASK_NAMES = tuple(TASKS)


@pytest.fixture(scope="module")
def engines(toy_task_model_path) -> dict[str, Engine]:
    return {task: Engine.load(toy_task_model_path(task)) for task in TASK_NAMES}


def _played(n: int, spec, seed: int = 0) -> Patterns:
    """Played-looking patterns: sparse hits, any velocity, off-grid timing."""
    rng = np.random.default_rng(seed)
    shape = (n, spec.steps, spec.n_drums)
    hits = (rng.random(shape) < 0.2).astype(np.float32)
    return Patterns(hits, rng.uniform(0.1, 1.0, shape).astype(np.float32),
                    rng.uniform(-0.4, 0.4, shape).astype(np.float32)).cleaned()


def _one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert message and "\n" not in message
    return message


def _same(a: Patterns, b: Patterns) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(
        (a.hits, a.velocities, a.offsets), (b.hits, b.velocities, b.offsets)))


def _kept(spec) -> np.ndarray:
    return np.array([name not in HIHAT_VOICES for name in spec.drum_names])


@pytest.mark.parametrize("task", TASK_NAMES)
def test_a_task_model_loads_and_says_its_task(engines, task):
    engine = engines[task]
    assert engine.task == task and engine.spec.kind == "conditioned"
    assert engine.has_encoder and engine.spec.steps == 32
    assert f"conditioned ({task})" in engine.describe()


def test_a_sampling_groovae_has_no_task_and_does_not_transform(toy_model_path):
    engine = Engine.load(toy_model_path)
    assert engine.task == ""
    with pytest.raises(EngineError) as e:
        engine.transform(Patterns.empty(1, engine.spec))
    assert "not a task model" in _one_line(e)


@pytest.mark.parametrize("task", TASK_NAMES)
def test_transform_returns_finished_patterns_and_a_seed_repeats_them(engines, task):
    engine = engines[task]
    played = _played(6, engine.spec)
    out = engine.transform(played, seed=3)
    assert out.hits.shape == out.velocities.shape == out.offsets.shape == (6, 32, 9)
    assert _same(out, out.cleaned())  # 0/1 hits, values only on hits and in range
    assert 0.02 < out.hits.mean() < 0.9  # a real mix of hits and rests
    assert _same(out, engine.transform(played, seed=3))
    assert not _same(out, engine.transform(played, seed=4))  # a new feel per seed


def test_humanize_keeps_the_users_hits_and_plays_them(engines):
    engine = engines["humanize"]
    played = _played(8, engine.spec, seed=1)
    for temperature in (0.0, 1.0):
        out = engine.transform(played, temperature=temperature, seed=2)
        np.testing.assert_array_equal(out.hits, played.hits)
        on = out.hits > 0
        # the quantized input's flat velocity and zero timing are replaced by played ones
        assert np.abs(out.offsets[on]).max() > 0.01
        assert np.ptp(out.velocities[on]) > 0.05


def test_infill_keeps_every_voice_but_the_hats(engines):
    engine = engines["infill"]
    played = _played(8, engine.spec, seed=5)
    kept = _kept(engine.spec)
    out = engine.transform(played, seed=6)
    for got, given in ((out.hits, played.hits), (out.velocities, played.velocities),
                       (out.offsets, played.offsets)):
        np.testing.assert_array_equal(got[..., kept], given[..., kept])
    # the hats come from the model, not the input (which had its hats removed)
    assert not np.array_equal(out.hits[..., ~kept], played.hits[..., ~kept])


def test_drumify_reads_only_the_taps(engines):
    """Two patterns with the same taps (any voice hit on a step, the loudest note's timing)
    are the same input to drumify, so give the same kit."""
    engine = engines["drumify"]
    a = _played(2, engine.spec, seed=7)
    moved = Patterns(a.hits[..., ::-1].copy(), a.velocities[..., ::-1].copy(),
                     a.offsets[..., ::-1].copy())  # voices swapped, same steps and timing
    np.testing.assert_array_equal(task_input("drumify", a, engine.spec).to_flat(),
                                  task_input("drumify", moved, engine.spec).to_flat())
    assert _same(engine.transform(a, seed=1), engine.transform(moved, seed=1))


@pytest.mark.parametrize("task", TASK_NAMES)
def test_temperature_zero_ignores_the_noise_but_not_z(engines, task):
    engine = engines[task]
    played = _played(4, engine.spec, seed=8)
    z = np.random.default_rng(0).standard_normal((4, engine.spec.z_size)).astype(np.float32)
    a = engine.transform(played, temperature=0.0, seed=1, z=z)
    assert _same(a, engine.transform(played, temperature=0.0, seed=2, z=z))
    assert not _same(a, engine.transform(played, temperature=1.0, seed=1, z=z))
    assert not _same(a, engine.transform(played, temperature=0.0, seed=1, z=-z))


@pytest.mark.parametrize("task", TASK_NAMES)
def test_temperature_scales_the_prior_feel_so_zero_is_one_performance(engines, task):
    engine = engines[task]
    played = _played(4, engine.spec, seed=8)
    a = engine.transform(played, temperature=0.0, seed=1)
    assert _same(a, engine.transform(played, temperature=0.0, seed=2))  # no z, no noise left
    zeros = np.zeros((4, engine.spec.z_size), np.float32)
    assert _same(a, engine.transform(played, temperature=0.0, seed=3, z=zeros))
    assert not _same(engine.transform(played, temperature=1.0, seed=1),
                     engine.transform(played, temperature=1.0, seed=2))


@pytest.mark.parametrize("task", TASK_NAMES)
def test_a_batch_gives_each_pattern_what_it_gives_alone(engines, task):
    engine = engines[task]
    played = _played(7, engine.spec, seed=9)
    rng = np.random.default_rng(1)
    z = rng.standard_normal((7, engine.spec.z_size)).astype(np.float32)
    hit_noise, cont_noise = engine.noise(7, rng)
    control = task_input(task, played, engine.spec).to_flat()
    batch = engine.decode_noise(z, 1.0, hit_noise, cont_noise, control)
    for i in (0, 3, 6):
        alone = engine.decode_noise(z[i:i + 1], 1.0, hit_noise[i:i + 1], cont_noise[i:i + 1],
                                    control[i:i + 1])
        np.testing.assert_array_equal(alone.hits, batch.hits[i:i + 1])
        np.testing.assert_allclose(alone.velocities, batch.velocities[i:i + 1], atol=1e-6)
        np.testing.assert_allclose(alone.offsets, batch.offsets[i:i + 1], atol=1e-6)


def test_an_encoded_groove_sets_the_feel(engines):
    engine = engines["humanize"]
    played = _played(2, engine.spec, seed=10)
    mu, _ = engine.encode(played)
    a = engine.transform(played, temperature=0.0, z=mu)
    b = engine.transform(played, temperature=0.0, z=mu[::-1].copy())
    np.testing.assert_array_equal(a.hits, b.hits)
    assert not np.allclose(a.velocities, b.velocities)
    # one latent for one pattern may be given as a vector
    assert _same(engine.transform(played[:1], temperature=0.0, z=mu[0]), a[:1])


@pytest.mark.parametrize("call, says", [
    (lambda e: e.sample(1), "transforms patterns rather than sampling them"),
    (lambda e: e.decode(np.zeros(e.spec.z_size, np.float32)), "rather than decoding them"),
    (lambda e: e.interpolate(Patterns.empty(1, e.spec), Patterns.empty(1, e.spec), 3),
     "rather than interpolating them"),
])
def test_sampling_calls_are_refused_with_the_command_to_use(engines, call, says):
    with pytest.raises(EngineError) as e:
        call(engines["drumify"])
    line = _one_line(e)
    assert says in line and "a drumify model" in line and "use groove-live drumify" in line


@pytest.mark.parametrize("make, says", [
    (lambda s: Patterns.empty(1, s.replace(bars=4)), "32 steps x 9 voices (2 bars), got 1x64x9"),
    (lambda s: Patterns(*(np.zeros((1, 32, 4), np.float32),) * 3), "got 1x32x4"),
    (lambda s: Patterns(*(np.zeros((0, 32, 9), np.float32),) * 3), "got 0x32x9"),
    (lambda s: Patterns(*(np.zeros((2, 16, 9), np.float32),) * 3), "got 2x16x9"),  # 1 bar
    (lambda s: Patterns(np.ones((1, 32, 9), np.float32), np.full((1, 32, 9), np.nan, np.float32),
                        np.zeros((1, 32, 9), np.float32)), "NaN or infinite"),
    (lambda s: s.to_json(), "transforms Patterns, not str"),
])
def test_bad_patterns_are_refused_in_one_line(engines, make, says):
    engine = engines["infill"]
    with pytest.raises(EngineError) as e:
        engine.transform(make(engine.spec))
    assert says in _one_line(e)


@pytest.mark.parametrize("z, says", [
    (np.zeros((3, 8), np.float32), "z must be 2 x 8 finite latents (one per pattern), got 3x8"),
    (np.zeros((2, 5), np.float32), "got 2x5"),
    (np.full((2, 8), np.inf, np.float32), "finite latents"),
])
def test_bad_latents_are_refused_in_one_line(engines, z, says):
    engine = engines["humanize"]
    with pytest.raises(EngineError) as e:
        engine.transform(Patterns.empty(2, engine.spec), z=z)
    assert says in _one_line(e)


def test_a_decoder_that_returns_no_finished_pattern_is_refused(toy_task_model_path, tmp_path):
    def poison_velocities(graph) -> None:
        for node in graph.node:
            node.output[:] = [("vel_raw" if o == "velocities" else o) for o in node.output]
        graph.initializer.append(numpy_helper.from_array(np.float32(np.nan), "nan"))
        graph.node.append(helper.make_node("Mul", ["vel_raw", "nan"], ["velocities"]))

    bad = tmp_path / "humanize.onnx"
    _tampered(toy_task_model_path("humanize"), bad, poison_velocities)
    with pytest.raises(EngineError) as e:
        Engine.load(bad)  # its warm-up transform already meets the NaN
    assert "returned something other than 1 finished patterns" in _one_line(e)


def test_the_task_models_run_without_torch(run_torch_free, toy_task_model_path):
    result = run_torch_free("""
        import numpy as np
        from groove_live.engine import Engine
        from groove_live.pattern import Patterns
        for path in sys.argv[1:]:
            engine = Engine.load(path)
            out = engine.transform(Patterns.empty(2, engine.spec), seed=1)
            assert out.hits.shape == (2, 32, 9), out.hits.shape
            print(engine.task)
    """, *(toy_task_model_path(t) for t in TASK_NAMES))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [*TASK_NAMES, "torch-free"]


# --- export ---------------------------------------------------------------------------------

@pytest.mark.parametrize("task", TASK_NAMES)
def test_export_matches_torch_at_every_temperature(toy_task_export, task):
    import torch

    toy = toy_task_export(task)
    checks = toy.result.checks
    assert checks["task"] == task and checks["hit_mismatches"] == 0
    assert checks["decoded"] == 48 and checks["temperatures"] == [0.0, 0.5, 1.0]
    engine = Engine.load(toy.model_path)
    played = _played(5, engine.spec, seed=11)  # other patterns, latents and noise than export's
    rng = np.random.default_rng(2)
    z = rng.standard_normal((5, engine.spec.z_size)).astype(np.float32)
    temperature = np.array([0.0, 0.3, 0.7, 1.0, 1.5], np.float32)
    hit_noise, cont_noise = engine.noise(5, rng)
    control = task_input(task, played, engine.spec).to_flat()
    got = engine.decode_noise(z, temperature, hit_noise, cont_noise, control)
    with torch.no_grad():
        want = [t.numpy() for t in toy.model.sample(*(torch.from_numpy(a) for a in (
            z, temperature, hit_noise, cont_noise, control)))]
    np.testing.assert_array_equal(got.hits, want[0])
    np.testing.assert_allclose(got.velocities, want[1], atol=1e-4, rtol=0)
    np.testing.assert_allclose(got.offsets, want[2], atol=1e-4, rtol=0)
    decoder = onnx.load(toy.model_path)
    assert [i.name for i in decoder.graph.input] == [*engine.spec.decoder_inputs, "input"]
    assert toy.model_path.name == f"{task}.onnx"


def _tampered(src, dst, change) -> None:
    model = onnx.load(src)
    change(model.graph)
    onnx.save(model, dst)


def _force_first_kick(graph) -> None:
    """The graph's hits output with a kick forced on at step 0 of every pattern."""
    for node in graph.node:
        node.output[:] = [("hits_raw" if o == "hits" else o) for o in node.output]
    force = np.zeros((1, 32, 9), np.float32)
    force[0, 0, 0] = 1.0
    graph.initializer.append(numpy_helper.from_array(force, "force_kick"))
    graph.node.append(helper.make_node("Max", ["hits_raw", "force_kick"], ["hits"]))


def _scale_the_lstm(graph) -> None:
    for i, tensor in enumerate(graph.initializer):
        array = numpy_helper.to_array(tensor)
        if array.ndim == 3 and array.shape[0] == 2:  # the bidirectional LSTM's W/R
            graph.initializer[i].CopyFrom(numpy_helper.from_array(array * 1.5, tensor.name))


@pytest.mark.parametrize("task, change, says", [
    ("humanize", _force_first_kick, "the humanize decoder changed the input's hits"),
    ("infill", _force_first_kick, "changed the hits of voices it must keep from its input"),
    ("drumify", _scale_the_lstm, "differ from torch"),
])
def test_export_check_catches_a_tampered_graph(toy_task_export, tmp_path, task, change, says):
    import shutil

    from groove_live.export.verify import VerificationError, verify_against_torch

    toy = toy_task_export(task)
    bad = tmp_path / toy.model_path.name
    _tampered(toy.model_path, bad, change)
    shutil.copy(toy.result.encoder_path, tmp_path / toy.result.encoder_path.name)
    with pytest.raises(VerificationError) as e:
        verify_against_torch(Engine.load(bad), toy.model)
    assert says in _one_line(e)


def test_int8_of_a_task_model_is_refused_in_one_line(toy_task_export, tmp_path,
                                                     one_line_failure):
    from groove_live.export.cli import main as export_main

    toy = toy_task_export("humanize")
    out = tmp_path / "q.onnx"
    result = CliRunner().invoke(export_main, ["onnx", "--run", str(toy.run_dir), "--out",
                                              str(out), "--variant", "int8"])
    line = one_line_failure(result, "groove-export")
    assert result.exit_code == 2
    assert "a humanize model exports as fp32 only, not int8" in line
    assert not list(tmp_path.iterdir())  # nothing written
