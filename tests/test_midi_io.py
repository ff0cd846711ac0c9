"""MIDI <-> grid: a known GMD file against an independent pretty_midi reading, and round trips."""
from pathlib import Path

import mido
import numpy as np
import pytest

from groove_live.midi_io import (MidiReadError, pattern_to_midi, read_pattern, read_performance,
                                 windows, write_pattern)
from groove_live.pattern import Patterns
from groove_live.spec import DEFAULT_SPEC as SPEC

GMD = Path(__file__).parent / "fixtures" / "gmd"
ROCK_120 = GMD / "drummer9/session1/18_rock_120_beat_4-4.mid"


def test_known_file_matches_an_independent_reading_in_seconds():
    # mido's own playback iteration converts ticks to seconds through the tempo map; the grid
    # code works in ticks. Both must agree on every cell.
    perf = read_performance(ROCK_120, SPEC)
    step_s = 60.0 / 120.0 / 4
    table = SPEC.pitch_to_class()
    expected: dict[tuple[int, int], tuple[int, float]] = {}
    t_s = 0.0
    n_notes = 0
    for msg in mido.MidiFile(ROCK_120):
        t_s += msg.time
        if msg.type != "note_on" or msg.velocity == 0:
            continue
        n_notes += 1
        pos = round(t_s / step_s, 6)  # summed float deltas: 60.4999999 is the tick at 60.5
        step = int(np.floor(pos + 0.5))
        key = (step, table[msg.note])
        if key not in expected or expected[key][0] < msg.velocity:
            expected[key] = (msg.velocity, pos - step)
    assert perf.bpm == pytest.approx(120.0, abs=1e-3)
    assert perf.time_signature == (4, 4)
    assert perf.n_notes == n_notes == 182
    assert int(perf.hits.sum()) == len(expected)
    for (step, cls), (velocity, offset) in expected.items():
        assert perf.hits[step, cls] == 1
        assert perf.velocities[step, cls] == pytest.approx(velocity / 127)
        assert perf.offsets[step, cls] == pytest.approx(offset, abs=1e-4)
    assert np.all(perf.offsets >= -0.5) and np.all(perf.offsets < 0.5)


def test_windows_hop_one_bar_and_cover_the_file():
    perf = read_performance(ROCK_120, SPEC)
    n_bars = int(np.ceil(perf.steps / 16))
    w = windows(perf, SPEC, drop_empty=False)
    assert len(w) == n_bars - 3
    assert w.hits.shape[1:] == (64, 9)
    # window 1 is window 0 moved by one bar
    np.testing.assert_array_equal(w.hits[1, :48], w.hits[0, 16:])


def test_loudest_note_wins_a_cell(tmp_path):
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(100)))
    for velocity, tick in ((40, 0), (100, 10), (70, 20)):  # all within step 0 (120 ticks/step)
        track.append(mido.Message("note_on", channel=9, note=38, velocity=velocity,
                                  time=tick - sum(m.time for m in track)))
    midi = mido.MidiFile(ticks_per_beat=480)
    midi.tracks.append(track)
    midi.save(tmp_path / "x.mid")
    perf = read_performance(tmp_path / "x.mid", SPEC)
    assert perf.hits[0, 1] == 1 and perf.hits.sum() == 1
    assert perf.velocities[0, 1] == pytest.approx(100 / 127)
    assert perf.offsets[0, 1] == pytest.approx(10 / 120)


def test_round_trip_midi_tensor_midi_tensor_is_stable(tmp_path):
    perf = read_performance(ROCK_120, SPEC)
    first = windows(perf, SPEC)[2]  # a window that does not start the file
    path = write_pattern(tmp_path / "a.mid", first, SPEC, bpm=perf.bpm)
    second, bpm = read_pattern(path, SPEC)
    assert bpm == pytest.approx(perf.bpm, abs=1e-3)
    np.testing.assert_array_equal(second.hits, first.hits)
    np.testing.assert_allclose(second.velocities, first.velocities, atol=1e-6)
    # ticks are 1/120 of a step when written: offsets survive within half a tick, except an
    # early note on step 0, which a file cannot place before its start (clamped to 0).
    expected = first.offsets.copy()
    expected[:, 0] = np.maximum(expected[:, 0], 0.0)
    assert (first.offsets[:, 0] < 0).any(), "this window should exercise the clamp"
    np.testing.assert_allclose(second.offsets, expected, atol=0.5 / 120 + 1e-6)
    third, _ = read_pattern(write_pattern(tmp_path / "b.mid", second, SPEC, bpm=bpm), SPEC)
    np.testing.assert_array_equal(third.to_flat(), second.to_flat())


def test_written_file_is_gm_drums_on_channel_10(tmp_path):
    rng = np.random.default_rng(0)
    hits = (rng.random((64, 9)) < 0.2).astype(np.float32)
    p = Patterns(hits, hits * rng.uniform(0.2, 1, hits.shape), hits * rng.uniform(-0.4, 0.4, hits.shape))
    midi = pattern_to_midi(p, SPEC, bpm=97)
    ons = [m for m in midi.tracks[0] if m.type == "note_on" and m.velocity > 0]
    assert len(ons) == int(hits.sum())
    assert {m.channel for m in ons} == {9}
    assert {m.note for m in ons} <= set(SPEC.out_pitches)
    tempos = [m for m in midi.tracks[0] if m.type == "set_tempo"]
    assert mido.tempo2bpm(tempos[0].tempo) == pytest.approx(97, abs=1e-3)


@pytest.mark.parametrize("content", [b"", b"MThd garbage", b"\x00" * 100])
def test_corrupt_midi_is_one_clear_error(tmp_path, content):
    bad = tmp_path / "bad.mid"
    bad.write_bytes(content)
    with pytest.raises(MidiReadError, match="not a readable MIDI file"):
        read_performance(bad, SPEC)
    with pytest.raises(MidiReadError, match="no such file"):
        read_performance(tmp_path / "missing.mid", SPEC)


def test_patterns_index_like_a_sequence():
    rng = np.random.default_rng(0)
    hits = (rng.random((3, 64, 9)) < 0.2).astype(np.float32)
    batch = Patterns(hits, hits * 0.5, hits * 0.1)
    assert np.array_equal(batch[-1].hits[0], hits[2]) and np.array_equal(batch[0].hits[0], hits[0])
    assert len(batch[1:]) == 2
    for bad in (3, -4):
        with pytest.raises(IndexError):
            batch[bad]
    # Iteration ends (it once ran on forever, an empty batch per step, until memory ran out).
    items = list(batch)
    assert [len(p) for p in items] == [1, 1, 1]
    assert np.array_equal(np.concatenate([p.hits for p in items]), hits)


def test_a_pattern_in_another_meter_is_refused_not_squeezed():
    three_four = Path(__file__).parent / "fixtures/gmd/drummer1/session2/1_latin-chacarera_157_beat_3-4.mid"
    assert read_performance(three_four, SPEC).time_signature == (3, 4)  # prepare --meter 3-4 reads it
    with pytest.raises(MidiReadError, match="in 3/4, but this model plays bars of 4 beats"):
        read_pattern(three_four, SPEC)
