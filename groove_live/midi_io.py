"""Drum MIDI files <-> step grids, with mido only (the runtime never imports pretty_midi).

Reading works in ticks, so the grid follows the file's own meter and is exact whatever the
tempo; the tempo is kept to turn offsets into milliseconds. Writing applies velocities and
micro-timing and puts GM drum notes on channel 10 (mido channel 9).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import mido
import numpy as np

from .pattern import OFFSET_LIMIT, Patterns
from .spec import ModelSpec

DRUM_CHANNEL = 9  # MIDI channel 10, zero-based
DEFAULT_BPM = 120.0
WRITE_TICKS_PER_BEAT = 480
NOTE_LENGTH_STEPS = 0.5  # drums only care about onsets; short notes keep DAWs tidy


class MidiReadError(ValueError):
    """A MIDI file that cannot be read as a drum performance (one clear line for the user)."""


@dataclass
class Performance:
    """A whole MIDI file on the step grid: (T, C) arrays, plus what is needed to time it."""

    hits: np.ndarray
    velocities: np.ndarray
    offsets: np.ndarray
    bpm: float
    time_signature: tuple[int, int]
    n_notes: int  # drum notes read
    n_unmapped: int  # note-ons whose pitch is in no drum class

    @property
    def steps(self) -> int:
        return self.hits.shape[0]


def _first_meta(midi: mido.MidiFile, kind: str):
    for track in midi.tracks:
        for msg in track:
            if msg.type == kind:
                return msg
    return None


def read_performance(path: str | Path, spec: ModelSpec) -> Performance:
    """Read every drum onset of a MIDI file onto the grid (loudest note wins a cell)."""
    path = Path(path)
    try:
        midi = mido.MidiFile(path)
    except FileNotFoundError:
        raise MidiReadError(f"{path}: no such file") from None
    except Exception as e:  # mido raises OSError, EOFError, KeyError, ValueError, ...
        raise MidiReadError(f"{path}: not a readable MIDI file ({type(e).__name__}: {e})") from None
    if midi.type == 2:
        raise MidiReadError(f"{path}: MIDI type 2 (asynchronous tracks) is not supported")
    tempo = _first_meta(midi, "set_tempo")
    bpm = mido.tempo2bpm(tempo.tempo) if tempo else DEFAULT_BPM
    ts = _first_meta(midi, "time_signature")
    time_signature = (ts.numerator, ts.denominator) if ts else (4, 4)

    # A bar of n/d is n * (4/d) quarter notes; steps split the bar evenly.
    beats_per_bar = time_signature[0] * 4.0 / time_signature[1]
    ticks_per_step = midi.ticks_per_beat * beats_per_bar / spec.steps_per_bar
    table = spec.pitch_to_class()
    onsets: list[tuple[float, int, int]] = []
    n_unmapped = 0
    for track in midi.tracks:
        tick = 0
        for msg in track:
            tick += msg.time
            if msg.type == "note_on" and msg.velocity > 0:
                cls = table.get(msg.note)
                if cls is None:
                    n_unmapped += 1
                    continue
                onsets.append((tick / ticks_per_step, cls, msg.velocity))
    n_steps = 0
    if onsets:
        n_steps = int(math.floor(max(o[0] for o in onsets) + OFFSET_LIMIT)) + 1
    shape = (n_steps, spec.n_drums)
    hits = np.zeros(shape, np.float32)
    vel = np.zeros(shape, np.float32)
    off = np.zeros(shape, np.float32)
    for onset, cls, midi_velocity in onsets:
        step = int(math.floor(onset + OFFSET_LIMIT))
        if step < 0:
            continue  # more than half a step before the file's start: no grid step to own it
        velocity = midi_velocity / 127.0
        if hits[step, cls] and vel[step, cls] >= velocity:
            continue  # several notes of one class on one step: the loudest wins
        hits[step, cls] = 1.0
        vel[step, cls] = velocity
        off[step, cls] = onset - step
    return Performance(hits, vel, off, bpm, time_signature, len(onsets), n_unmapped)


def windows(perf: Performance, spec: ModelSpec, hop_bars: int = 1,
            drop_empty: bool = True) -> Patterns:
    """Slide `spec.bars`-bar windows over a performance with a hop of `hop_bars` bars.

    The last partial bar is padded with silence; a performance shorter than one window gives
    no window.
    """
    n_bars = math.ceil(perf.steps / spec.steps_per_bar)
    starts = range(0, max(0, n_bars - spec.bars + 1), hop_bars)
    pad = n_bars * spec.steps_per_bar - perf.steps
    arrays = [np.pad(a, ((0, pad), (0, 0))) for a in (perf.hits, perf.velocities, perf.offsets)]
    out = [[], [], []]
    for bar in starts:
        lo = bar * spec.steps_per_bar
        hi = lo + spec.steps
        if drop_empty and not arrays[0][lo:hi].any():
            continue
        for i, a in enumerate(arrays):
            out[i].append(a[lo:hi])
    if not out[0]:
        return Patterns(np.zeros((0, spec.steps, spec.n_drums), np.float32),
                        np.zeros((0, spec.steps, spec.n_drums), np.float32),
                        np.zeros((0, spec.steps, spec.n_drums), np.float32))
    return Patterns(np.stack(out[0]), np.stack(out[1]), np.stack(out[2]))


def read_pattern(path: str | Path, spec: ModelSpec, bar: int = 0) -> tuple[Patterns, float]:
    """The `spec.bars`-bar window starting at `bar` of a MIDI file (padded), and its bpm."""
    perf = read_performance(path, spec)
    if perf.n_notes == 0:
        raise MidiReadError(f"{path}: no drum notes (GM drum pitches) in this file")
    numerator, denominator = perf.time_signature
    if numerator * 4.0 / denominator != spec.beats_per_bar:
        # Its bars would be squeezed onto the model's: a 3/4 groove comes back as a wrong 4/4 one.
        raise MidiReadError(f"{path}: in {numerator}/{denominator}, but this model plays bars of "
                            f"{spec.beats_per_bar:g} beats (4/4); give a file in 4/4")
    lo = bar * spec.steps_per_bar
    if lo >= perf.steps:
        raise MidiReadError(f"{path}: the file has no bar {bar}")
    arrays = []
    for a in (perf.hits, perf.velocities, perf.offsets):
        a = a[lo:lo + spec.steps]
        arrays.append(np.pad(a, ((0, spec.steps - a.shape[0]), (0, 0))))
    return Patterns(*arrays), perf.bpm


def pattern_to_midi(pattern: Patterns, spec: ModelSpec, bpm: float = DEFAULT_BPM,
                    name: str = "groove-live") -> mido.MidiFile:
    """One pattern (B must be 1) as a type-0 MIDI file with tempo, meter and micro-timing."""
    if len(pattern) != 1:
        raise ValueError("pattern_to_midi writes one pattern at a time")
    p = pattern.cleaned()
    tpb = WRITE_TICKS_PER_BEAT
    ticks_per_step = tpb * spec.beats_per_bar / spec.steps_per_bar
    note_ticks = max(1, round(NOTE_LENGTH_STEPS * ticks_per_step))
    events: list[tuple[int, int, int, int]] = []  # (tick, order, pitch, midi_velocity)
    steps, drums = np.nonzero(p.hits[0])
    for step, drum in zip(steps, drums):
        # Notes pushed before the file's start (an early first step) are clamped to tick 0.
        tick = max(0, round((step + p.offsets[0, step, drum]) * ticks_per_step))
        midi_velocity = int(np.clip(round(float(p.velocities[0, step, drum]) * 127), 1, 127))
        pitch = spec.drums[drum].out_pitch
        events.append((tick, 1, pitch, midi_velocity))
        events.append((tick + note_ticks, 0, pitch, 0))  # note-offs sort before note-ons
    events.sort()
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("track_name", name=name, time=0))
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm), time=0))
    track.append(mido.MetaMessage("time_signature", numerator=spec.beats_per_bar, denominator=4,
                                  time=0))
    now = 0
    for tick, is_on, pitch, midi_velocity in events:
        kind = "note_on" if is_on else "note_off"
        track.append(mido.Message(kind, channel=DRUM_CHANNEL, note=pitch,
                                  velocity=midi_velocity if is_on else 0, time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    midi = mido.MidiFile(type=0, ticks_per_beat=tpb)
    midi.tracks.append(track)
    return midi


def write_pattern(path: str | Path, pattern: Patterns, spec: ModelSpec,
                  bpm: float = DEFAULT_BPM, name: str = "groove-live") -> Path:
    path = Path(path)
    pattern_to_midi(pattern, spec, bpm, name).save(path)
    return path
