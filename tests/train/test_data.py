"""`groove-train prepare` on a GMD excerpt: counts, skips, cache reuse, clear errors."""
import shutil
import subprocess
import sys
from pathlib import Path

import mido
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
    assert [f.split(" ")[0] for f in s.skipped["unreadable MIDI: corrupt"]] == [
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


def _midi(path: Path, ticks_per_beat=480, meter=(4, 4), tempo=500000, notes=((0, 36),),
          extra_tracks=()) -> None:
    track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=tempo),
                            mido.MetaMessage("time_signature", numerator=meter[0],
                                             denominator=meter[1])])
    now = 0
    for tick, pitch in notes:
        track.append(mido.Message("note_on", channel=9, note=pitch, velocity=100, time=tick - now))
        now = tick
    midi = mido.MidiFile(ticks_per_beat=ticks_per_beat)
    midi.tracks.extend([track, *extra_tracks])
    path.parent.mkdir(parents=True, exist_ok=True)
    midi.save(path)


def test_hostile_files_are_skipped_and_counted_by_reason_never_aborting(tmp_path):
    data = tmp_path / "gmd"
    shutil.copytree(GMD, data)
    bad = data / "bad"
    _midi(bad / "zero_tpb.mid", ticks_per_beat=0)
    _midi(bad / "zero_meter.mid", meter=(0, 4))
    _midi(bad / "zero_tempo.mid", tempo=0)
    _midi(bad / "huge_deltas.mid", ticks_per_beat=1, meter=(1, 64),
          notes=[(i * 0x0FFFFFFF, 36) for i in range(1, 11)])
    _midi(bad / "piano.mid", notes=[(0, 60), (480, 64)])
    _midi(bad / "smpte_tempo_changes.mid", ticks_per_beat=-(25 << 8) + 40,
          extra_tracks=[mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=400000, time=9)])])
    (bad / "garbage.mid").write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x01\xe0MTrk\xff")
    with open(bad / "huge.mid", "wb") as f:
        f.truncate(24_000_000)  # sparse: 24 MB that cost no disk
    names = sorted(p.name for p in bad.iterdir()) + ["missing.mid"]
    with open(data / "info.csv", "a") as f:
        for name in names:
            f.write(f"d,s,i,rock,120,beat,4-4,bad/{name},x.wav,1.0,train\n")

    s = prepare(data, tmp_path / "ds", progress=False)
    clean = prepare(GMD, tmp_path / "clean", progress=False)
    assert s.counts == clean.counts and s.files == clean.files  # the good files all made it
    by_reason = {reason: sorted(f.split(" ")[0].removeprefix("bad/") for f in files)
                 for reason, files in s.skipped.items() if "bad/" in files[0]}
    assert by_reason == {
        "unreadable MIDI: bad timing": ["zero_meter.mid", "zero_tempo.mid", "zero_tpb.mid"],
        "unreadable MIDI: too long": ["huge_deltas.mid"],
        "unreadable MIDI: too large": ["huge.mid"],
        "unreadable MIDI: corrupt": ["garbage.mid"],
        "unreadable MIDI: unsupported": ["smpte_tempo_changes.mid"],
        "unreadable MIDI: missing": ["missing.mid"],
        "no drum notes": ["piano.mid"]}
    # each entry says why, and the summary prints the count per reason
    assert any("0 ticks per beat" in f for f in s.skipped["unreadable MIDI: bad timing"])
    text = s.format()
    assert "unreadable MIDI: bad timing: 3 (" in text and "unreadable MIDI: too large: 1 (" in text
    assert f"skipped files: {len(names) + 2}" in text  # + the 3/4 file and the short fill

    r = subprocess.run([sys.executable, "-m", "groove_live.train.cli", "prepare", "--data",
                        str(data), "--out", str(tmp_path / "ds_cli")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "unreadable MIDI: corrupt: 1 (bad/garbage.mid" in r.stdout
