"""MIDI <-> grid: a known GMD file against an independent reading, round trips, and hostile
files (bad timing values, huge delta times, SMPTE, silent intros, size limits), known answers."""
from pathlib import Path

import mido
import numpy as np
import pytest

from groove_live import midi_io
from groove_live.midi_io import (MidiReadError, ReadLimits, pattern_to_midi, read_pattern,
                                 read_performance, windows, write_pattern)
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


def _drum_file(path, notes, ticks_per_beat=480, tempo=None, meter=None, extra_tracks=()):
    """A type-1 file: `notes` are (tick, pitch, velocity); mido writes any header value given."""
    track = mido.MidiTrack()
    if tempo is not None:
        track.append(mido.MetaMessage("set_tempo", tempo=tempo))
    if meter is not None:
        track.append(mido.MetaMessage("time_signature", numerator=meter[0], denominator=meter[1]))
    now = 0
    for tick, pitch, velocity in notes:
        track.append(mido.Message("note_on", channel=9, note=pitch, velocity=velocity,
                                  time=tick - now))
        now = tick
    midi = mido.MidiFile(ticks_per_beat=ticks_per_beat)
    midi.tracks.append(track)
    midi.tracks.extend(extra_tracks)
    midi.save(path)
    return path


KICK, SNARE, HAT = 36, 38, 42


@pytest.mark.parametrize("kwargs, message", [
    (dict(ticks_per_beat=0), "0 ticks per beat"),
    (dict(meter=(0, 4)), r"time signature 0/4 is not usable"),
    (dict(tempo=0), "a tempo of 0 microseconds per beat"),
])
def test_impossible_timing_is_one_clear_error_not_a_zero_division(tmp_path, kwargs, message):
    path = _drum_file(tmp_path / "x.mid", [(0, KICK, 100), (480, SNARE, 100)], **kwargs)
    with pytest.raises(MidiReadError, match=message) as e:
        read_pattern(path, SPEC)
    assert str(e.value).startswith(f"{path}: ") and "\n" not in str(e.value)
    assert e.value.reason == "bad timing"


def test_a_huge_denominator_is_refused(tmp_path):
    # mido writes denominator 2**20 as its exponent byte, 20; the file means n/1048576.
    path = tmp_path / "x.mid"
    _drum_file(path, [(0, KICK, 100)], meter=(4, 4))
    data = bytearray(path.read_bytes())
    at = data.index(bytes([0xFF, 0x58, 4, 4, 2]))
    data[at + 4] = 20
    path.write_bytes(bytes(data))
    with pytest.raises(MidiReadError, match=r"time signature 4/1048576 is not usable"):
        read_performance(path, SPEC)


def test_huge_delta_times_are_refused_before_any_grid_is_allocated(tmp_path, monkeypatch):
    # ~100 bytes: one tick per beat, bars of 1/64, notes 2**28 - 1 ticks apart. Read naively
    # this asks numpy for a (687 billion steps, 9) grid: 10 * (2**28 - 1) ticks * 256 steps/tick.
    notes = [(i * 0x0FFFFFFF, KICK, 100) for i in range(1, 11)]
    path = _drum_file(tmp_path / "x.mid", notes, ticks_per_beat=1, meter=(1, 64))
    assert path.stat().st_size < 120
    allocated = []
    monkeypatch.setattr(midi_io.np, "zeros", lambda *a, **k: allocated.append(a))
    with pytest.raises(MidiReadError, match="a drum note in bar 42,949,672,800, over the "
                                            "2,000-bar limit") as e:
        read_performance(path, SPEC)
    assert e.value.reason == "too long" and allocated == []


def test_bar_limit_is_an_argument(tmp_path):
    path = _drum_file(tmp_path / "x.mid", [(0, KICK, 100), (3 * 1920, KICK, 100)])
    assert read_performance(path, SPEC, ReadLimits(max_bars=4)).steps == 3 * 16 + 1
    with pytest.raises(MidiReadError, match="a drum note in bar 3, over the 3-bar limit"):
        read_performance(path, SPEC, ReadLimits(max_bars=3))


def test_file_size_cap_is_checked_before_reading(tmp_path):
    size = ROCK_120.stat().st_size
    assert read_performance(ROCK_120, SPEC, ReadLimits(max_file_bytes=size)).n_notes == 182
    with pytest.raises(MidiReadError, match=f"{size:,} bytes, over the {size - 1:,}-byte limit"):
        read_performance(ROCK_120, SPEC, ReadLimits(max_file_bytes=size - 1))
    # the default: 4 MiB. A 24 MB file is refused on its size alone.
    big = tmp_path / "big.mid"
    with open(big, "wb") as f:
        f.truncate(24_000_000)  # sparse: costs no disk
    with pytest.raises(MidiReadError, match="24,000,000 bytes, over the 4,194,304-byte limit") as e:
        read_performance(big, SPEC)
    assert e.value.reason == "too large"


def test_a_device_that_never_ends_is_cut_at_the_cap():
    with pytest.raises(MidiReadError, match="over the 1,000-byte limit"):
        read_performance("/dev/zero", SPEC, ReadLimits(max_file_bytes=1000))


def test_message_cap_stops_a_note_flood_while_parsing(tmp_path):
    flood = _drum_file(tmp_path / "flood.mid", [(i * 240, KICK, 100) for i in range(5000)])
    assert read_performance(flood, SPEC, ReadLimits(max_messages=5001)).n_notes == 5000
    with pytest.raises(MidiReadError, match="more than 1,000 MIDI messages") as e:
        read_performance(flood, SPEC, ReadLimits(max_messages=1000))
    assert e.value.reason == "too many messages"
    # The cap counts every track: two tracks of 600 break a cap of 1,000 too.
    half = mido.MidiTrack(mido.Message("note_on", channel=9, note=HAT, velocity=50, time=1)
                          for _ in range(600))
    two = _drum_file(tmp_path / "two.mid", [(i, KICK, 90) for i in range(600)],
                     extra_tracks=[half])
    with pytest.raises(MidiReadError, match="more than 1,000 MIDI messages"):
        read_performance(two, SPEC, ReadLimits(max_messages=1000))


def test_leading_silence_is_skipped_unless_a_bar_is_asked_for(tmp_path):
    bar = 1920  # ticks of a 4/4 bar at 480 per beat
    groove = [(5 * bar + i * 240, (KICK, HAT, SNARE, HAT)[i % 4], 100) for i in range(40)]
    path = _drum_file(tmp_path / "intro.mid", groove)  # bars 0-4 silent, notes in bars 5-9
    pattern, bpm = read_pattern(path, SPEC)
    assert bpm == 120.0
    hits = pattern.hits[0]
    assert hits[0].tolist() == [1, 0, 0, 0, 0, 0, 0, 0, 0]  # the kick opens the window
    assert int(hits.sum()) == 32  # 4 bars of 8th notes
    np.testing.assert_array_equal(read_pattern(path, SPEC, bar=5)[0].hits, pattern.hits)
    moved, _ = read_pattern(path, SPEC, bar=3)  # as asked: two silent bars, then the groove
    assert not moved.hits[0, :32].any()
    np.testing.assert_array_equal(moved.hits[0, 32:], pattern.hits[0, :32])
    with pytest.raises(MidiReadError, match=r"bars 0 to 3 have no drum note \(the first is in"):
        read_pattern(path, SPEC, bar=0)
    with pytest.raises(MidiReadError, match=r"no bar 10 \(its bars are 0 to 9\)"):
        read_pattern(path, SPEC, bar=10)
    with pytest.raises(MidiReadError, match="no bar -1"):
        read_pattern(path, SPEC, bar=-1)


def test_a_note_just_before_the_first_bar_line_belongs_to_that_bar(tmp_path):
    # Played a little early: tick 1915 is step 16 (bar 1) pushed 5/120 of a step ahead.
    path = _drum_file(tmp_path / "x.mid", [(1915, KICK, 100), (1920 + 480, SNARE, 100)])
    pattern, _ = read_pattern(path, SPEC)
    assert pattern.hits[0, 0, 0] == 1 and pattern.offsets[0, 0, 0] == pytest.approx(-5 / 120)
    assert pattern.hits[0, 4, 1] == 1


def test_notes_outside_the_drum_map_are_a_clear_error(tmp_path):
    path = _drum_file(tmp_path / "piano.mid", [(0, 60, 100), (480, 64, 100), (960, 67, 100)])
    perf = read_performance(path, SPEC)  # prepare counts it as "no drum notes"
    assert (perf.n_notes, perf.n_unmapped, perf.steps) == (0, 3, 0)
    with pytest.raises(MidiReadError, match="none of its 3 notes is on a drum pitch") as e:
        read_pattern(path, SPEC)
    assert e.value.reason == "no drum notes"
    with pytest.raises(MidiReadError, match="no notes in this file"):
        read_pattern(_drum_file(tmp_path / "empty.mid", []), SPEC)


def _smpte(fps_code: int, ticks_per_frame: int) -> int:
    """The header's division field for SMPTE timing, as the signed 16-bit value mido keeps."""
    return -(fps_code << 8) + ticks_per_frame


def test_smpte_timing_is_converted_through_the_tempo(tmp_path):
    # 25 frames/s x 40 ticks/frame = 1000 ticks/s; at 120 bpm a beat is 500 ticks, a step 125.
    notes = [(0, KICK, 100), (125, HAT, 90), (500 + 10, SNARE, 110), (2000, KICK, 80)]
    smpte = _drum_file(tmp_path / "smpte.mid", notes, ticks_per_beat=_smpte(25, 40),
                       tempo=mido.bpm2tempo(120))
    perf = read_performance(smpte, SPEC)
    assert perf.bpm == pytest.approx(120) and perf.steps == 17
    assert sorted(zip(*np.nonzero(perf.hits))) == [(0, 0), (1, 2), (4, 1), (16, 0)]
    assert perf.offsets[4, 1] == pytest.approx(10 / 125)
    # the same notes with 500 ticks per beat read the same
    ppq = _drum_file(tmp_path / "ppq.mid", notes, ticks_per_beat=500, tempo=mido.bpm2tempo(120))
    same = read_performance(ppq, SPEC)
    for a, b in ((perf.hits, same.hits), (perf.velocities, same.velocities),
                 (perf.offsets, same.offsets)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    # no tempo: 120 bpm, as for any file; 30 frames/s x 80 ticks at 90 bpm: 1600 ticks a beat
    assert read_performance(_drum_file(tmp_path / "no_tempo.mid", notes,
                                       ticks_per_beat=_smpte(25, 40)), SPEC).steps == 17
    slow = _drum_file(tmp_path / "slow.mid", [(0, KICK, 100), (1600, KICK, 100)],
                      ticks_per_beat=_smpte(30, 80), tempo=mido.bpm2tempo(90))
    assert np.flatnonzero(read_performance(slow, SPEC).hits[:, 0]).tolist() == [0, 4]


def test_smpte_with_tempo_changes_or_bad_rates_is_refused(tmp_path):
    changes = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=400000, time=1000)])
    path = _drum_file(tmp_path / "x.mid", [(0, KICK, 100)], ticks_per_beat=_smpte(25, 40),
                      tempo=500000, extra_tracks=[changes])
    with pytest.raises(MidiReadError, match="SMPTE .absolute. timing with tempo changes") as e:
        read_performance(path, SPEC)
    assert e.value.reason == "unsupported"
    for division, rate in ((_smpte(23, 40), "23 frames/s"), (_smpte(25, 0), "0 ticks per frame")):
        path = _drum_file(tmp_path / "y.mid", [(0, KICK, 100)], ticks_per_beat=division)
        with pytest.raises(MidiReadError, match=rate):
            read_performance(path, SPEC)


def test_other_read_failures_name_the_file(tmp_path):
    with pytest.raises(MidiReadError, match="a folder, not a MIDI file"):
        read_performance(tmp_path, SPEC)
    data = ROCK_120.read_bytes()
    (tmp_path / "cut.mid").write_bytes(data[:len(data) // 2])
    with pytest.raises(MidiReadError, match=r"cut.mid: not a readable MIDI file \(track 1 is "
                                            r"cut off\)"):
        read_performance(tmp_path / "cut.mid", SPEC)


def test_every_fixture_file_reads_as_mido_reads_it():
    # The reader is our own (for the limits); mido is the reference for what a file holds.
    for path in sorted(GMD.rglob("*.mid")):
        midi = mido.MidiFile(path)
        perf = read_performance(path, SPEC)
        ons = [m for t in midi.tracks for m in t if m.type == "note_on" and m.velocity > 0]
        assert perf.n_notes + perf.n_unmapped == len(ons), path
        tempo = next(m.tempo for t in midi.tracks for m in t if m.type == "set_tempo")
        assert perf.bpm == mido.tempo2bpm(tempo)


def test_cli_turns_each_bad_file_into_one_line_and_exit_2(tmp_path, toy_model_path,
                                                           one_line_failure):
    from click.testing import CliRunner

    from groove_live.cli import main

    bad = _drum_file(tmp_path / "zero.mid", [(0, KICK, 100)], ticks_per_beat=0)
    result = CliRunner().invoke(main, ["interpolate", str(bad), str(ROCK_120), "--model",
                                       str(toy_model_path), "--out", str(tmp_path)])
    line = one_line_failure(result, "groove-live")
    assert result.exit_code == 2 and str(bad) in line and "0 ticks per beat" in line


def test_written_files_end_on_the_phrases_last_bar_line(tmp_path):
    """A DAW must see a clip of exactly the phrase's bars: 4 bars at 120 BPM are 8.0 s, even
    when the last note is early, late or missing, and no note-off runs past the end."""
    import mido

    from groove_live.midi_io import pattern_to_midi
    from groove_live.pattern import Patterns
    from groove_live.spec import DEFAULT_SPEC as spec

    for last_step, offset in [(spec.steps - 1, 0.45), (spec.steps - 1, -0.3), (10, 0.0), (None, 0)]:
        p = Patterns.empty(1, spec)
        if last_step is not None:
            p.hits[0, last_step, 0] = 1
            p.velocities[0, last_step, 0] = 0.8
            p.offsets[0, last_step, 0] = offset
        midi = pattern_to_midi(p, spec, bpm=120.0)
        path = tmp_path / "clip.mid"
        midi.save(path)
        again = mido.MidiFile(path)
        assert again.length == pytest.approx(8.0, abs=1e-6), (last_step, offset)
        end = sum(m.time for m in again.tracks[0])
        assert end == 4 * 4 * again.ticks_per_beat
