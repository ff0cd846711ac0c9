"""`groove-live accompany`: a melody MIDI file harmonized by a chorale harmonizer, offline.

The harmonizer (kind "pitched") writes its voices (alto, tenor, bass) under 2-bar windows of a
soprano melody in 16ths, inside the soprano range it learned from Bach. A user's melody may be
of any length and in any register, so `harmonize`:
- moves the melody into the soprano range, by whole octaves when one fits (nothing changes but
  the register), else by the fewest semitones; a melody wider than the range is refused;
- cuts it into consecutive windows from its first step, the last one padded with rests; a
  window where the melody is silent throughout is not asked of the model and stays silent;
- moves the voices back by the same interval, so they are in the melody's own key, then into
  each voice's range by whole octaves (the pitch class, so the harmony, is kept);
- returns the user's melody as given beside the voices: it is never re-voiced or transposed.

Reading (`read_melody`): note-ons and note-offs of every channel, at the file's first tempo,
quantized to the 16th-note grid from the file's first tick (both ends to the nearest 16th). A
note that overlaps another by less than half a 16th rounds away (legato playing); any longer
overlap, a chord included, is refused with one line naming the bar and beat. 4/4 (or 2/2)
only: the model plays bars of four quarter notes. The file's timeline is kept, silent bars at
its start included, so the output lines up with the input in a DAW.

Writing: one MIDI file of 4 tracks, the melody (channel 1, as read, repeated notes kept apart)
then one per voice on the voice's spec channel. The harmonizer's data has no onsets, so a voice
holding one pitch over several 16ths is one held note.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import mido
import numpy as np

from .atomic_io import atomic_path
from .chorale import REST, VOICE_RANGES, ChoraleError, check_voices
from .engine import Engine, fold_into_ranges
from .midi_io import (DEFAULT_BPM, WRITE_TICKS_PER_BEAT, MidiReadError, ReadLimits,
                      _read_bytes)
from .offline import OfflineError, cannot_write, check_png, output_path

STEPS_PER_BEAT = 4  # 16th notes
MELODY_CHANNEL = 0  # what a synth calls channel 1
# A melody file is small (a 10,000-note melody is ~60 KB); mido parses a whole file at once,
# so the cap bounds its time and memory.
MELODY_LIMITS = ReadLimits(max_file_bytes=1 << 20, max_messages=100_000, max_bars=2_000)
VOICE_VELOCITY = 80  # the voices' MIDI velocity: the model writes pitches only
OUTPUT_SUFFIX = ".accompany.mid"
PNG_MAX_BARS = 16  # the piano roll shows the first 16 bars


class AccompanyError(OfflineError):
    """A request the user can fix (a melody the model cannot take, a wrong model): one line."""


@dataclass(frozen=True)
class Note:
    start: int  # 16th steps from the file's first tick
    end: int  # exclusive, > start
    pitch: int
    velocity: int


@dataclass(frozen=True)
class Melody:
    notes: tuple[Note, ...]  # in time order, none overlapping
    bpm: float

    @property
    def steps(self) -> int:
        return self.notes[-1].end

    def pitches(self) -> np.ndarray:
        """(steps,) int64 MIDI pitches, REST where no note sounds."""
        out = np.full(self.steps, REST, np.int64)
        for note in self.notes:
            out[note.start:note.end] = note.pitch
        return out


STEPS_PER_BAR = 4 * STEPS_PER_BEAT  # 4/4 only (read_melody refuses other meters)


def _where(step: int) -> str:
    return (f"bar {step // STEPS_PER_BAR + 1}, beat "
            f"{step % STEPS_PER_BAR // STEPS_PER_BEAT + 1}")


def _parse(path: Path, limits: ReadLimits) -> mido.MidiFile:
    data = _read_bytes(path, limits)  # size-capped, one line for a missing or unreadable file
    try:
        midi = mido.MidiFile(file=io.BytesIO(data))
    except Exception as e:  # mido raises many types (EOFError, OSError, KeyError, ...) on bad
        raise MidiReadError(f"{path}: not a readable MIDI file ({type(e).__name__}: "  # bytes
                            f"{str(e).splitlines()[0] if str(e) else 'corrupt'})",
                            "corrupt") from None
    if midi.type == 2:
        raise MidiReadError(f"{path}: MIDI type 2 (asynchronous tracks) is not supported",
                            "unsupported")
    if not 0 < midi.ticks_per_beat < 0x8000:
        raise MidiReadError(f"{path}: SMPTE or zero timing; save it with ticks per beat",
                            "bad timing")
    if sum(len(track) for track in midi.tracks) > limits.max_messages:
        raise MidiReadError(f"{path}: more than {limits.max_messages:,} MIDI messages, over "
                            f"the limit for a melody", "too many messages")
    return midi


def read_melody(path: str | Path, limits: ReadLimits = MELODY_LIMITS) -> Melody:
    """A monophonic melody MIDI file on the 16th grid; MidiReadError (one line) for a file
    that is unreadable, empty, not in 4/4, too long, or that sounds two notes at once."""
    path = Path(path)
    midi = _parse(path, limits)
    tempos: list[tuple[int, int]] = []  # (tick, microseconds per beat)
    meters: list[tuple[int, int, int]] = []  # (tick, numerator, denominator)
    raw: list[tuple[int, int, int, int]] = []  # (start tick, end tick, pitch, velocity)
    end_tick = 0
    for track in midi.tracks:
        tick = 0
        held: dict[tuple[int, int], tuple[int, int]] = {}  # (channel, pitch) -> (tick, vel)
        for msg in track:
            tick += msg.time
            if msg.type == "set_tempo":
                tempos.append((tick, msg.tempo))
            elif msg.type == "time_signature":
                meters.append((tick, msg.numerator, msg.denominator))
            elif msg.type in ("note_on", "note_off"):
                key = (msg.channel, msg.note)
                if key in held:  # a note-off, or the same key struck again: the note ends
                    start, velocity = held.pop(key)
                    raw.append((start, tick, msg.note, velocity))
                if msg.type == "note_on" and msg.velocity > 0:
                    held[key] = (tick, msg.velocity)
        for (_, pitch), (start, velocity) in held.items():  # never released: ends with its track
            raw.append((start, tick, pitch, velocity))
        end_tick = max(end_tick, tick)
    if not raw:
        raise MidiReadError(f"{path}: no notes in this file; nothing to harmonize", "empty")
    meter = min(meters)[1:] if meters else (4, 4)
    if meter[0] * 4 / meter[1] != 4:
        raise MidiReadError(f"{path}: in {meter[0]}/{meter[1]}, but the harmonizer plays bars "
                            f"of four quarter notes (4/4); give a file in 4/4", "meter")
    tempo = min(tempos)[1] if tempos else None
    bpm = mido.tempo2bpm(tempo) if tempo else DEFAULT_BPM
    ticks_per_step = midi.ticks_per_beat / STEPS_PER_BEAT
    max_steps = limits.max_bars * 4 * STEPS_PER_BEAT
    notes = []
    for start_tick, stop_tick, pitch, velocity in sorted(raw):
        start = math.floor(start_tick / ticks_per_step + 0.5)
        end = max(math.floor(stop_tick / ticks_per_step + 0.5), start + 1)
        if end > max_steps:
            raise MidiReadError(f"{path}: a note in bar {start // STEPS_PER_BAR + 1:,}, over the "
                                f"{limits.max_bars:,}-bar limit", "too long")
        notes.append(Note(start, end, pitch, velocity))
    for before, after in zip(notes, notes[1:]):
        if after.start < before.end:
            raise MidiReadError(f"{path}: more than one note sounds at {_where(after.start)} "
                                f"(a melody is one voice: one note at a time)", "polyphonic")
    return Melody(tuple(notes), float(bpm))


def soprano_shift(low: int, high: int) -> int:
    """The interval (semitones) that moves a melody spanning low..high into the soprano
    range: 0 when it is inside, else the smallest whole-octave move that fits, else the
    smallest move of any size; ChoraleError when the melody is wider than the range."""
    lo, hi = VOICE_RANGES["soprano"]
    if high - low > hi - lo:
        raise ChoraleError(f"the melody spans {low}..{high} ({high - low} semitones), wider "
                           f"than the soprano range {lo}..{hi} ({hi - lo}) the model learned")
    fits = [s for s in range(lo - low, hi - high + 1)]
    octaves = [s for s in fits if s % 12 == 0]
    return min(octaves or fits, key=abs)


def _check_harmonizer(engine: Engine) -> None:
    if engine.spec.kind != "pitched":
        raise AccompanyError(f"{engine.path}: {engine.what}, not a harmonizer (kind pitched); "
                             f"give a harmonizer with --model")


def harmonize(engine: Engine, melody: np.ndarray, seed: int | None = None) -> np.ndarray:
    """(steps,) int MIDI pitches of a melody, REST -1 where it rests, of any length ->
    (steps, 1 + voices) int pitches: the melody as given, then the harmonizer's voices in
    spec.voices order (see the module docstring for transposition and windows). The same seed
    gives the same voices. ChoraleError (one line) for a melody the model cannot take."""
    _check_harmonizer(engine)
    spec = engine.spec
    m = np.asarray(melody)
    if m.ndim != 1 or len(m) == 0:
        raise ChoraleError(f"expected one pitch per 16th, got shape {list(m.shape)}")
    m = check_voices(m[:, None], n_voices=1)[:, 0]
    sounding = m != REST
    if not sounding.any():
        raise ChoraleError("the melody is silent: nothing to harmonize")
    shift = soprano_shift(int(m[sounding].min()), int(m[sounding].max()))
    n = -(-len(m) // spec.steps)
    windows = np.full(n * spec.steps, REST, np.int64)
    windows[:len(m)] = np.where(sounding, m + shift, REST)
    windows = windows.reshape(n, spec.steps)
    voices = np.full((n, spec.steps, len(spec.voices)), REST, np.int64)
    active = np.flatnonzero((windows != REST).any(axis=1))
    voices[active] = engine.accompany(windows[active], seed=seed)
    voices = voices.reshape(n * spec.steps, -1)[:len(m)]
    voices = np.where(voices != REST, voices - shift, REST)
    return np.concatenate([m[:, None], fold_into_ranges(voices, spec.voices)], axis=1)


def _voice_notes(pitches: np.ndarray) -> list[Note]:
    """Runs of one pitch as held notes (the harmonizer's voices have no onsets)."""
    notes, start = [], 0
    for step in range(1, len(pitches) + 1):
        if step == len(pitches) or pitches[step] != pitches[start]:
            if pitches[start] != REST:
                notes.append(Note(start, step, int(pitches[start]), VOICE_VELOCITY))
            start = step
    return notes


def write_harmony(path: Path, melody: Melody, voices: np.ndarray, engine: Engine) -> None:
    """A type-1 MIDI file: the melody's track (tempo and 4/4 at its start), then one track per
    voice on its spec channel. voices: (steps, n_voices) pitches."""
    tps = WRITE_TICKS_PER_BEAT // STEPS_PER_BEAT
    midi = mido.MidiFile(type=1, ticks_per_beat=WRITE_TICKS_PER_BEAT)
    parts = [("melody", MELODY_CHANNEL, list(melody.notes))] + [
        (v.name, v.midi_channel, _voice_notes(voices[:, i]))
        for i, v in enumerate(engine.spec.voices)]
    for index, (name, channel, notes) in enumerate(parts):
        track = mido.MidiTrack()
        track.append(mido.MetaMessage("track_name", name=name, time=0))
        if index == 0:
            track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(melody.bpm), time=0))
            track.append(mido.MetaMessage("time_signature", numerator=4, denominator=4, time=0))
        events = sorted([(n.end * tps, 0, n.pitch, 0) for n in notes]  # offs before ons
                        + [(n.start * tps, 1, n.pitch, n.velocity) for n in notes])
        now = 0
        for tick, is_on, pitch, velocity in events:
            kind = "note_on" if is_on else "note_off"
            track.append(mido.Message(kind, channel=channel, note=pitch, velocity=velocity,
                                      time=tick - now))
            now = tick
        track.append(mido.MetaMessage("end_of_track", time=0))
        midi.tracks.append(track)
    midi.save(str(path))


def accompany_file(engine: Engine, midi_in: str | Path, out_dir: str | Path,
                   seed: int | None = None, png: bool = False,
                   limits: ReadLimits = MELODY_LIMITS) -> Path:
    """`groove-live accompany`: the melody of midi_in harmonized, written atomically as
    <stem>.accompany.mid in out_dir (and <stem>.accompany.png with png). Nothing is written
    when anything is refused (AccompanyError, MidiReadError, EngineError: one line)."""
    midi_in, out_dir = Path(midi_in), Path(out_dir)
    _check_harmonizer(engine)
    if out_dir.exists() and out_dir.resolve() == midi_in.resolve():
        raise AccompanyError(f"{out_dir}: --out is the input file itself; give a folder")
    if png:
        check_png()
    melody = read_melody(midi_in, limits)
    try:
        satb = harmonize(engine, melody.pitches(), seed)
    except ChoraleError as e:
        raise AccompanyError(f"{midi_in}: {e}") from None
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AccompanyError(f"{out_dir}: cannot create the output folder ({e.strerror})"
                             ) from None
    path = output_path(out_dir, midi_in.stem + OUTPUT_SUFFIX)
    if path.resolve() == midi_in.resolve():
        raise AccompanyError(f"{path}: would overwrite the input; choose another --out folder")
    try:
        with atomic_path(path) as tmp:
            write_harmony(tmp, melody, satb[:, 1:], engine)
    except OSError as e:
        raise AccompanyError(cannot_write(path, e)) from None
    if png:
        _write_png(satb, engine, path)
    return path


def _write_png(satb: np.ndarray, engine: Engine, path: Path) -> None:
    """Every voice's pitch per 16th, melody on top, for the first PNG_MAX_BARS bars."""
    from .plot import PlotUnavailable, _figure  # matplotlib only when drawing

    steps = min(len(satb), PNG_MAX_BARS * STEPS_PER_BAR)
    names = ("melody", *(v.name for v in engine.spec.voices))
    png_path = path.with_suffix(".png")
    try:
        figure = _figure(max(6.0, steps * 0.08), 4.0)
        ax = figure.add_axes((0.07, 0.12, 0.9, 0.8))
        for i, name in enumerate(names):
            pitch = satb[:steps, i].astype(float)
            pitch[pitch == REST] = np.nan  # a gap where the voice rests
            ax.step(np.arange(steps), pitch, where="post", label=name, linewidth=2)
        bars = range(0, steps, STEPS_PER_BAR)
        ax.set_xticks(bars)
        ax.set_xticklabels([f"bar {1 + s // STEPS_PER_BAR}" for s in bars], fontsize=7)
        ax.set_ylabel("MIDI pitch")
        ax.grid(axis="x", color="0.8")
        ax.legend(fontsize=7, loc="upper right")
        ax.set_title(path.stem, fontsize=9, loc="left")
        with atomic_path(png_path) as tmp:
            figure.savefig(tmp, format="png")
    except PlotUnavailable as e:
        raise AccompanyError(str(e)) from None
    except OSError as e:
        raise AccompanyError(cannot_write(png_path, e)) from None
