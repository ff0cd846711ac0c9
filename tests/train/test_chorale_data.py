"""Chorale representation (rolls <-> voices, melody checks) and the JSB cache: windows, the
transposition augmentation, cache reuse, and one clear line for a bad file."""
import json

import numpy as np
import pytest

from groove_live.chorale import (PITCHES, REST, VOICE_RANGES, VOICES, ChoraleError, check_melody,
                                 melody_roll, non_monophonic_steps, roll_to_voices, voices_to_roll)
from groove_live.train.chorale_data import (SHIFTS, ChoraleDataError, ChoraleOptions,
                                            load_chorale_split, load_chorales, prepare_chorales,
                                            transpositions, windows)

CHORD = [72, 64, 55, 48]  # C major: soprano C5, alto E4, tenor G3, bass C3


def chorale(steps: int, chord=CHORD) -> list[list[int]]:
    return [list(chord) for _ in range(steps)]


def write(tmp_path, train, valid=(), test=(), name="jsb.json"):
    path = tmp_path / name
    path.write_text(json.dumps({"train": list(train), "valid": list(valid), "test": list(test)}))
    return path


# --- representation ------------------------------------------------------------------------

def test_roll_round_trip_with_rests_and_batches():
    v = np.array([[[72, 64, 55, 48], [REST, 64, REST, 0], [127, 65, 55, 48]]])  # (1, 3, 4)
    roll = voices_to_roll(v)
    assert roll.shape == (1, 3, PITCHES, 4) and roll.dtype == np.float32
    assert set(np.unique(roll)) == {-1.0, 1.0}
    assert roll[0, 0, 64, 1] == 1 and (roll[0, 1, :, 0] == -1).all()  # a rest is all off
    assert (roll == 1).sum() == 10
    np.testing.assert_array_equal(roll_to_voices(roll), v)


def test_roll_to_voices_reads_network_output():
    roll = np.full((2, PITCHES, 1), -0.9, np.float32)
    roll[0, 60, 0], roll[0, 67, 0] = 0.2, 0.7  # the higher value wins
    roll[1, 50, 0] = -0.1  # highest cell, but not on: a rest
    np.testing.assert_array_equal(roll_to_voices(roll)[:, 0], [67, REST])


def test_melody_checks():
    m = np.array([72] * 16 + [REST] * 4 + [74] * 12)
    np.testing.assert_array_equal(check_melody(m), m)
    np.testing.assert_array_equal(check_melody(melody_roll(m)), m)  # a roll reads back
    chord = melody_roll(m)[..., 0]
    chord[5, 76] = 1
    assert list(non_monophonic_steps(chord)) == [5]
    with pytest.raises(ChoraleError, match="more than one pitch at step 5"):
        check_melody(chord)
    with pytest.raises(ChoraleError, match="16 steps"):
        check_melody(m[:16])
    with pytest.raises(ChoraleError, match="silent"):
        check_melody(np.full(32, REST))
    with pytest.raises(ChoraleError, match="soprano range"):
        check_melody(np.full(32, 40))
    assert check_melody(np.full(32, 40), in_range=False)[0] == 40
    with pytest.raises(ChoraleError, match="integers"):
        check_melody(np.full(32, 60.5))
    with pytest.raises(ChoraleError, match="MIDI 0..127"):
        check_melody(np.full(32, 128), in_range=False)


# --- windows and transposition -------------------------------------------------------------

def test_windows_every_bar_tail_dropped_silent_melody_dropped():
    c = np.array(chorale(70))
    starts = [0, 16, 32]  # 48 + 32 > 70
    c[:, 0] = np.arange(70)  # mark steps to check which ones each window holds
    w = windows(c)
    assert w.shape == (3, 32, 4)
    assert [int(x[0, 0]) for x in w] == starts
    assert windows(c[:31]).shape == (0, 32, 4)
    c[16:48, 0] = REST  # the window starting at 16 has no melody
    kept = windows(c)
    assert len(kept) == 2 and kept[0, 0, 0] == 0 and kept[1, -1, 0] == 63  # those at 0 and 32


def test_transpositions_keep_intervals_rests_and_ranges():
    top = [VOICE_RANGES["soprano"][1], 70, 60, 50]  # soprano at the top of its range
    w = np.array([chorale(32, top), chorale(32)])
    w[1, 3, 2] = REST
    out, shift, source = transpositions(w)
    assert max(shift[source == 0]) == 0  # nothing above the soprano's top
    assert sorted(shift[source == 1]) == list(SHIFTS)  # the C chord fits every shift
    for x, s, i in zip(out, shift, source):
        sounding = w[i] != REST
        np.testing.assert_array_equal(x[sounding], w[i][sounding] + s)
        assert (x[~sounding] == REST).all()
        for v, name in enumerate(VOICES):
            p = x[:, v][x[:, v] != REST]
            assert VOICE_RANGES[name][0] <= p.min() and p.max() <= VOICE_RANGES[name][1]


# --- the cache -----------------------------------------------------------------------------

def test_prepare_counts_augmentation_and_reuse(tmp_path):
    path = write(tmp_path, train=[chorale(64), chorale(20)], valid=[chorale(48)],
                 test=[chorale(32)])
    plain = prepare_chorales(path, tmp_path / "plain", ChoraleOptions(transpose=False))
    assert plain.counts == plain.original == {"train": 3, "validation": 2, "test": 1}
    assert plain.too_short == {"train": 1, "validation": 0, "test": 0}
    assert not plain.cached and prepare_chorales(path, tmp_path / "plain",
                                                 ChoraleOptions(transpose=False)).cached
    aug = prepare_chorales(path, tmp_path / "aug")
    assert not aug.cached  # transposing is another cache
    assert aug.counts == {"train": 3 * len(SHIFTS), "validation": 2, "test": 1}
    assert aug.original == plain.counts
    train = load_chorale_split(tmp_path / "aug", "train")
    assert train.shape == (3 * len(SHIFTS), 32, 4) and train.dtype == np.int64
    assert sorted({int(x[0, 0]) - CHORD[0] for x in train}) == list(SHIFTS)
    np.testing.assert_array_equal(load_chorale_split(tmp_path / "aug", "test")[0], chorale(32))
    meta = json.loads((tmp_path / "aug" / "dataset.json").read_text())
    assert meta["counts"] == aug.counts and meta["options"]["transpose"] is True
    assert "36" in aug.format()
    write(tmp_path, train=[chorale(64)], valid=[chorale(48)], test=[chorale(32)])
    edited = prepare_chorales(path, tmp_path / "aug")  # same options, another source
    assert not edited.cached and edited.too_short["train"] == 0


@pytest.mark.parametrize("content, message", [
    ("not json", "not readable JSON"),
    ("[]", "expected an object"),
    (json.dumps({"train": [], "valid": []}), "no list of chorales under 'test'"),
    (json.dumps({"train": [[]], "valid": [], "test": []}),
     "'train' chorale 0: expected a non-empty"),
    (json.dumps({"train": [], "valid": [[[60, 55, 50]]], "test": []}),
     "'valid' chorale 0 step 0: expected 4 integer pitches"),
    (json.dumps({"train": [[[60, 55, 50, 40], [60.0, 55, 50, 40]]], "valid": [], "test": []}),
     "'train' chorale 0 step 1: expected 4 integer"),
    (json.dumps({"train": [[[60, True, 50, 40]]], "valid": [], "test": []}), "step 0: expected 4"),
    (json.dumps({"train": [], "valid": [], "test": [[[60, 55, 50, 40], [60, 55, 50, 200]]]}),
     "'test' chorale 0 step 1: pitches must be MIDI"),
    (json.dumps({"train": [[[60, 55, -2, 40]]], "valid": [], "test": []}), "pitches must be MIDI"),
])
def test_bad_files_fail_in_one_line(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ChoraleDataError, match=message) as e:
        load_chorales(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)
    with pytest.raises(ChoraleDataError, match=message):
        prepare_chorales(path, tmp_path / "out")
    assert not (tmp_path / "out" / "dataset.json").exists()


def test_missing_file_and_cache(tmp_path):
    with pytest.raises(ChoraleDataError, match="no such file"):
        prepare_chorales(tmp_path / "nope.json", tmp_path / "out")
    with pytest.raises(ChoraleDataError, match="no cached split"):
        load_chorale_split(tmp_path, "train")
    with pytest.raises(ChoraleDataError, match="unknown split"):
        load_chorale_split(tmp_path, "valid")


def test_prepare_chorales_command_writes_a_cache_fit_accepts_and_fails_in_one_line(tmp_path):
    from click.testing import CliRunner

    from groove_live.train.cli import main
    from groove_live.train.config import PRESETS
    from groove_live.train.data import load_dataset_info

    path = write(tmp_path, train=[chorale(64)], valid=[chorale(48)], test=[chorale(32)])
    out = tmp_path / "cache"
    result = CliRunner().invoke(main, ["prepare-chorales", "--data", str(path), "--out", str(out),
                                       "--no-transpose"])
    assert result.exit_code == 0, result.output
    assert "train" in result.output and "wrote" in result.output
    # The cache states the harmonizer's data shape, which fit checks against the preset's.
    spec, _ = load_dataset_info(out)
    assert spec.data_shape_mismatch(PRESETS["chorale_wgan_gp_tiny"].spec()) is None
    bad = CliRunner().invoke(main, ["prepare-chorales", "--data", str(tmp_path / "none.json"),
                                    "--out", str(out)])
    assert bad.exit_code == 2 and len(bad.output.strip().splitlines()) == 1
