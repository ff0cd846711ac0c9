"""export/rebuild.py: an exported GrooVAE pair back into a torch run folder that decodes as the
exported files do (fp32: the committed toy export; int8: a tiny Gaussian-head model exported
here, since no committed fixture is int8)."""
from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import onnx
import pytest
import torch

from groove_live.engine import Engine
from groove_live.export.onnx_export import export_run
from groove_live.export.rebuild import RebuildError, model_from_onnx, rebuild_run
from groove_live.export.verify import decode_both_groovae
from groove_live.train.config import get_preset
from groove_live.train.model import GrooVAE
from groove_live.train.run import load_model, model_header, save_checkpoint_atomic, save_run_config


def _decode_both(engine: Engine, model, seed: int, n: int = 24):
    """Same z, temperatures and noise through onnxruntime and torch (other inputs than the
    rebuild's own check)."""
    rng = np.random.default_rng(seed)
    return decode_both_groovae(engine, model, rng.uniform(0.3, 1.5, n).astype(np.float32), rng)


def test_fp32_toy_export_rebuilds_into_a_run_that_decodes_as_onnxruntime(toy_model_path,
                                                                         tmp_path):
    record = rebuild_run(toy_model_path, tmp_path / "run")
    assert record["variant"] == "fp32" and record["step"] == 40
    assert record["checks"]["round_trip"] == {"int8_weights_differing": 0,
                                              "float_initializers_max_abs": 0.0}
    assert record["checks"]["torch_vs_shipped"]["hit_mismatches"] == 0
    # The folder loads as any run does (best.pt through torch.load(weights_only=True)).
    model, cfg, spec = load_model(tmp_path / "run")
    tiny = get_preset("groovae_tiny").model
    assert (cfg.enc_rnn_sizes, cfg.dec_rnn_sizes, cfg.z_size) == (
        tiny.enc_rnn_sizes, tiny.dec_rnn_sizes, tiny.z_size)
    assert spec.preset == "groovae_tiny" and spec.continuous_head == "mean"
    engine = Engine.load(toy_model_path)
    got, want = _decode_both(engine, model, seed=7)
    np.testing.assert_array_equal(got.hits, want[0])
    assert 0.02 < got.hits.mean() < 0.98
    np.testing.assert_allclose(got.velocities, want[1], atol=1e-5, rtol=0)
    np.testing.assert_allclose(got.offsets, want[2], atol=1e-5, rtol=0)
    patterns = engine.decode(np.zeros((4, spec.z_size), np.float32), temperature=1.0, seed=1)
    mu, sigma = engine.encode(patterns)
    with torch.no_grad():
        ref_mu, ref_sigma = model.encoder(torch.from_numpy(patterns.to_flat()))
    np.testing.assert_allclose(mu, ref_mu.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(sigma, ref_sigma.numpy(), atol=1e-5, rtol=0)

    # Rebuilding again into the rebuilt folder is fine; over a training run it is refused.
    rebuild_run(toy_model_path, tmp_path / "run", check=False)
    (tmp_path / "run" / "rebuild.json").unlink()
    with pytest.raises(RebuildError, match="holds a training run"):
        rebuild_run(toy_model_path, tmp_path / "run", check=False)


@pytest.fixture(scope="module")
def int8_export(tmp_path_factory):
    """A groovae_tiny model with a Gaussian head (untrained, seeded), exported as int8 by
    `export_run`, with the fp32 model it came from."""
    root = tmp_path_factory.mktemp("int8_export")
    torch.manual_seed(0)
    preset = get_preset("groovae_tiny")
    cfg = dataclasses.replace(preset.model, continuous_head="gaussian")
    spec = preset.spec(cfg)
    model = GrooVAE(cfg, spec).eval()
    run = root / "tiny_gaussian"
    save_run_config(run, "groovae_tiny", cfg, preset.train, spec, data="")
    save_checkpoint_atomic(run / "best.pt", {"model": model.state_dict(), "step": 3,
                                             "val": None, **model_header(cfg, spec)})
    threads = torch.get_num_threads()
    try:
        result = export_run(run, root / "tiny.onnx", variant="int8")
    finally:
        torch.set_num_threads(threads)
    return result.decoder_path, model


def test_int8_export_rebuilds_its_dequantized_weights(int8_export, tmp_path):
    path, fp32_model = int8_export
    rebuilt = model_from_onnx(path)
    assert rebuilt.variant == "int8" and rebuilt.spec.continuous_head == "gaussian"
    # Every parameter but the quantized LSTM layer is the fp32 model's (to float rounding of
    # the undone folds); that layer's is exactly int8 x scale of the file.
    original = fp32_model.state_dict()
    for name, value in rebuilt.model.state_dict().items():
        if ".rnn.weight_" in name and name.endswith("_l1") and name.startswith("decoder."):
            scale = np.abs(original[name].numpy()).max(axis=1) / 127.0  # per gate unit
            assert np.abs(value.numpy() - original[name].numpy()).max() <= scale.max() / 2 + 1e-7
        elif name == "decoder.rnn.bias_ih_l0":  # holds both layer-0 biases, summed
            np.testing.assert_allclose(value, original[name] + original["decoder.rnn.bias_hh_l0"],
                                       atol=1e-6)
        elif name == "decoder.rnn.bias_hh_l0":
            assert not value.any()
        else:
            np.testing.assert_allclose(value, original[name], atol=1e-6, rtol=0, err_msg=name)
    shipped = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}
    w_l1 = rebuilt.model.state_dict()["decoder.rnn.weight_ih_l1"].numpy()
    q = (shipped["W1"][0].astype(np.float32) * shipped["W1_scale"][0]).T  # (4H, K) in i, o, f, g
    h = w_l1.shape[0] // 4
    np.testing.assert_array_equal(w_l1[:h], q[:h])  # the input gate block sits first in both
    np.testing.assert_array_equal(w_l1[3 * h:], q[h:2 * h])  # torch's o is ONNX's second

    record = rebuild_run(path, tmp_path / "run")
    checks = record["checks"]
    assert "dequantized" in record["note"]
    assert checks["round_trip"]["int8_weights_differing"] == 0
    assert checks["round_trip"]["float_initializers_max_abs"] <= 1e-5
    assert checks["torch_vs_fp32_graph"]["hit_mismatches"] == 0  # torch = its weights' graph
    assert checks["torch_vs_shipped"]["T0"]["hit_agreement"] > 0.97  # activations quantized
    model, cfg, _ = load_model(tmp_path / "run")
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, rebuilt.model.state_dict()[name], rtol=0, atol=0)
    shutil.rmtree(tmp_path / "run")
