"""`groove-train prepare` on a GMD excerpt: counts, skips, cache reuse, clear errors."""
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from groove_live.midi_io import read_performance, windows
from groove_live.spec import DEFAULT_SPEC as SPEC
from groove_live.train.data import DataError, PrepareOptions, load_split, prepare

GMD = Path(__file__).parents[1] / "fixtures" / "gmd"


def _expected_windows(name: str) -> int:
    return len(windows(read_performance(GMD / name, SPEC), SPEC))


def test_prepare_counts_and_skips(tmp_path):
    s = prepare(GMD, tmp_path / "ds", progress=False)
    train = sum(_expected_windows(n) for n in (
        "drummer9/session1/18_rock_120_beat_4-4.mid", "drummer9/session1/22_rock_120_beat_4-4.mid",
        "drummer7/session3/119_rock_95_beat_4-4.mid"))
    assert s.counts == {"train": train, "validation": _expected_windows(
        "drummer7/session2/46_rock_135_beat_4-4.mid"), "test": _expected_windows(
        "drummer1/eval_session/4_soul-groove4_80_beat_4-4.mid")}
    assert s.files == {"train": 3, "validation": 1, "test": 1}
    assert s.skipped["meter 3-4 not selected"] == ["drummer1/session2/1_latin-chacarera_157_beat_3-4.mid"]
    assert s.skipped["shorter than 4 bars"] == ["drummer1/session1/10_jazz-funk_116_fill_4-4.mid"]
    p, bpm = load_split(tmp_path / "ds", "train")
    assert len(p) == train and p.hits.shape[1:] == (64, 9)
    assert set(np.unique(bpm)) == {95.0, 120.0} or np.allclose(sorted(set(np.round(bpm))), [95, 120])
    assert p.hits.reshape(len(p), -1).any(axis=1).all(), "empty windows are dropped"
    # velocities are stored exactly (midi_velocity / 127)
    np.testing.assert_allclose(p.velocities * 127, np.rint(p.velocities * 127), atol=1e-4)
    assert "3-4" in s.format() and "17261" in s.format()


def test_cache_is_reused_unless_forced_or_options_change(tmp_path):
    first = prepare(GMD, tmp_path / "ds", progress=False)
    assert not first.cached
    again = prepare(GMD, tmp_path / "ds", progress=False)
    assert again.cached and again.counts == first.counts
    forced = prepare(GMD, tmp_path / "ds", force=True, progress=False)
    assert not forced.cached
    beats_only = prepare(GMD, tmp_path / "ds", PrepareOptions(beat_types=("beat",)), progress=False)
    assert not beats_only.cached
    assert beats_only.skipped["fill not selected"] == ["drummer1/session1/10_jazz-funk_116_fill_4-4.mid"]


def test_other_meters_and_bar_counts_by_flag(tmp_path):
    s = prepare(GMD, tmp_path / "ds", PrepareOptions(meters=("4-4", "3-4"), bars=2), progress=False)
    assert s.files["validation"] == 2  # the 3/4 file now counts
    p, _ = load_split(tmp_path / "ds", "validation")
    assert p.hits.shape[1] == 32


def test_unreadable_and_empty_files_are_skipped_and_listed(tmp_path):
    data = tmp_path / "gmd"
    shutil.copytree(GMD, data)
    (data / "drummer9/session1/18_rock_120_beat_4-4.mid").write_bytes(b"MThd\x00\x00")
    s = prepare(data, tmp_path / "ds", progress=False)
    assert [f.split(" ")[0] for f in s.skipped["unreadable MIDI"]] == [
        "drummer9/session1/18_rock_120_beat_4-4.mid"]
    assert s.files["train"] == 2


def test_missing_index_or_folder_is_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        prepare(tmp_path / "nope", tmp_path / "ds", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no info.csv"):
        prepare(tmp_path / "empty", tmp_path / "ds", progress=False)
    r = subprocess.run([sys.executable, "-m", "groove_live.train.cli", "prepare", "--data",
                        str(tmp_path / "empty"), "--out", str(tmp_path / "ds")],
                       capture_output=True, text=True)
    assert r.returncode != 0
    assert r.stderr.strip().count("\n") == 0 and "no info.csv" in r.stderr
