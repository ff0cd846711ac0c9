"""The train -> export -> runtime seam: a toy run exported and decoded by the engine as by torch."""
from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

from groove_live.engine import Engine
from groove_live.export.cli import main as export_main
from groove_live.export.onnx_export import ExportError, export_run
from groove_live.spec import (ENCODER_KEY, METADATA_KEY, ROLE_KEY, SCHEMA_VERSION, VARIANT_KEY,
                              ModelSpec)


@pytest.mark.parametrize("head", ["mean", "gaussian"])
def test_engine_decodes_and_encodes_as_torch(toy_export, head):
    toy = toy_export(head)
    engine = Engine.load(toy.model_path)
    rng = np.random.default_rng(42)  # other latents and noise than export's own check
    n = 32
    z = rng.standard_normal((n, engine.spec.z_size)).astype(np.float32)
    temperature = rng.uniform(0.2, 2.0, n).astype(np.float32)
    hit_noise, cont_noise = engine.noise(n, rng)
    got = engine.decode_noise(z, temperature, hit_noise, cont_noise)
    with torch.no_grad():
        want = [t.numpy() for t in toy.model.decoder.sample(
            torch.from_numpy(z), torch.from_numpy(temperature)[:, None],
            hit_noise=torch.from_numpy(hit_noise), cont_noise=torch.from_numpy(cont_noise))]
    assert got.hits.shape == (n, engine.spec.steps, engine.spec.n_drums)
    np.testing.assert_array_equal(got.hits, want[0])
    assert 0.02 < got.hits.mean() < 0.98  # a real mix of hits and rests was compared
    np.testing.assert_allclose(got.velocities, want[1], atol=1e-4, rtol=0)
    np.testing.assert_allclose(got.offsets, want[2], atol=1e-4, rtol=0)
    if head == "gaussian":  # the learned spread is sampled, not dropped
        assert not np.allclose(got.velocities, engine.decode_noise(
            z, temperature, hit_noise, cont_noise * 0).velocities)

    patterns = engine.sample(8, seed=1)
    mu, sigma = engine.encode(patterns)
    with torch.no_grad():
        ref_mu, ref_sigma = toy.model.encoder(torch.from_numpy(patterns.cleaned().to_flat()))
    np.testing.assert_allclose(mu, ref_mu.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(sigma, ref_sigma.numpy(), atol=1e-4, rtol=0)


def test_temperature_zero_is_greedy(toy_export):
    toy = toy_export("mean")
    engine = Engine.load(toy.model_path)
    z = np.random.default_rng(3).standard_normal((8, engine.spec.z_size)).astype(np.float32)
    got = engine.decode(z, temperature=0.0, seed=5)
    with torch.no_grad():
        want = toy.model.decode(torch.from_numpy(z), greedy=True)
    np.testing.assert_array_equal(got.hits, want[0].numpy())
    np.testing.assert_allclose(got.velocities, want[1].numpy(), atol=1e-4, rtol=0)


def test_files_describe_themselves(toy_export):
    toy = toy_export("mean")
    decoder = onnx.load(toy.model_path)
    meta = {p.key: p.value for p in decoder.metadata_props}
    spec = ModelSpec.from_json(meta[METADATA_KEY])
    assert spec.preset == "groovae_tiny" and spec.run_id == "run_mean@step8"
    assert spec.z_size == 16 and spec.continuous_head == "mean"
    assert spec.kind == "groovae" and spec.controls == () and spec.schema_version == SCHEMA_VERSION
    assert json.loads(meta[METADATA_KEY])["schema_version"] == SCHEMA_VERSION
    assert spec.training_data.startswith("Groove MIDI Dataset")  # the cache's description
    assert meta[ROLE_KEY] == "decoder" and meta[VARIANT_KEY] == "fp32"
    assert meta[ENCODER_KEY] == toy.result.encoder_path.name == "mean.encoder.onnx"
    assert [i.name for i in decoder.graph.input] == list(spec.decoder_inputs)
    assert [o.name for o in decoder.graph.output] == list(spec.decoder_outputs)
    encoder = onnx.load(toy.result.encoder_path)
    enc_meta = {p.key: p.value for p in encoder.metadata_props}
    assert json.loads(enc_meta[METADATA_KEY]) == json.loads(meta[METADATA_KEY])
    assert enc_meta[ROLE_KEY] == "encoder"
    dims = [d.dim_param or d.dim_value for d in decoder.graph.input[2].type.tensor_type.shape.dim]
    assert dims == ["batch", 64, 9]
    assert toy.result.checks["hit_mismatches"] == 0


def test_int8_variant_is_checked_against_fp32(toy_export, tmp_path):
    toy = toy_export("mean")
    result = export_run(toy.run_dir, tmp_path / "q.onnx", variant="int8")
    assert result.variant_checks["hit_flip_rate"] <= 0.005
    assert "speedup_batch1" in result.variant_checks
    engine = Engine.load(result.decoder_path)
    assert engine.variant == "int8" and engine.has_encoder
    assert not list(tmp_path.glob(".export-*"))  # staging cleaned up


def test_cli_prints_a_line_per_stage(toy_export, tmp_path):
    toy = toy_export("mean")
    out = tmp_path / "m.onnx"
    result = CliRunner().invoke(export_main, ["onnx", "--run", str(toy.run_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    stages = [line for line in result.stderr.splitlines() if line.startswith("groove-export: [")]
    assert len(stages) == 5 and "[5/5] wrote" in stages[-1]
    assert out.is_file() and (tmp_path / "m.encoder.onnx").is_file()

    assert result.stdout.strip() == str(out)


def test_without_out_the_export_lands_in_its_run_folder(toy_export, tmp_path, monkeypatch):
    toy = toy_export("mean")
    run = tmp_path / "run"
    shutil.copytree(toy.run_dir, run)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(export_main, ["onnx", "--run", str(run), "--variant", "int8"])
    assert result.exit_code == 0, result.output
    want = run / f"{toy.result.spec.model_name}.int8.onnx"
    assert result.stdout.strip() == str(want)
    assert want.is_file() and want.with_name(want.name[:-len(".onnx")] + ".encoder.onnx").is_file()
    assert not list(tmp_path.glob("*.onnx"))  # nothing in the current folder


@pytest.fixture
def export_fails(one_line_failure):
    """export_fails(args) -> the one line `groove-export onnx ARGS` fails with."""
    return lambda args: one_line_failure(CliRunner().invoke(export_main, ["onnx", *args]),
                                         "groove-export")


def test_bad_input_is_one_clear_line(toy_export, tmp_path, export_fails):
    assert "no such run folder" in export_fails(
        ["--run", str(tmp_path / "nope"), "--out", str(tmp_path / "a.onnx")])
    assert "not a groove-train run folder" in export_fails(
        ["--run", str(tmp_path), "--out", str(tmp_path / "a.onnx")])

    toy = toy_export("mean")
    bad = tmp_path / "bad_run"
    shutil.copytree(toy.run_dir, bad)
    _as_older_checkpoint(bad / "best.pt")  # read through config.json and spec.json
    spec = json.loads((bad / "spec.json").read_text())
    spec["z_size"] = 99
    (bad / "spec.json").write_text(json.dumps(spec))
    assert "differ from the config" in export_fails(["--run", str(bad), "--out", str(tmp_path / "b.onnx")])

    config = json.loads((toy.run_dir / "config.json").read_text())
    config["model"]["z_size"] = 99
    (bad / "config.json").write_text(json.dumps(config))  # agrees with spec.json, not the weights
    assert "do not fit config.json" in export_fails(
        ["--run", str(bad), "--out", str(tmp_path / "c.onnx")])
    assert "fp16 is not offered" in export_fails(
        ["--run", str(toy.run_dir), "--out", str(tmp_path / "d.onnx"), "--variant", "fp16"])
    assert not list(tmp_path.glob("*.onnx"))

    with pytest.raises(ExportError, match="must end in .onnx"):
        export_run(toy.run_dir, tmp_path / "model.bin")


def _as_older_checkpoint(path):
    """Strip a checkpoint's own spec and model_args, as written before it carried them."""
    state = torch.load(path, weights_only=True)
    del state["spec"], state["model_args"]
    torch.save(state, path)


def test_a_checkpoint_with_its_own_spec_ignores_a_tampered_run_folder(toy_export, tmp_path):
    toy = toy_export("mean")
    run = tmp_path / "run"
    shutil.copytree(toy.run_dir, run)
    spec = json.loads((run / "spec.json").read_text())
    spec["z_size"] = 99
    (run / "spec.json").write_text(json.dumps(spec))
    result = export_run(run, tmp_path / "m.onnx")
    assert result.spec.z_size == 16 and result.checks["hit_mismatches"] == 0


@pytest.mark.parametrize("kind", ["nonesuch", "pitched"])
def test_a_spec_no_runtime_can_decode_is_not_exported(toy_export, tmp_path, export_fails, kind):
    # An unknown kind, or a known one the weights' spec cannot be (a drum spec relabelled as a
    # harmonizer has drums and no voices): one line, nothing written.
    toy = toy_export("mean")
    run = tmp_path / "run"
    shutil.copytree(toy.run_dir, run)
    state = torch.load(run / "best.pt", weights_only=True)
    spec = json.loads(state["spec"])
    state["spec"] = json.dumps({**spec, "kind": kind})
    torch.save(state, run / "best.pt")
    line = export_fails(["--run", str(run), "--out", str(tmp_path / "p.onnx")])
    assert kind in line, line
    assert not list(tmp_path.glob("*.onnx"))


def test_every_kind_the_runtime_decodes_can_be_exported_and_checked():
    from groove_live.engine import DECODE_PATHS
    from groove_live.export.onnx_export import DECODER_EXPORTS
    from groove_live.export.verify import VERIFIERS

    assert set(DECODER_EXPORTS) == set(VERIFIERS) == set(DECODE_PATHS)
    assert DECODER_EXPORTS["groovae"].variants == ("fp32", "int8")
    assert DECODER_EXPORTS["conditioned"].variants == ("fp32",)
