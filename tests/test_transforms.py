"""The task transformations on hand-made patterns whose answers are known."""
from __future__ import annotations

import numpy as np
import pytest

from groove_live.pattern import Patterns
from groove_live.spec import DEFAULT_SPEC
from groove_live.transforms import FIXED_VELOCITY, drop_voices, quantize, tapify

SPEC = DEFAULT_SPEC
KICK, SNARE, CLOSED, OPEN, CRASH = (SPEC.drum_names.index(n) for n in
                                    ("kick", "snare", "closed_hihat", "open_hihat", "crash"))


def _played() -> Patterns:
    """Two steps of a played beat: kick + closed hat together on step 0, snare late on step 4."""
    hits = np.zeros((SPEC.steps, SPEC.n_drums), np.float32)
    vel = np.zeros_like(hits)
    off = np.zeros_like(hits)
    hits[0, KICK], vel[0, KICK], off[0, KICK] = 1, 0.9, -0.10
    hits[0, CLOSED], vel[0, CLOSED], off[0, CLOSED] = 1, 0.4, 0.20
    hits[4, SNARE], vel[4, SNARE], off[4, SNARE] = 1, 0.7, 0.05
    hits[6, OPEN], vel[6, OPEN], off[6, OPEN] = 1, 0.5, -0.30
    return Patterns(hits, vel, off)


def test_quantize_keeps_hits_and_flattens_velocity_and_timing():
    q = quantize(_played())
    np.testing.assert_array_equal(q.hits, _played().hits)
    assert not q.offsets.any()
    np.testing.assert_allclose(q.velocities, _played().hits * FIXED_VELOCITY)


def test_quantize_can_keep_velocities():
    q = quantize(_played(), velocity=None)
    np.testing.assert_allclose(q.velocities, _played().velocities)
    assert not q.offsets.any()


def test_tapify_puts_one_tap_per_onset_step_with_the_loudest_notes_timing():
    t = tapify(_played(), SPEC, velocity=None)
    tapped = np.flatnonzero(t.hits[0].any(axis=-1))
    np.testing.assert_array_equal(tapped, [0, 4, 6])
    assert t.hits[0, :, OPEN].sum() == 3 and t.hits[0].sum() == 3  # only the tap voice plays
    # Step 0: kick (0.9, -0.10) is louder than the hat (0.4, +0.20): its onset is the tap.
    assert t.velocities[0, 0, OPEN] == pytest.approx(0.9)
    assert t.offsets[0, 0, OPEN] == pytest.approx(-0.10)
    assert t.offsets[0, 4, OPEN] == pytest.approx(0.05)
    assert t.offsets[0, 6, OPEN] == pytest.approx(-0.30)


def test_tapify_flattens_velocities_by_default():
    t = tapify(_played(), SPEC)
    np.testing.assert_allclose(t.velocities[0, [0, 4, 6], OPEN], FIXED_VELOCITY)
    assert t.velocities.sum() == pytest.approx(3 * FIXED_VELOCITY)


def test_tapify_of_silence_is_silence():
    t = tapify(Patterns.empty(2, SPEC), SPEC)
    assert not t.hits.any() and not t.velocities.any() and not t.offsets.any()


def test_drop_voices_removes_both_hats_and_nothing_else():
    d = drop_voices(_played(), SPEC)
    assert not d.hits[..., [CLOSED, OPEN]].any()
    assert not d.velocities[..., [CLOSED, OPEN]].any()
    assert not d.offsets[..., [CLOSED, OPEN]].any()
    for voice in (KICK, SNARE):
        np.testing.assert_array_equal(d.hits[..., voice], _played().hits[..., voice])
        np.testing.assert_allclose(d.offsets[..., voice], _played().offsets[..., voice])


def test_an_unknown_voice_is_named():
    with pytest.raises(ValueError, match="unknown voice 'cowbell'"):
        drop_voices(_played(), SPEC, ["cowbell"])


def test_transforms_work_on_batches():
    batch = Patterns.concat([_played(), quantize(_played())])
    assert len(tapify(batch, SPEC)) == 2
    assert len(drop_voices(batch, SPEC)) == 2
    np.testing.assert_array_equal(quantize(batch).hits[1], _played().hits[0])
