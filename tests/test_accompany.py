"""The chorale harmonizer after training: export (decoder only) against torch, the engine's
`accompany`, the offline `harmonize` (transposition, windows) and `groove-live accompany`."""
from __future__ import annotations

from pathlib import Path

import mido
import numpy as np
import pytest
from click.testing import CliRunner

from groove_live.accompany import harmonize, read_melody, soprano_shift
from groove_live.chorale import REST, VOICE_RANGES, ChoraleError, melody_roll
from groove_live.engine import Engine, EngineError, fold_into_ranges
from groove_live.offline_cli import accompany
from groove_live.pattern import Patterns
from groove_live.spec import ENCODER_KEY, Voice

EXAMPLE_MELODY = Path(__file__).resolve().parent.parent / "examples" / "melodies" / "twinkle.mid"
F_SHARP_MAJOR = (54, 56, 58, 59, 61, 63, 65, 66)  # F#3 up to F#4: below the soprano range


@pytest.fixture(scope="module")
def engine(toy_chorale_model_path) -> Engine:
    return Engine.load(toy_chorale_model_path)


def _scale_melody(pitches, steps_each: int = 4) -> np.ndarray:
    return np.repeat(np.asarray(pitches, np.int64), steps_each)


def _write_midi(path: Path, notes, ticks_per_beat: int = 480, meter=(4, 4)) -> Path:
    """notes: (start_beat, end_beat, pitch, channel); written as one track in time order."""
    events = sorted([(round(s * ticks_per_beat), 1, p, c) for s, _, p, c in notes]
                    + [(round(e * ticks_per_beat), 0, p, c) for _, e, p, c in notes])
    midi = mido.MidiFile(type=0, ticks_per_beat=ticks_per_beat)
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("time_signature", numerator=meter[0], denominator=meter[1]))
    now = 0
    for tick, on, pitch, channel in events:
        track.append(mido.Message("note_on" if on else "note_off", note=pitch, channel=channel,
                                  velocity=90 if on else 0, time=tick - now))
        now = tick
    midi.tracks.append(track)
    midi.save(str(path))
    return path


def _invoke(*args):
    return CliRunner().invoke(accompany, [str(a) for a in args])


# --- export ----------------------------------------------------------------------------------
def test_export_writes_a_decoder_only_and_matches_torch(toy_chorale_export):
    import torch

    result = toy_chorale_export.result
    assert result.encoder_path is None
    assert not list(result.decoder_path.parent.glob("*.encoder.onnx"))
    assert result.checks["rolls_max_abs"] <= 1e-4
    engine = Engine.load(result.decoder_path)
    assert not engine.has_encoder and ENCODER_KEY not in engine.metadata
    # A melody and noise of our own, not the self-check's: the two must still agree.
    rng = np.random.default_rng(7)
    melody = melody_roll(np.stack([_scale_melody((60, 62, 64, 65, 67, 69, 71, 72)),
                                   np.full(32, 81)]))[..., 0]
    z = engine.latents(2, rng)
    got = engine.generate_rolls(z, melody)
    with torch.no_grad():
        want = toy_chorale_export.model(torch.from_numpy(z), torch.from_numpy(melody)).numpy()
    assert got.shape == (2, 32, 128, 3)
    assert np.abs(got - want).max() <= 1e-4


# --- engine ----------------------------------------------------------------------------------
def test_accompany_gives_each_voice_in_its_range_and_follows_the_seed(engine):
    assert [v.name for v in engine.spec.voices] == ["alto", "tenor", "bass"]
    melody = np.stack([_scale_melody((60, 62, 64, 65, 67, 69, 71, 72)),
                       _scale_melody((81, 79, 77, 76, 74, 72, 71, 72)), np.full(32, 67)])
    melody[2, 10:14] = REST
    voices = engine.accompany(melody, seed=3)
    assert voices.shape == (3, 32, 3) and voices.dtype.kind == "i"
    for i, voice in enumerate(engine.spec.voices):
        sounding = voices[..., i][voices[..., i] != REST]
        assert sounding.size and voice.low_pitch <= sounding.min() \
            and sounding.max() <= voice.high_pitch
    assert np.array_equal(voices, engine.accompany(melody, seed=3))
    assert not np.array_equal(voices, engine.accompany(melody, seed=4))


def test_accompany_refuses_wrong_shapes_and_melodies_in_one_line(engine):
    for bad in (np.full(32, 67), np.full((1, 31), 67), np.zeros((0, 32), np.int64)):
        with pytest.raises(EngineError, match=r"\(N, 32\)"):
            engine.accompany(bad)
    with pytest.raises(ChoraleError, match="soprano range"):
        engine.accompany(np.full((1, 32), 90))
    with pytest.raises(ChoraleError, match="melody 1: .*silent"):
        engine.accompany(np.stack([np.full(32, 67), np.full(32, REST)]))


def test_drum_calls_refuse_a_harmonizer_and_a_drum_model_refuses_accompany(engine,
                                                                           toy_model_path):
    empty = Patterns(*(np.zeros((1, 32, 9), np.float32) for _ in range(3)))
    for call in (lambda: engine.sample(1), lambda: engine.decode(np.zeros(4)),
                 lambda: engine.encode(empty), lambda: engine.transform(empty),
                 lambda: engine.noise(1, np.random.default_rng(0))):
        with pytest.raises(EngineError) as e:
            call()
        assert "\n" not in str(e.value) and "harmonizer" in str(e.value)
    with pytest.raises(EngineError, match="not a harmonizer"):
        Engine.load(toy_model_path).accompany(np.full((1, 32), 67))


def test_describe_lists_voices_channels_and_ranges(engine):
    text = engine.describe()
    assert "alto ch 2 52-74, tenor ch 3 46-69, bass ch 4 36-66" in text
    assert "no encoder" in text


def test_fold_into_ranges_moves_by_octaves_and_keeps_rests():
    voices = (Voice("a", 1, 52, 74), Voice("b", 2, 60, 64))  # b narrower than an octave
    got = fold_into_ranges(np.array([[40, 66], [80, 58], [REST, REST], [74, 61]]), voices)
    assert got.tolist() == [[52, 64], [68, 60], [REST, REST], [74, 61]]


# --- harmonize: transposition and windows ------------------------------------------------------
def test_soprano_shift_prefers_octaves_then_the_smallest_move():
    low, high = VOICE_RANGES["soprano"]  # 60..81
    assert soprano_shift(62, 70) == 0
    assert soprano_shift(54, 66) == 12  # F#3..F#4 up an octave
    assert soprano_shift(84, 96) == -24
    assert soprano_shift(55, 75) == 5  # 20 semitones wide: no octave move fits
    with pytest.raises(ChoraleError, match="wider than the soprano range"):
        soprano_shift(50, 50 + high - low + 1)


def test_a_melody_in_f_sharp_comes_back_in_f_sharp_with_voices_in_range(engine):
    melody = _scale_melody(F_SHARP_MAJOR)  # 32 steps, below the soprano range
    out = harmonize(engine, melody, seed=5)
    assert out.shape == (32, 4)
    assert np.array_equal(out[:, 0], melody)  # the user's melody, untransposed
    # The voices are the model's for the melody an octave up, moved back down by that octave
    # and into each voice's range: the same pitch classes, so the same key.
    raw = engine.accompany((melody + 12)[None], seed=5)[0]
    want = fold_into_ranges(np.where(raw != REST, raw - 12, REST), engine.spec.voices)
    assert np.array_equal(out[:, 1:], want)
    assert np.array_equal(out[:, 1:] % 12, np.where(raw != REST, raw % 12, REST % 12))
    for i, voice in enumerate(engine.spec.voices, start=1):
        sounding = out[:, i][out[:, i] != REST]
        assert voice.low_pitch <= sounding.min() and sounding.max() <= voice.high_pitch


def test_a_70_step_melody_is_cut_into_windows_padded_and_cut_back(engine):
    melody = np.full(70, REST, np.int64)
    melody[:32] = _scale_melody((60, 62, 64, 65, 67, 69, 71, 72))
    melody[64:70] = 67  # the third window: 6 steps of melody, then padding
    out = harmonize(engine, melody, seed=9)
    assert out.shape == (70, 4)
    assert np.array_equal(out[:, 0], melody)
    assert (out[32:64, 1:] == REST).all()  # a silent window is not asked of the model
    last = np.full(32, REST, np.int64)
    last[:6] = 67
    want = engine.accompany(np.stack([melody[:32], last]), seed=9)  # one batch, one seed
    assert np.array_equal(out[:32, 1:], want[0])
    assert np.array_equal(out[64:, 1:], want[1][:6])


# --- groove-live accompany ---------------------------------------------------------------------
def test_accompany_writes_four_tracks_on_their_channels(toy_chorale_model_path, tmp_path):
    result = _invoke(EXAMPLE_MELODY, "--out", tmp_path / "out", "--seed", 1, "--model",
                     toy_chorale_model_path)
    assert result.exit_code == 0, result.output
    path = Path(result.stdout.strip())
    assert path == tmp_path / "out" / "twinkle.accompany.mid"
    midi = mido.MidiFile(path)
    assert [t.name for t in midi.tracks] == ["melody", "alto", "tenor", "bass"]
    spec = Engine.load(toy_chorale_model_path).spec
    given = read_melody(EXAMPLE_MELODY)
    for track, channel, voice in zip(midi.tracks, (0, 1, 2, 3), (None, *spec.voices)):
        ons = [m for m in track if m.type == "note_on" and m.velocity > 0]
        assert ons and {m.channel for m in ons} == {channel}
        if voice is None:  # the melody as read: every note, repeated ones kept apart
            assert [m.note for m in ons] == [n.pitch for n in given.notes]
        else:
            assert all(voice.low_pitch <= m.note <= voice.high_pitch for m in ons)
    again = _invoke(EXAMPLE_MELODY, "--out", tmp_path / "again", "--seed", 1, "--model",
                    toy_chorale_model_path)
    assert (tmp_path / "again" / path.name).read_bytes() == path.read_bytes()


def test_twinkle_is_two_four_bar_phrases_in_c_major():
    melody = read_melody(EXAMPLE_MELODY)
    assert melody.steps == 8 * 16 and melody.bpm == pytest.approx(100)
    assert len(melody.notes) == 28
    assert {n.pitch % 12 for n in melody.notes} <= {0, 2, 4, 5, 7, 9, 11}
    assert melody.notes[0].pitch % 12 == 0 and melody.notes[13].pitch % 12 == 0


@pytest.mark.parametrize("notes, expect", [
    # a held note under a moving one: both sound in bar 2, beat 3
    ([(0, 4, 72, 0), (4, 8, 74, 0), (6, 7, 79, 3)], "bar 2, beat 3"),
    ([], "no notes"),
    ([(0, 1, 50, 0), (1, 2, 80, 0)], "wider than the soprano range"),
])
def test_bad_melodies_exit_2_with_one_line_and_write_nothing(toy_chorale_model_path, tmp_path,
                                                             fails, notes, expect):
    midi_in = _write_midi(tmp_path / "in.mid", notes)
    out = tmp_path / "out"
    line = fails(_invoke(midi_in, "--out", out, "--model", toy_chorale_model_path))
    assert expect in line
    assert not out.exists() or not list(out.iterdir())


def test_legato_overlap_under_half_a_sixteenth_is_one_voice(tmp_path):
    # 0.1 beat = 0.4 of a 16th: both ends round to the same grid line.
    midi_in = _write_midi(tmp_path / "in.mid", [(0, 1.1, 72, 0), (1, 2, 74, 5)])
    melody = read_melody(midi_in)
    assert [(n.start, n.end, n.pitch) for n in melody.notes] == [(0, 4, 72), (4, 8, 74)]


def test_an_install_without_the_harmonizer_says_so(tmp_path, fails, monkeypatch):
    import groove_live.bundled as bundled

    monkeypatch.setattr(bundled, "MODELS_DIR", tmp_path / "slim_install_models")
    (tmp_path / "slim_install_models").mkdir()
    line = fails(_invoke(EXAMPLE_MELODY, "--out", tmp_path / "out"))
    assert "no harmonizer is bundled" in line and "--model" in line
    assert not (tmp_path / "out").exists()


def test_a_drum_model_is_refused_in_one_line(toy_model_path, tmp_path, fails):
    line = fails(_invoke(EXAMPLE_MELODY, "--out", tmp_path / "out", "--model", toy_model_path))
    assert "not a harmonizer" in line
    assert not (tmp_path / "out").exists()


def test_a_meter_other_than_4_4_is_refused(toy_chorale_model_path, tmp_path, fails):
    midi_in = _write_midi(tmp_path / "in.mid", [(0, 1, 72, 0)], meter=(3, 4))
    assert "4/4" in fails(_invoke(midi_in, "--out", tmp_path / "out", "--model",
                                  toy_chorale_model_path))


def test_accompany_runs_without_torch(toy_chorale_model_path, tmp_path, run_torch_free):
    done = run_torch_free("""
        import sys
        from groove_live.accompany import accompany_file
        from groove_live.engine import Engine
        print(accompany_file(Engine.load(sys.argv[1]), sys.argv[2], sys.argv[3], seed=0))
    """, toy_chorale_model_path, EXAMPLE_MELODY, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "torch-free"
    assert (tmp_path / "twinkle.accompany.mid").is_file()


C_MAJOR = {0, 2, 4, 5, 7, 9, 11}


@pytest.mark.parametrize("seed", [0, 1])
def test_the_bundled_harmonizer_sets_twinkle_mostly_in_its_key(tmp_path, seed):
    """No --model: the bundled chorale_harmonizer. Twinkle is in C major; its lower voices
    land in the scale most of the time (random notes: ~7/12), in their ranges."""
    result = _invoke(EXAMPLE_MELODY, "--out", tmp_path, "--seed", seed)
    assert result.exit_code == 0, result.output
    midi = mido.MidiFile(result.output.strip().splitlines()[-1])
    lower = [m.note for t in midi.tracks[1:] for m in t if m.type == "note_on" and m.velocity]
    assert sum(n % 12 in C_MAJOR for n in lower) / len(lower) >= 0.75
    for track in midi.tracks[1:]:  # twinkle sits in the soprano range: nothing transposed
        low, high = VOICE_RANGES[track.name]
        notes = [m.note for m in track if m.type == "note_on" and m.velocity]
        assert len(notes) >= 8, track.name  # every voice sings through the tune, not a note or two
        assert low <= min(notes) and max(notes) <= high, track.name
