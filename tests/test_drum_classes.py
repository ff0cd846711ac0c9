"""One class per step: the bit order stated once, round trips, and the spec's rules for the
categorical kinds."""
import numpy as np
import pytest

from groove_live.drum_classes import class_bits, classes_to_hits, hits_to_classes
from groove_live.spec import DEFAULT_SPEC, DrumClass, ModelSpec, SpecError


def test_bit_k_is_voice_k():
    hits = np.zeros((2, 9), np.float32)
    hits[0, 0] = 1  # kick alone
    hits[1, [0, 1, 2]] = 1  # kick + snare + closed hat
    assert hits_to_classes(hits).tolist() == [1, 7]
    assert hits_to_classes(np.zeros(9)).item() == 0
    assert hits_to_classes(np.ones(9)).item() == 511


def test_every_class_round_trips_and_the_table_agrees():
    classes = np.arange(512)
    hits = classes_to_hits(classes, 9)
    assert hits.shape == (512, 9)
    assert (hits_to_classes(hits) == classes).all()
    assert (class_bits(9) == hits).all()
    assert len({tuple(row) for row in class_bits(9)}) == 512  # every subset once


def test_out_of_range_classes_are_refused():
    with pytest.raises(ValueError, match="0..511"):
        classes_to_hits(np.array([512]), 9)
    with pytest.raises(ValueError, match="0..511"):
        classes_to_hits(np.array([-1]), 9)


def test_categorical_kinds_draw_one_noise_per_step():
    for kind in ("categorical", "hierarchical"):
        spec = ModelSpec(kind=kind, bars=16, z_size=32)
        shapes = spec.io_shapes(3)
        assert spec.n_classes == 512
        assert shapes["decoder_inputs"]["hit_noise"] == (3, 256, 1)  # inverse-CDF sampling
        assert shapes["decoder_outputs"]["hits"] == (3, 256, 9)  # the standard pattern out
        assert shapes["encoder_inputs"]["pattern"] == (3, 256, 27)
        # Their data is a GrooVAE cache of the same bars.
        assert spec.window_spec().data_shape_mismatch(DEFAULT_SPEC.replace(bars=16)) is None


def test_categorical_specs_refuse_what_they_cannot_hold():
    too_many = DEFAULT_SPEC.drums + tuple(DrumClass(f"x{i}", 60 + i, ()) for i in range(4))
    with pytest.raises(SpecError, match="at most 12"):
        ModelSpec(kind="categorical", drums=too_many).validate()
    ModelSpec(kind="groovae", drums=too_many).validate()  # a GrooVAE has no 2^voices layer
    with pytest.raises(SpecError, match="at least 2 bars"):
        ModelSpec(kind="hierarchical", bars=1).validate()
