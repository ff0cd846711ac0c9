"""Float16-stored weights: half the file, float32 maths, outputs checked, refused when they
move too far, and readable back by the tools that read initializers."""
from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from groove_live.export.cli import main as export_main
from groove_live.export.fp16_weights import (FP16_SUFFIX, Fp16Error, check_outputs, compact_file,
                                 initializer_arrays, store_weights_fp16)
from groove_live.engine import Engine, encoder_path_for


@pytest.fixture
def toy_copy(toy_model_path, tmp_path):
    """A copy of the toy GrooVAE (decoder + encoder) that the test may rewrite."""
    decoder = tmp_path / toy_model_path.name
    shutil.copy(toy_model_path, decoder)
    shutil.copy(encoder_path_for(toy_model_path), encoder_path_for(decoder))
    return decoder


def test_weights_are_stored_half_size_and_read_back_as_their_float16_rounding(toy_copy):
    model = onnx.load(str(encoder_path_for(toy_copy)))
    compacted, converted, kept = store_weights_fp16(model, min_elements=64)
    assert converted > 0 and kept == 0
    before = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    after = initializer_arrays(compacted)
    assert set(after) == set(before)  # every weight under the name the graph computes with
    for name, array in before.items():
        assert after[name].dtype == array.dtype
        np.testing.assert_array_equal(after[name], array.astype(np.float16).astype(array.dtype)
                                      if array.size >= 64 else array)
    stored = [t for t in compacted.graph.initializer if t.name.endswith(FP16_SUFFIX)]
    assert len(stored) == converted
    assert len(compacted.SerializeToString()) < 0.75 * len(model.SerializeToString())
    assert store_weights_fp16(compacted, min_elements=64)[1] == 0  # twice is once


def test_a_compacted_encoder_encodes_as_before_within_rounding(toy_copy):
    engine = Engine.load(toy_copy)
    patterns = engine.sample(6, seed=2)
    mu, sigma = engine.encode(patterns)
    result = compact_file(encoder_path_for(toy_copy))
    assert result.bytes_after < result.bytes_before and result.max_output_change < 1e-2
    mu16, sigma16 = Engine.load(toy_copy).encode(patterns)
    np.testing.assert_allclose(mu16, mu, atol=1e-2)
    np.testing.assert_allclose(sigma16, sigma, atol=1e-2)
    assert not np.array_equal(mu16, mu)  # it did change the weights


def test_a_file_whose_outputs_move_too_far_is_left_as_it_was(toy_copy):
    before, files = toy_copy.read_bytes(), sorted(toy_copy.parent.iterdir())
    with pytest.raises(Fp16Error, match="move an output by"):
        compact_file(toy_copy, max_output_change=0.0)
    assert toy_copy.read_bytes() == before
    assert sorted(toy_copy.parent.iterdir()) == files  # nothing written, not even a temp file


def test_a_corrupt_file_is_one_line(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(Fp16Error) as e:
        compact_file(bad)
    assert "\n" not in str(e.value) and "bad.onnx" in str(e.value)


def test_check_outputs_is_zero_for_the_same_model(toy_copy):
    model = onnx.load(str(encoder_path_for(toy_copy)))
    assert check_outputs(model, model) == 0.0


def test_the_command_rewrites_in_place_and_says_what_it_did(toy_copy):
    encoder = encoder_path_for(toy_copy)
    size = encoder.stat().st_size
    result = CliRunner().invoke(export_main, ["fp16-weights", str(encoder)])
    assert result.exit_code == 0, result.output
    assert "as float16" in result.output and encoder.stat().st_size < size
    refused = CliRunner().invoke(export_main, ["fp16-weights", str(toy_copy), "--max-change", "0"])
    assert refused.exit_code == 2 and "move an output by" in refused.output
