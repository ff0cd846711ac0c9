"""`groove-live sample | interpolate | info` on the toy model; the runtime never imports torch."""
from __future__ import annotations

import re
from pathlib import Path

import mido
import numpy as np
import pretty_midi
import pytest
from click.testing import CliRunner

from groove_live.cli import main

GMD = Path(__file__).parent / "fixtures" / "gmd"
A_MID = GMD / "drummer9/session1/22_rock_120_beat_4-4.mid"
B_MID = GMD / "drummer7/session2/46_rock_135_beat_4-4.mid"
NAME = re.compile(r"^groovae_(sample|interpolate)_\d{8}_\d{6}-(\d{3})-of-(\d{3})\.mid$")


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])




def test_sample_writes_playable_drum_midi(toy_model_path, tmp_path):
    result = _invoke("sample", "-n", 4, "--temperature", 0.5, "--bpm", 100, "--seed", 1,
                     "--model", toy_model_path, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    files = sorted(tmp_path.glob("*.mid"))
    assert [Path(line).name for line in result.stdout.split()] == [f.name for f in files]
    assert len(files) == 4
    assert [NAME.match(f.name).group(2, 3) for f in files] == [
        ("001", "004"), ("002", "004"), ("003", "004"), ("004", "004")]

    velocities, off_grid, n_notes = set(), 0, 0
    for f in files:
        midi = mido.MidiFile(f)
        notes = [m for m in midi if m.type == "note_on" and m.velocity > 0]
        assert notes and all(m.channel == 9 for m in notes)  # MIDI channel 10
        tempo = next(m.tempo for m in midi if m.type == "set_tempo")
        assert round(mido.tempo2bpm(tempo)) == 100

        pm = pretty_midi.PrettyMIDI(str(f))
        assert len(pm.instruments) == 1 and pm.instruments[0].is_drum
        step_s = 60.0 / 100 / 4
        for note in pm.instruments[0].notes:
            velocities.add(note.velocity)
            steps = note.start / step_s
            off_grid += abs(steps - round(steps)) > 0.01
            n_notes += 1
    assert len(velocities) > 3
    assert off_grid > n_notes // 4  # micro-timing is written, not quantized away


def test_sample_is_reproducible_with_a_seed(toy_model_path, tmp_path):
    for out in ("a", "b"):
        assert _invoke("sample", "-n", 2, "--seed", 5, "--model", toy_model_path,
                       "--out", tmp_path / out).exit_code == 0
    a, b = (sorted((tmp_path / out).glob("*.mid")) for out in ("a", "b"))
    for fa, fb in zip(a, b):
        notes = [[(m.note, m.velocity, m.time) for m in mido.MidiFile(f) if m.type == "note_on"]
                 for f in (fa, fb)]
        assert notes[0] == notes[1]


def test_interpolate_writes_each_step(toy_model_path, tmp_path, fails):
    result = _invoke("interpolate", A_MID, B_MID, "--steps", 3, "--model", toy_model_path,
                     "--out", tmp_path, "--seed", 0)
    assert result.exit_code == 0, result.output
    files = sorted(tmp_path.glob("groovae_interpolate_*.mid"))
    assert len(files) == 3 and NAME.match(files[0].name)
    tempo = next(m.tempo for m in mido.MidiFile(files[0]) if m.type == "set_tempo")
    assert round(mido.tempo2bpm(tempo)) == 120  # the start file's tempo

    not_midi = tmp_path / "x.mid"
    not_midi.write_text("hello")
    assert "not a readable MIDI file" in fails(
        _invoke("interpolate", not_midi, B_MID, "--model", toy_model_path, "--out", tmp_path))


def test_png_needs_matplotlib_and_says_so(toy_model_path, tmp_path, monkeypatch, fails):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real(name, *a))
    line = fails(_invoke("sample", "-n", 1, "--png", "--model", toy_model_path,
                                     "--out", tmp_path))
    assert "matplotlib" in line and not list(tmp_path.glob("*.mid"))


def test_png_beside_each_file(toy_model_path, tmp_path):
    pytest.importorskip("matplotlib")
    assert _invoke("sample", "-n", 1, "--png", "--model", toy_model_path,
                   "--out", tmp_path).exit_code == 0
    png = list(tmp_path.glob("*.png"))
    assert len(png) == 1 and png[0].read_bytes()[:4] == b"\x89PNG"


def test_info_prints_the_spec(toy_model_path):
    result = _invoke("info", "--model", toy_model_path)
    assert result.exit_code == 0
    assert "groovae_tiny" in result.stdout and "z size 16" in result.stdout
    as_json = _invoke("info", "--model", toy_model_path, "--json")
    assert '"schema_version": 2' in as_json.stdout  # the schema 1 file, read as schema 2


def test_info_on_a_corrupt_or_foreign_file_is_one_line(tmp_path, fails):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(np.random.default_rng(0).bytes(300))
    assert "not a loadable ONNX model" in fails(_invoke("info", "--model", corrupt))
    assert "no such model file" in fails(
        _invoke("info", "--model", tmp_path / "absent.onnx"))


NO_TORCH = """
    import groove_live
    from groove_live.cli import main
    for argv in (["--help"], ["sample", "-n", "2", "--model", sys.argv[1], "--out", sys.argv[2]],
                 ["info", "--model", sys.argv[1]]):
        try:
            main(argv, prog_name="groove-live")
        except SystemExit as e:
            assert not e.code, (argv, e.code)
    from groove_live.engine import Engine
    engine = Engine.load(sys.argv[1])
    engine.interpolate(*[engine.sample(1, seed=s) for s in (1, 2)], 3)
"""


def test_runtime_never_imports_torch(toy_model_path, tmp_path, run_torch_free):
    result = run_torch_free(NO_TORCH, toy_model_path, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("torch-free")
    assert len(list(tmp_path.glob("*.mid"))) == 2


# --- atomic output files -----------------------------------------------------------------------
def _full_disk_on_call(n: int, real):
    """A writer(obj, path, ...) that, on its n-th call, writes a few bytes and fails as a full
    disk does; other calls write for real."""
    import errno
    import os

    calls = []

    def write(obj, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == n:
            with open(path, "wb") as f:
                f.write(b"\0" * 64)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(obj, path, *args, **kwargs)
    return write


def test_full_disk_leaves_no_partial_midi_and_names_the_file(toy_model_path, tmp_path,
                                                             monkeypatch, fails):
    monkeypatch.setattr(mido.MidiFile, "save", _full_disk_on_call(2, mido.MidiFile.save))
    line = fails(_invoke("sample", "-n", 3, "--seed", 0, "--model", toy_model_path,
                         "--out", tmp_path))
    files = sorted(p.name for p in tmp_path.iterdir())  # hidden temp files included
    assert len(files) == 1 and files[0].endswith("-001-of-003.mid")
    assert mido.MidiFile(tmp_path / files[0]).length > 0  # the one before is whole
    second = files[0].replace("-001-", "-002-")
    assert line == f"groove-live: error: {tmp_path / second}: cannot write (No space left on device)"


def test_a_failing_png_is_reported_under_its_own_name(toy_model_path, tmp_path, monkeypatch,
                                                      fails):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    monkeypatch.setattr(Figure, "savefig", _full_disk_on_call(1, Figure.savefig))
    line = fails(_invoke("sample", "-n", 2, "--png", "--seed", 0, "--model", toy_model_path,
                         "--out", tmp_path))
    [midi] = tmp_path.iterdir()  # no PNG, no temp file: only the whole MIDI file before it
    assert midi.suffix == ".mid" and mido.MidiFile(midi).length > 0
    assert line == (f"groove-live: error: {midi.with_suffix('.png')}: cannot write "
                    f"(No space left on device)")


def test_output_names_never_leave_the_folder(toy_model_path, tmp_path):
    from groove_live.engine import Engine
    from groove_live.offline import OfflineError, output_path, sample_files

    for name in ("../x.mid", "/abs.mid", "a/b.mid", "..", ".", "", "a\\b.mid", "a\0.mid"):
        with pytest.raises(OfflineError, match="not a plain file name"):
            output_path(tmp_path, name)
    assert output_path(tmp_path, "groovae_x.mid") == tmp_path / "groovae_x.mid"

    # A spec that skipped validation (built in code) is still stopped where files are named.
    engine = Engine.load(toy_model_path)
    engine.spec = engine.spec.replace(model_name="../../escaped")
    out_dir = tmp_path / "a" / "b"
    with pytest.raises(OfflineError, match="not a plain file name"):
        sample_files(engine, 1, out_dir, seed=0)
    assert not list(tmp_path.rglob("*.mid"))


# --- interpolate --bar -------------------------------------------------------------------------
def test_interpolate_bar_picks_the_window_of_each_file(toy_model_path, tmp_path, monkeypatch):
    from groove_live.engine import Engine
    from groove_live.midi_io import read_pattern

    seen = []
    real = Engine.interpolate

    def spy(self, a, b, *args, **kwargs):
        seen.append((a, b))
        return real(self, a, b, *args, **kwargs)

    monkeypatch.setattr(Engine, "interpolate", spy)
    for bar in (0, 2):
        result = _invoke("interpolate", A_MID, B_MID, "--steps", 2, "--bar", bar, "--seed", 0,
                         "--model", toy_model_path, "--out", tmp_path / str(bar))
        assert result.exit_code == 0, result.output
    spec = Engine.load(toy_model_path).spec
    for (a, b), bar in zip(seen, (0, 2)):
        np.testing.assert_array_equal(a.to_flat(), read_pattern(A_MID, spec, bar=bar)[0].to_flat())
        np.testing.assert_array_equal(b.to_flat(), read_pattern(B_MID, spec, bar=bar)[0].to_flat())
    assert not np.array_equal(seen[0][0].to_flat(), seen[1][0].to_flat())


def test_interpolate_bar_out_of_range_is_one_line(toy_model_path, tmp_path, fails):
    line = fails(_invoke("interpolate", A_MID, B_MID, "--bar", 100000, "--model", toy_model_path,
                         "--out", tmp_path))
    assert str(A_MID) in line and not list(tmp_path.iterdir())
    result = _invoke("interpolate", A_MID, B_MID, "--bar", -1, "--model", toy_model_path,
                     "--out", tmp_path)
    assert result.exit_code == 2 and "--bar" in result.stderr
