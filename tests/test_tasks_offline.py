"""`groove-live humanize | drumify | infill` over whole MIDI files, on the committed toy task
models: lengths, tempo, timeline, the notes each task must keep, and one-line refusals."""
from __future__ import annotations

from pathlib import Path

import mido
import numpy as np
import pytest
from click.testing import CliRunner

from groove_live.cli import main
from groove_live.engine import Engine

TPB = 480
TICKS_PER_STEP = TPB // 4  # 16 steps a 4/4 bar
BAR = 16 * TICKS_PER_STEP
KICK, SNARE, CLOSED_HAT, OPEN_HAT, RIDE = 36, 38, 42, 46, 51
HATS = (CLOSED_HAT, OPEN_HAT)


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])




def _write(path: Path, notes, bpm: float = 120.0, meter=(4, 4), end_tick: int | None = None,
           tpb: int = TPB) -> Path:
    """A type-0 file of (tick, pitch, velocity[, channel]) note-ons, each 30 ticks long."""
    events = []
    for note in notes:
        tick, pitch, velocity, channel = (*note, 9) if len(note) == 3 else note
        events.append((tick, 1, pitch, velocity, channel))
        events.append((tick + 30, 0, pitch, 0, channel))
    events.sort()
    track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm), time=0),
                            mido.MetaMessage("time_signature", numerator=meter[0],
                                             denominator=meter[1], time=0)])
    now = 0
    for tick, on, pitch, velocity, channel in events:
        track.append(mido.Message("note_on" if on else "note_off", note=pitch,
                                  velocity=velocity, channel=channel, time=tick - now))
        now = tick
    last = now if end_tick is None else max(now, end_tick)
    track.append(mido.MetaMessage("end_of_track", time=last - now))
    midi = mido.MidiFile(type=0, ticks_per_beat=tpb)
    midi.tracks.append(track)
    midi.save(path)
    return path


def _notes(path: Path) -> list[tuple[int, int, int]]:
    """(tick, pitch, velocity) of every sounding note-on, in order."""
    midi = mido.MidiFile(path)
    out, now = [], 0
    for message in midi.tracks[0]:
        now += message.time
        if message.type == "note_on" and message.velocity > 0:
            out.append((now, message.note, message.velocity))
    return sorted(out)


def _length_ticks(path: Path) -> int:
    return sum(m.time for m in mido.MidiFile(path).tracks[0])


def _bpm(path: Path) -> float:
    return mido.tempo2bpm(next(m.tempo for m in mido.MidiFile(path) if m.type == "set_tempo"))


def _step(tick: int) -> int:
    return (tick + TICKS_PER_STEP // 2) // TICKS_PER_STEP


def _played_groove(bars: int, start_bar: int = 0) -> list[tuple[int, int, int]]:
    """A played rock beat: kick and snare on the beats, hats on the eighths, each note off the
    grid by a few ticks and with its own accent."""
    rng = np.random.default_rng(7)
    notes = []
    for bar in range(start_bar, bars):
        for eighth in range(8):
            base = bar * BAR + eighth * 2 * TICKS_PER_STEP
            jitter = lambda: int(rng.integers(-40, 41))  # noqa: E731
            notes.append((max(0, base + jitter()), CLOSED_HAT, int(rng.integers(40, 100))))
            if eighth in (0, 4):
                notes.append((max(0, base + jitter()), KICK, int(rng.integers(90, 127))))
            if eighth in (2, 6):
                notes.append((base + jitter(), SNARE, int(rng.integers(80, 127))))
    return notes


# --- humanize ------------------------------------------------------------------------------
def test_five_bars_give_five_bars_at_the_input_tempo_in_one_batch(toy_task_model_path,
                                                                  tmp_path, monkeypatch):
    calls = []
    real = Engine.transform

    def spy(self, patterns, *args, **kwargs):
        calls.append(len(patterns))
        return real(self, patterns, *args, **kwargs)

    monkeypatch.setattr(Engine, "transform", spy)
    src = _write(tmp_path / "beat.mid", _played_groove(5), bpm=97)
    result = _invoke("humanize", src, "--out", tmp_path / "out", "--seed", 3,
                     "--model", toy_task_model_path("humanize"))
    assert result.exit_code == 0, result.output
    out = tmp_path / "out" / "beat.humanize.mid"
    assert result.stdout.strip() == str(out)
    assert round(_bpm(out), 3) == 97.0
    assert _length_ticks(out) == 5 * BAR  # 5 bars, not the 6 of three 2-bar phrases
    meter = next(m for m in mido.MidiFile(out) if m.type == "time_signature")
    assert (meter.numerator, meter.denominator) == (4, 4)
    # Bars 1-2, 3-4 and 5 (padded) in one batch; a call before it is the engine's warm-up.
    assert calls[-1] == 3 and calls.count(3) == 1
    # The padded last phrase was transformed, not dropped: bar 5 has every note of the input.
    last = {(_step(t), p) for t, p, _ in _notes(out) if t >= 4 * BAR - TICKS_PER_STEP // 2}
    assert last == {(_step(t), p) for t, p, _ in _played_groove(5) if t >= 4 * BAR - 60}


def test_humanize_keeps_every_note_and_changes_the_feel(toy_task_model_path, tmp_path):
    notes = _played_groove(4)
    src = _write(tmp_path / "beat.mid", notes)
    result = _invoke("humanize", src, "--out", tmp_path, "--seed", 1, "--temperature", 0.5,
                     "--model", toy_task_model_path("humanize"))
    assert result.exit_code == 0, result.output
    out = _notes(tmp_path / "beat.humanize.mid")
    assert sorted((_step(t), p) for t, p, _ in out) == sorted((_step(t), p) for t, p, _ in notes)
    assert [v for _, _, v in out] != [v for _, _, v in sorted(notes)]  # the model's velocities


def test_humanize_amount_zero_gives_the_input_back(toy_task_model_path, tmp_path):
    notes = _played_groove(3)
    src = _write(tmp_path / "beat.mid", notes, bpm=97)
    result = _invoke("humanize", src, "--out", tmp_path / "out", "--amount", 0, "--seed", 2,
                     "--model", toy_task_model_path("humanize"))
    assert result.exit_code == 0, result.output
    assert _notes(tmp_path / "out" / "beat.humanize.mid") == sorted(notes)


def test_humanize_amount_scales_the_added_groove(toy_task_model_path, tmp_path):
    """Quantized input at velocity 80: amount 0.5 lands halfway between it and amount 1."""
    notes = [(bar * BAR + s * TICKS_PER_STEP, pitch, 80) for bar in range(2)
             for s, pitch in ((0, KICK), (4, SNARE), (8, KICK), (12, SNARE))]
    src = _write(tmp_path / "q.mid", notes)
    found = {}
    for amount in (0.5, 1):
        out = tmp_path / str(amount)
        assert _invoke("humanize", src, "--out", out, "--amount", amount, "--seed", 4,
                       "--model", toy_task_model_path("humanize")).exit_code == 0
        found[amount] = np.array(_notes(out / "q.humanize.mid"), float)
    half, full = found[0.5], found[1]
    base = np.array(sorted(notes), float)
    np.testing.assert_allclose(half[:, 2], (base[:, 2] + full[:, 2]) / 2, atol=1)
    np.testing.assert_allclose(half[:, 0], (base[:, 0] + full[:, 0]) / 2, atol=1)
    assert np.any(full[:, 0] != base[:, 0])  # the model did move some notes


def _swung_groove(bars: int, late_ticks: int, velocity: int) -> list[tuple[int, int, int]]:
    """A take with one habit: every snare `late_ticks` behind the beat, everything at one
    velocity (a reference for --like)."""
    return [(bar * BAR + s * TICKS_PER_STEP + (late_ticks if pitch == SNARE else 0), pitch,
             velocity)
            for bar in range(bars) for s, pitch in ((0, KICK), (4, SNARE), (8, KICK),
                                                    (12, SNARE), (2, CLOSED_HAT),
                                                    (6, CLOSED_HAT), (10, CLOSED_HAT))]


def test_humanize_like_plays_the_feel_of_the_reference(toy_task_model_path, tmp_path):
    """--like: the reference's mean latent is the drummer for the whole file, so the output
    follows the reference (two references, two outputs), not a random draw of the seed."""
    from groove_live.midi_io import read_playable
    from groove_live.tasks import feel_of, file_bars, phrases, transform_phrases

    model = toy_task_model_path("humanize")
    src = _write(tmp_path / "beat.mid", _played_groove(4), bpm=97)
    refs = {name: _write(tmp_path / f"{name}.mid", _swung_groove(3, late, vel))
            for name, late, vel in (("laid_back", 40, 60), ("pushed", -40, 120))}
    made = {}
    for name, ref in refs.items():
        out = tmp_path / name
        result = _invoke("humanize", src, "--out", out, "--like", ref, "--seed", 3,
                         "--temperature", 0, "--model", model)
        assert result.exit_code == 0, result.output
        made[name] = _notes(out / "beat.humanize.mid")
    plain = tmp_path / "plain"
    assert _invoke("humanize", src, "--out", plain, "--seed", 3, "--temperature", 0,
                   "--model", model).exit_code == 0
    assert made["laid_back"] != made["pushed"] != _notes(plain / "beat.humanize.mid")
    # the same notes every time: a feel moves velocity and timing, never which notes play
    for notes in made.values():
        assert sorted(p for _, p, _ in notes) == sorted(p for _, p, _ in _played_groove(4))
    # what the file got is the library's feel_of: the mean of the reference phrases' mu
    engine = Engine.load(model)
    ref = read_playable(refs["pushed"], engine.spec)
    feel = feel_of(engine, ref, file_bars(ref, engine.spec))
    mu, _ = engine.encode(phrases(ref, engine.spec, file_bars(ref, engine.spec)))
    np.testing.assert_allclose(feel[0], mu.mean(axis=0), rtol=1e-6)
    given = phrases(read_playable(src, engine.spec), engine.spec, 4)
    assert transform_phrases(engine, given, temperature=0.0, seed=9, feel=feel).hits.sum() > 0


@pytest.mark.parametrize("case", ["missing", "silent", "no encoder"])
def test_humanize_like_refuses_a_reference_it_cannot_read_in_one_line(
        toy_task_model_path, tmp_path, fails, case):
    model = toy_task_model_path("humanize")
    src = _write(tmp_path / "beat.mid", _played_groove(2))
    ref = tmp_path / "ref.mid"
    if case == "silent":
        _write(ref, [], end_tick=2 * BAR)
    elif case == "no encoder":  # the decoder alone, its encoder left behind
        _write(ref, _swung_groove(2, 20, 90))
        alone = tmp_path / "models" / "alone.onnx"
        alone.parent.mkdir()
        alone.write_bytes(Path(model).read_bytes())
        model = alone
    result = _invoke("humanize", src, "--out", tmp_path / "out", "--like", ref, "--model", model)
    line = fails(result)
    assert {"missing": "ref.mid: no such file", "silent": "ref.mid: no notes in this file",
            "no encoder": "has no encoder"}[case] in line, line
    assert not (tmp_path / "out").exists()


def test_only_humanize_takes_like(toy_task_model_path, tmp_path):
    src = _write(tmp_path / "taps.mid", [(0, 60, 100)])
    result = _invoke("drumify", src, "--out", tmp_path, "--like", src,
                     "--model", toy_task_model_path("drumify"))
    assert result.exit_code == 2 and "--like" in result.stderr


def test_what_the_grid_cannot_hold_is_said_not_dropped_silently(toy_task_model_path,
                                                                   tmp_path):
    notes = _played_groove(2) + [(100, 60, 90, 0), (BAR + 12 * TICKS_PER_STEP + 5, SNARE, 20)]
    src = _write(tmp_path / "beat.mid", notes)  # a piano note, and a flam on the snare
    result = _invoke("humanize", src, "--out", tmp_path, "--amount", 0,
                     "--model", toy_task_model_path("humanize"))
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        "groove-live: note: 1 note on pitches no drum voice plays was left out",
        "groove-live: note: 1 note sharing a step with a louder note of the same drum was "
        "merged into it"]
    assert _notes(tmp_path / "beat.humanize.mid") == sorted(_played_groove(2))


def test_same_seed_same_file(toy_task_model_path, tmp_path):
    src = _write(tmp_path / "beat.mid", _played_groove(4))
    for out in ("a", "b"):
        assert _invoke("humanize", src, "--out", tmp_path / out, "--seed", 9,
                       "--model", toy_task_model_path("humanize")).exit_code == 0
    assert (_notes(tmp_path / "a" / "beat.humanize.mid")
            == _notes(tmp_path / "b" / "beat.humanize.mid"))


def test_leading_silence_and_the_files_own_end_are_kept(toy_task_model_path, tmp_path):
    """Two silent bars, notes in bars 3-4, the file running to the end of bar 8: the output
    has the same silent bars before and after (nothing shifted, nothing invented)."""
    notes = _played_groove(4, start_bar=2)
    src = _write(tmp_path / "late.mid", notes, end_tick=8 * BAR)
    for task in ("humanize", "infill"):
        result = _invoke(task, src, "--out", tmp_path, "--seed", 0,
                         "--model", toy_task_model_path(task))
        assert result.exit_code == 0, result.output
        out = tmp_path / f"late.{task}.mid"
        assert _length_ticks(out) == 8 * BAR
        ticks = [t for t, _, _ in _notes(out)]
        assert min(ticks) >= 2 * BAR - TICKS_PER_STEP // 2
        assert max(ticks) < 4 * BAR + TICKS_PER_STEP // 2  # bars 5-8 stay silent


# --- drumify -------------------------------------------------------------------------------
def test_drumify_reads_taps_of_any_pitch_and_channel(toy_task_model_path, tmp_path, monkeypatch):
    from groove_live.tasks import read_task_input

    taps = [(0, 60, 100, 0), (4 * TICKS_PER_STEP + 10, 72, 30, 3),
            (8 * TICKS_PER_STEP, 36, 127, 9), (BAR + 2 * TICKS_PER_STEP - 20, 1, 64, 15)]
    src = _write(tmp_path / "taps.mid", taps)
    engine = Engine.load(toy_task_model_path("drumify"))
    perf = read_task_input(src, engine.spec, "drumify")
    tap = engine.spec.drum_names.index("open_hihat")
    assert perf.n_notes == 4 and perf.n_unmapped == 0
    assert np.flatnonzero(perf.hits[:, tap]).tolist() == [0, 4, 8, 18]
    assert perf.hits.sum() == 4  # every tap on the tap voice, nothing elsewhere
    np.testing.assert_allclose(perf.offsets[[4, 18], tap], [10 / 120, -20 / 120], atol=1e-6)

    seen = []
    real = Engine.transform
    monkeypatch.setattr(Engine, "transform",
                        lambda self, p, *a, **k: seen.append(p) or real(self, p, *a, **k))
    result = _invoke("drumify", src, "--out", tmp_path, "--seed", 0, "--temperature", 0,
                     "--model", toy_task_model_path("drumify"))
    assert result.exit_code == 0, result.output
    assert np.flatnonzero(seen[-1].hits[0, :, tap]).tolist() == [0, 4, 8, 18]
    out = tmp_path / "taps.drumify.mid"
    assert _length_ticks(out) == 2 * BAR and _notes(out)  # a drum part came back


def test_drumify_has_no_amount(toy_task_model_path, tmp_path):
    src = _write(tmp_path / "taps.mid", [(0, 60, 100)])
    result = _invoke("drumify", src, "--out", tmp_path, "--amount", 0.5,
                     "--model", toy_task_model_path("drumify"))
    assert result.exit_code == 2 and "--amount" in result.stderr


# --- infill --------------------------------------------------------------------------------
def test_infill_keeps_every_other_drum_exactly_and_writes_the_hats(toy_task_model_path,
                                                                   tmp_path):
    notes = _played_groove(3) + [(2 * BAR + 40, RIDE, 77)]
    src = _write(tmp_path / "beat.mid", notes)
    result = _invoke("infill", src, "--out", tmp_path, "--seed", 5,
                     "--model", toy_task_model_path("infill"))
    assert result.exit_code == 0, result.output
    out = _notes(tmp_path / "beat.infill.mid")
    assert [n for n in out if n[1] not in HATS] == sorted(n for n in notes if n[1] not in HATS)
    assert [n for n in out if n[1] in HATS] != sorted(n for n in notes if n[1] in HATS)


# --- refusals ------------------------------------------------------------------------------
def test_a_file_without_notes_is_one_line_and_writes_nothing(toy_task_model_path, tmp_path,
                                                             fails):
    empty = _write(tmp_path / "empty.mid", [], end_tick=4 * BAR)
    out = tmp_path / "out"
    for task in ("humanize", "drumify", "infill"):
        line = fails(_invoke(task, empty, "--out", out, "--model", toy_task_model_path(task)))
        assert line == f"groove-live: error: {empty}: no notes in this file"
    assert not out.exists()
    piano = _write(tmp_path / "piano.mid", [(0, 60, 90, 0), (BAR, 64, 90, 0)])
    assert "none of its 2 notes is on a drum pitch" in fails(
        _invoke("humanize", piano, "--out", out, "--model", toy_task_model_path("humanize")))
    assert not out.exists()


def test_the_wrong_model_is_named_in_one_line(toy_task_model_path, toy_model_path, tmp_path,
                                              fails):
    src = _write(tmp_path / "beat.mid", _played_groove(2))
    line = fails(_invoke("humanize", src, "--out", tmp_path / "o", "--model", toy_model_path))
    assert "a sampling GrooVAE" in line and "not a humanize model" in line
    line = fails(_invoke("humanize", src, "--out", tmp_path / "o",
                         "--model", toy_task_model_path("drumify")))
    assert "a drumify model" in line and "groove-live drumify" in line
    assert not (tmp_path / "o").exists()


def test_the_input_is_never_overwritten(toy_task_model_path, tmp_path, fails):
    src = _write(tmp_path / "beat.mid", _played_groove(2))
    before = src.read_bytes()
    line = fails(_invoke("humanize", src, "--out", src, "--model",
                         toy_task_model_path("humanize")))
    assert "--out is the input file" in line and src.read_bytes() == before
    # An input already named like an output gets a new name beside it, not itself.
    named = _write(tmp_path / "x.humanize.mid", _played_groove(2))
    assert _invoke("humanize", named, "--out", tmp_path, "--model",
                   toy_task_model_path("humanize")).exit_code == 0
    assert (tmp_path / "x.humanize.humanize.mid").is_file()


def test_a_meter_the_model_cannot_play_is_refused(toy_task_model_path, tmp_path, fails):
    waltz = _write(tmp_path / "waltz.mid", [(0, KICK, 100), (480, SNARE, 100)], meter=(3, 4))
    line = fails(_invoke("infill", waltz, "--out", tmp_path / "o",
                         "--model", toy_task_model_path("infill")))
    assert "in 3/4" in line and not (tmp_path / "o").exists()


def test_default_model_is_the_bundled_one_of_the_task(tmp_path, monkeypatch, fails):
    import groove_live.bundled as bundled

    monkeypatch.setattr(bundled, "MODELS_DIR", tmp_path / "models")
    (tmp_path / "models").mkdir()
    src = _write(tmp_path / "beat.mid", _played_groove(2))
    line = fails(_invoke("drumify", src, "--out", tmp_path / "o"))
    assert "no bundled model 'drumify'" in line


def test_png_shows_input_and_output(toy_task_model_path, tmp_path):
    pytest.importorskip("matplotlib")
    src = _write(tmp_path / "beat.mid", _played_groove(3))
    assert _invoke("infill", src, "--out", tmp_path, "--png", "--seed", 0,
                   "--model", toy_task_model_path("infill")).exit_code == 0
    assert (tmp_path / "beat.infill.png").read_bytes()[:4] == b"\x89PNG"


NO_TORCH = """
    from groove_live.cli import main
    try:
        main(["humanize", sys.argv[1], "--out", sys.argv[2], "--model", sys.argv[3]],
             prog_name="groove-live")
    except SystemExit as e:
        assert not e.code, e.code
"""


def test_task_commands_never_import_torch(toy_task_model_path, tmp_path, run_torch_free):
    src = _write(tmp_path / "beat.mid", _played_groove(2))
    result = run_torch_free(NO_TORCH, src, tmp_path / "out", toy_task_model_path("humanize"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "out" / "beat.humanize.mid").is_file()


def test_a_note_pushed_nearly_half_a_step_late_reads_back_on_its_step(tmp_path):
    """Rounding to ticks must not carry a late note over the half-step line onto the next
    step, or a humanized note would come back on another step than the input's."""
    from groove_live.midi_io import read_performance, write_pattern
    from groove_live.pattern import Patterns
    from groove_live.spec import ModelSpec

    spec = ModelSpec(bars=2)
    p = Patterns.empty(1, spec)
    for step, offset in ((3, 0.4999999), (9, -0.5), (20, 0.4996)):
        p.hits[0, step, 0], p.velocities[0, step, 0], p.offsets[0, step, 0] = 1, 0.8, offset
    perf = read_performance(write_pattern(tmp_path / "x.mid", p, spec), spec)
    assert np.flatnonzero(perf.hits[:, 0]).tolist() == [3, 9, 20]
