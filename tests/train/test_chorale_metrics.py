"""Chorale metrics, key finding and the two baselines on hand-made chorales with known answers."""
import numpy as np
import pytest

from groove_live.chorale import REST, VOICE_RANGES, VOICES
from groove_live.train import chorale_metrics as cm
from groove_live.train.chorale_baselines import (baseline_table, format_table, harmonize_random,
                                                 harmonize_rule)
from groove_live.train.chorale_key import find_key, key_name, scale_mask

C_SCALE = np.repeat([60, 62, 64, 65, 67, 69, 71, 72], 4)  # 32 steps, a quarter note each


def held(chord, steps=32) -> np.ndarray:
    return np.tile(np.array(chord), (steps, 1))


def with_melody(melody, chord=(64, 55, 48)) -> np.ndarray:
    v = held((0,) + tuple(chord), len(melody))
    v[:, 0] = melody
    return v


# --- key ------------------------------------------------------------------------------------

def test_krumhansl_schmuckler_keys():
    assert find_key(C_SCALE) == 0 and key_name(0) == "C major"
    assert find_key(C_SCALE + 7) == 7  # G major
    a_minor = np.repeat([69, 72, 76, 69, 76, 72, 68, 69], 4)  # A C E with the leading tone G#
    assert find_key(a_minor) == 21 and key_name(21) == "A minor"
    assert find_key(np.full(32, REST)) == 0  # a silent melody: C major, not an error
    np.testing.assert_array_equal(find_key(np.stack([C_SCALE, a_minor])), [0, 21])
    np.testing.assert_array_equal(np.flatnonzero(scale_mask(0)), [0, 2, 4, 5, 7, 9, 11])
    np.testing.assert_array_equal(np.flatnonzero(scale_mask(21)), [0, 2, 4, 5, 7, 8, 9, 11])


# --- metrics --------------------------------------------------------------------------------

def test_voice_crossing_one_step_of_four():
    v = held([72, 64, 55, 48], 4)
    v[2, 2] = 66  # the tenor above the alto
    assert cm.voice_crossing_rate(v) == 0.25
    v[1] = [REST, 64, 66, REST]  # a crossing between two sounding voices with rests around
    v[3] = [REST, REST, REST, 48]  # one voice alone cannot cross: not counted
    assert cm.voice_crossing_rate(v) == pytest.approx(2 / 3)


def test_empty_bars_and_polyphony():
    v = held([72, 64, 55, 48])
    v[16:, 1] = REST  # the alto is silent through bar 2
    rates = cm.empty_bar_rate(v)
    np.testing.assert_array_equal(rates, [0, 0.5, 0, 0])
    assert cm.chorale_metrics(v)["empty_bar_rate"] == pytest.approx(0.5 / 3)
    assert cm.polyphony(v) == 3.5
    v[31, 1] = 64  # one 16th in the bar is enough for it not to be empty
    np.testing.assert_array_equal(cm.empty_bar_rate(v), [0, 0, 0, 0])
    np.testing.assert_array_equal(cm.empty_bar_rate(np.stack([v, held([72, REST, 55, 48])])),
                                  [0, 0.5, 0, 0])  # rates are over all bars of all windows


def test_in_scale_ratio_in_the_melodys_key():
    v = with_melody(C_SCALE)  # alto E, tenor G, bass C: all in C major
    assert cm.in_scale_ratio(v) == 1.0
    v[24:, 3] = 54  # F# in the bass for 8 steps of the 96 accompaniment steps
    assert cm.in_scale_ratio(v) == pytest.approx(88 / 96)
    v[:, 2] = REST  # rests are not notes
    assert cm.in_scale_ratio(v) == pytest.approx(56 / 64)
    # the same accompaniment under a G major melody: F# is in, F is not (there is none)
    g = with_melody(C_SCALE + 7, chord=(66, 55, 48))
    assert cm.in_scale_ratio(g) == 1.0 and cm.in_scale_ratio(with_melody(C_SCALE, (66, 55, 48))) \
        == pytest.approx(64 / 96)


def test_ranges_and_out_of_range():
    v = with_melody(C_SCALE)
    v[:8, 3] = 30  # below Bach's lowest bass for 8 of 96 accompaniment steps
    m = cm.voice_ranges(v)
    assert (m["range/bass/min"], m["range/bass/max"]) == (30, 48)
    assert m["range/bass/mean"] == pytest.approx((8 * 30 + 24 * 48) / 32)
    assert m["range/soprano/min"] == 60 and m["range/soprano/max"] == 72
    assert m["out_of_range_rate"] == pytest.approx(8 / 96)


def test_js_divergence_known_values():
    assert cm.js_divergence([0.5, 0.5], [0.5, 0.5]) == 0
    assert cm.js_divergence([1, 0], [0, 1]) == pytest.approx(1)
    # m = (0.75, 0.25): (log2(4/3) + 0.5 log2(2/3) + 0.5 log2(2)) / 2
    assert cm.js_divergence([1, 0], [0.5, 0.5]) == pytest.approx(0.311278, abs=1e-6)
    assert cm.js_divergence([0, 0], [0, 0]) == 0 and cm.js_divergence([0, 0], [1, 0]) == 1


def test_compare_absolute_and_key_relative_histograms():
    bach = with_melody(C_SCALE)
    up = bach + 2  # the whole chorale a tone higher: the same music in D major
    same = cm.compare(bach, bach)
    assert same["pc_js"] == 0 and same["pc_js_key"] == 0
    assert same["in_scale_ratio"] == same["ref/in_scale_ratio"] == 1.0
    moved = cm.compare(up, bach)
    assert moved["pc_js_key"] == pytest.approx(0, abs=1e-12)  # relative to the key, nothing moved
    assert moved["pc_js/alto"] == 1.0  # E vs F#: disjoint absolute classes
    assert moved["pc_js"] == 1.0
    assert set(VOICES) <= {k.split("/")[1] for k in moved if k.startswith("pc_js/")}


# --- baselines ------------------------------------------------------------------------------

def test_rule_harmonizer_chords_contain_the_melody_and_stay_in_range():
    melody = np.concatenate([C_SCALE[:28], np.full(4, REST)])
    melody[8:12] = 66  # F#: outside C major; the loop below checks its triad holds it
    v = harmonize_rule(melody, key=0)  # C major (found from the melody, the F# makes it G)
    np.testing.assert_array_equal(v[:, 0], melody)
    assert (v[28:] == REST).all()  # the accompaniment rests with the melody
    for step in v[:28]:
        s, a, t, b = step
        assert b < t < a < s  # below the melody, no crossings, no unisons
        for pitch, name in zip((a, t, b), VOICES[1:]):
            assert VOICE_RANGES[name][0] <= pitch <= VOICE_RANGES[name][1]
        pcs = {p % 12 for p in step}
        root = b % 12
        assert pcs in ({root, (root + 4) % 12, (root + 7) % 12},
                       {root, (root + 3) % 12, (root + 7) % 12},
                       {root, (root + 3) % 12, (root + 6) % 12})  # complete, root position
    assert set(v[0] % 12) == {0, 4, 7}  # the tonic under the first C
    assert cm.voice_crossing_rate(v) == 0
    diatonic = np.r_[0:8, 12:28]  # every note but the F# gets a triad of C major
    assert scale_mask(0)[v[diatonic, 1:] % 12].all()
    assert find_key(melody) == 7  # with its F#, the melody alone reads as G major


def test_random_baseline_in_range_and_per_beat():
    rng = np.random.default_rng(3)
    v = harmonize_random(C_SCALE, rng)
    np.testing.assert_array_equal(v[:, 0], C_SCALE)
    for i, name in enumerate(VOICES[1:], start=1):
        assert VOICE_RANGES[name][0] <= v[:, i].min() and v[:, i].max() <= VOICE_RANGES[name][1]
    beats = v.reshape(8, 4, 4)
    assert (beats == beats[:, :1]).all()  # a new pitch only on the beat
    np.testing.assert_array_equal(v, harmonize_random(C_SCALE, np.random.default_rng(3)))


def test_baseline_table_rows():
    test = np.stack([with_melody(C_SCALE), with_melody(C_SCALE + 2, (66, 57, 50))])
    rows = baseline_table(test, test)
    assert list(rows) == ["bach", "rule", "random"]
    assert rows["bach"]["pc_js"] == 0 and rows["rule"]["voice_crossing_rate"] == 0
    table = format_table(rows)
    assert table.splitlines()[1].startswith("bach") and "in_scale_ratio" in table
