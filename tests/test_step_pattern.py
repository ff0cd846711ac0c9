"""Step strings: typed patterns parse to known arrays, and bad ones name the problem."""
from __future__ import annotations

import numpy as np
import pytest

from groove_live.spec import DEFAULT_SPEC
from groove_live.step_pattern import (STEP_VELOCITIES, StepPatternError, format_steps,
                                      pairs_from_args, parse_step_pattern, parse_steps)

SPEC = DEFAULT_SPEC  # 4 bars of 16 steps
KICK, SNARE = SPEC.drum_names.index("kick"), SPEC.drum_names.index("snare")


def test_one_bar_repeats_over_the_phrase():
    v = parse_steps("x...x...x...x...", SPEC.steps)
    assert v.shape == (64,)
    np.testing.assert_array_equal(np.flatnonzero(v), np.arange(0, 64, 4))
    np.testing.assert_allclose(v[v > 0], STEP_VELOCITIES["x"])


def test_accents_ghosts_rests_and_separators():
    v = parse_steps("X-o_ x... | x... x...", 16)
    assert v[0] == STEP_VELOCITIES["X"] and v[2] == STEP_VELOCITIES["o"]
    assert v[1] == v[3] == 0
    assert len(v) == 16 and np.count_nonzero(v) == 5


def test_pattern_from_pairs():
    p = parse_step_pattern([("kick", "x.......x......."), ("snare", "....x.......x...")], SPEC)
    assert p.hits.shape == (1, 64, SPEC.n_drums)
    assert p.hits[0, :, KICK].sum() == 8 and p.hits[0, :, SNARE].sum() == 8
    assert p.hits.sum() == 16 and not p.offsets.any()
    np.testing.assert_array_equal(p.velocities > 0, p.hits > 0)


@pytest.mark.parametrize("pairs, message", [
    ([], "no voices given"),
    ([("cowbell", "x...")], "unknown voice 'cowbell'"),
    ([("kick", "x..."), ("kick", "x...")], "given twice"),
    ([("kick", "")], "empty step string"),
    ([("kick", " | ")], "empty step string"),
    ([("kick", "x..y")], "step 4 is 'y'"),
    ([("kick", "x" * 12)], "12 steps do not divide the phrase's 64"),
    ([("kick", "x" * 128)], "128 steps do not divide"),
    ([("kick", "x" * 5000)], "longer than 1024"),
])
def test_bad_patterns_name_the_problem(pairs, message):
    with pytest.raises(StepPatternError, match=message):
        parse_step_pattern(pairs, SPEC)


def test_osc_arguments_come_in_pairs():
    assert pairs_from_args(["kick", "x...", "snare", "..x."]) == [("kick", "x..."), ("snare", "..x.")]
    with pytest.raises(StepPatternError, match="odd number"):
        pairs_from_args(["kick", "x...", "snare"])
    with pytest.raises(StepPatternError, match="must be strings"):
        pairs_from_args(["kick", 1])


def test_format_is_the_inverse_view():
    pairs = [("kick", "X...x...x...o..."), ("snare", "....x.......x...")]
    p = parse_step_pattern(pairs, SPEC)
    shown = dict(format_steps(p, SPEC))
    assert set(shown) == {"kick", "snare"}
    assert shown["kick"].split("|") == ["X...x...x...o..."] * 4
    again = parse_step_pattern(list(shown.items()), SPEC)
    np.testing.assert_array_equal(again.hits, p.hits)
    np.testing.assert_allclose(again.velocities, p.velocities)
