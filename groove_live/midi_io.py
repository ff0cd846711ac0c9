"""Drum MIDI files <-> step grids (the runtime never imports pretty_midi).

Reading parses the file with a small reader of its own that enforces size, message-count and
length limits, so any file gives a grid or one MidiReadError. It works in ticks, so the grid
follows the file's own meter and is exact whatever the tempo; the tempo is kept to turn
offsets into milliseconds. Writing (through mido) applies velocities and micro-timing and puts
GM drum notes on channel 10 (mido channel 9).
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path

import mido
import numpy as np

from .limits import DRUM_CHANNEL, NOTE_LENGTH_STEPS
from .pattern import OFFSET_LIMIT, Patterns
from .spec import ModelSpec

DEFAULT_BPM = 120.0
WRITE_TICKS_PER_BEAT = 480


class MidiReadError(ValueError):
    """A MIDI file that cannot be read as a drum performance (one clear line for the user).

    The message names the file and the problem; `reason` is a short label without the file,
    for counting skipped files by cause.
    """

    def __init__(self, message: str, reason: str = "unreadable"):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ReadLimits:
    """What one MIDI file may ask of the reader; all checked before any grid is allocated."""

    max_file_bytes: int = 4 * 1024 * 1024  # the largest GMD file is 152 KiB
    max_messages: int = 200_000  # all tracks together; the busiest GMD file has 42k
    max_bars: int = 2_000  # an hour of 4/4 at 120 bpm; the longest GMD take has 639


DEFAULT_LIMITS = ReadLimits()
# SMPTE division: frames per second by the code in the header's high byte (29 is drop-frame).
SMPTE_FPS = {24: 24.0, 25: 25.0, 29: 30000 / 1001, 30: 30.0}
MAX_DENOMINATOR_POWER = 6  # time signatures up to n/64


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
    # Where the file ends, in steps from its start: its last event of any kind (end of track
    # included), so a clip that ends on a bar line after silent bars keeps those bars.
    end_steps: float = 0.0

    @property
    def steps(self) -> int:
        return self.hits.shape[0]


class _Corrupt(Exception):
    """Raised inside the parser; the caller adds the file name."""


class _TooManyMessages(Exception):
    pass


@dataclass
class _Events:
    """What reading needs from a standard MIDI file, in file order (track by track)."""

    format: int
    division: int  # > 0: ticks per beat; < 0: SMPTE (-fps code in the high byte, ticks/frame)
    notes: list[tuple[int, int, int]]  # (tick, pitch, midi_velocity) of every sounding note-on
    tempos: list[int]  # microseconds per beat of every set_tempo
    meters: list[tuple[int, int]]  # (numerator, power of two of the denominator)
    end_tick: int = 0  # the latest event of any track, end of track included


def _read_vlq(data: bytes, i: int, end: int) -> tuple[int, int]:
    value = 0
    for _ in range(4):  # the standard allows at most 4 bytes (28 bits)
        if i >= end:
            raise _Corrupt("a track ends inside a delta time or length")
        byte = data[i]
        i += 1
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, i
    raise _Corrupt("a delta time or length is longer than 4 bytes")


def _parse_track(data: bytes, i: int, end: int, ev: _Events, budget: int) -> int:
    """Read one MTrk body data[i:end] into `ev`; returns how many events it held."""
    tick = 0
    status = None  # running status
    n = 0
    while i < end:
        n += 1
        if n > budget:
            raise _TooManyMessages
        delta, i = _read_vlq(data, i, end)
        tick += delta
        if i >= end:
            raise _Corrupt("a track ends inside an event")
        byte = data[i]
        if byte >= 0x80:
            i += 1
            if byte == 0xFF:  # meta event (mido keeps running status across it; so do we)
                if i >= end:
                    raise _Corrupt("a track ends inside a meta event")
                kind = data[i]
                length, i = _read_vlq(data, i + 1, end)
                if i + length > end:
                    raise _Corrupt("a meta event runs past the end of its track")
                body = data[i:i + length]
                i += length
                if kind == 0x51:
                    if length < 3:
                        raise _Corrupt(f"a tempo event is too short ({length} of 3 bytes)")
                    ev.tempos.append(int.from_bytes(body[:3], "big"))
                elif kind == 0x58:
                    if length < 2:
                        raise _Corrupt(f"a time signature event is too short ({length} of 4 bytes)")
                    ev.meters.append((body[0], body[1]))
                continue
            if byte in (0xF0, 0xF7):  # sysex: skip it; it cancels running status
                length, i = _read_vlq(data, i, end)
                if i + length > end:
                    raise _Corrupt("a sysex event runs past the end of its track")
                i += length
                status = None
                continue
            if byte > 0xF0:
                raise _Corrupt(f"status byte 0x{byte:02X} is not allowed in a MIDI file")
            status = byte
        elif status is None:
            raise _Corrupt("a data byte with no status byte before it")
        kind = status & 0xF0
        n_data = 1 if kind in (0xC0, 0xD0) else 2
        if i + n_data > end:
            raise _Corrupt("a track ends inside a channel message")
        first = data[i]
        second = data[i + 1] if n_data == 2 else 0
        if first > 0x7F or second > 0x7F:
            raise _Corrupt("a data byte is over 127")
        i += n_data
        if kind == 0x90 and second > 0:
            ev.notes.append((tick, first, second))
    ev.end_tick = max(ev.end_tick, tick)
    return n


def _parse_smf(data: bytes, max_messages: int) -> _Events:
    """Parse a standard MIDI file's bytes, stopping at `max_messages` events.

    Our own small parser rather than mido's: it keeps only what the grid needs, can stop at a
    message budget mid-file (mido reads everything first: 86 s and 2.8 GiB for a 24 MB file on a
    2-core machine), and fails with one exception type on any malformed input.
    """
    if len(data) < 14 or data[:4] != b"MThd":
        raise _Corrupt("no MIDI header")
    header_size = int.from_bytes(data[4:8], "big")
    if header_size < 6 or 8 + header_size > len(data):
        raise _Corrupt("bad MIDI header")
    fmt, n_tracks, division = struct.unpack(">HHh", data[8:14])
    ev = _Events(fmt, division, [], [], [])
    if fmt > 2:
        return ev  # refused by the caller, with its own message
    i = 8 + header_size
    read = 0
    budget = max_messages
    while read < n_tracks:
        if i + 8 > len(data):
            raise _Corrupt(f"the header announces {n_tracks} tracks but the file holds {read}")
        name = data[i:i + 4]
        size = int.from_bytes(data[i + 4:i + 8], "big")
        i += 8
        if i + size > len(data):
            raise _Corrupt(f"track {read + 1} is cut off")
        if name == b"MTrk":
            budget -= _parse_track(data, i, i + size, ev, budget)
            read += 1
        i += size  # a chunk of another kind: the standard says skip it
    return ev


def _read_bytes(path: Path, limits: ReadLimits) -> bytes:
    cap = limits.max_file_bytes
    too_large = f"over the {cap:,}-byte limit for a MIDI file"
    chunks: list[bytes] = []
    n_bytes = 0
    try:
        size = path.stat().st_size
        if size <= cap:
            with open(path, "rb") as f:
                # In pieces, up to the cap: a device or pipe can claim size 0 and never end.
                while n_bytes <= cap and (chunk := f.read(min(cap + 1 - n_bytes, 1 << 20))):
                    chunks.append(chunk)
                    n_bytes += len(chunk)
    except FileNotFoundError:
        raise MidiReadError(f"{path}: no such file", "missing") from None
    except IsADirectoryError:
        raise MidiReadError(f"{path}: a folder, not a MIDI file", "unreadable") from None
    except (OSError, ValueError) as e:  # ValueError: a NUL in the path
        raise MidiReadError(f"{path}: cannot open it ({e})", "unreadable") from None
    if size > cap:
        raise MidiReadError(f"{path}: {size:,} bytes, {too_large}", "too large")
    if n_bytes > cap:
        raise MidiReadError(f"{path}: {too_large}", "too large")
    return b"".join(chunks)


def _ticks_per_beat(ev: _Events, path: Path) -> float:
    if ev.division > 0:
        return float(ev.division)
    if ev.division == 0:
        raise MidiReadError(f"{path}: the header gives 0 ticks per beat", "bad timing")
    # SMPTE: ticks are fractions of a second, so beats come from the tempo. A tempo change
    # would move the beat grid against absolute time; rather than guess, refuse that case.
    code, ticks_per_frame = -(ev.division >> 8), ev.division & 0xFF
    if code not in SMPTE_FPS or ticks_per_frame == 0:
        raise MidiReadError(f"{path}: SMPTE timing with {code} frames/s and {ticks_per_frame} "
                            "ticks per frame is not valid (24, 25, 29 or 30 frames/s)",
                            "bad timing")
    if len(set(ev.tempos)) > 1:
        raise MidiReadError(f"{path}: SMPTE (absolute) timing with tempo changes: its beats "
                            "cannot be placed; save it with ticks per beat", "unsupported")
    tempo = ev.tempos[0] if ev.tempos else mido.bpm2tempo(DEFAULT_BPM)
    return SMPTE_FPS[code] * ticks_per_frame * tempo / 1e6


def read_performance(path: str | Path, spec: ModelSpec,
                     limits: ReadLimits = DEFAULT_LIMITS) -> Performance:
    """Read every drum onset of a MIDI file onto the grid (loudest note wins a cell).

    Any file that cannot be read, breaks `limits` or has impossible timing raises
    MidiReadError (one line naming the file); nothing else is raised for bad input.
    """
    path = Path(path)
    data = _read_bytes(path, limits)
    try:
        ev = _parse_smf(data, limits.max_messages)
    except _Corrupt as e:
        raise MidiReadError(f"{path}: not a readable MIDI file ({e})", "corrupt") from None
    except _TooManyMessages:
        raise MidiReadError(f"{path}: more than {limits.max_messages:,} MIDI messages, over the "
                            "limit for one file", "too many messages") from None
    if ev.format == 2:
        raise MidiReadError(f"{path}: MIDI type 2 (asynchronous tracks) is not supported",
                            "unsupported")
    if ev.format > 2:
        raise MidiReadError(f"{path}: MIDI type {ev.format} is unknown (0, 1 or 2)", "corrupt")
    tempo = ev.tempos[0] if ev.tempos else None  # the first in file order sets the bpm
    if tempo == 0:
        raise MidiReadError(f"{path}: a tempo of 0 microseconds per beat", "bad timing")
    bpm = mido.tempo2bpm(tempo) if tempo else DEFAULT_BPM
    ticks_per_beat = _ticks_per_beat(ev, path)
    numerator, power = ev.meters[0] if ev.meters else (4, 2)
    if numerator == 0 or power > MAX_DENOMINATOR_POWER:
        denominator = 2 ** power if power <= 20 else f"2^{power}"
        raise MidiReadError(f"{path}: time signature {numerator}/{denominator} is not usable "
                            f"(numerator 1-255, denominator 1-{2 ** MAX_DENOMINATOR_POWER})",
                            "bad timing")
    time_signature = (numerator, 2 ** power)

    # A bar of n/d is n * (4/d) quarter notes; steps split the bar evenly.
    beats_per_bar = time_signature[0] * 4.0 / time_signature[1]
    ticks_per_step = ticks_per_beat * beats_per_bar / spec.steps_per_bar
    table = spec.pitch_to_class()
    onsets: list[tuple[float, int, int]] = []
    n_unmapped = 0
    for tick, pitch, midi_velocity in ev.notes:
        cls = table.get(pitch)
        if cls is None:
            n_unmapped += 1
            continue
        onsets.append((tick / ticks_per_step, cls, midi_velocity))
    n_steps = 0
    if onsets:
        n_steps = int(math.floor(max(o[0] for o in onsets) + OFFSET_LIMIT)) + 1
    if n_steps > limits.max_bars * spec.steps_per_bar:  # before allocating the grid
        raise MidiReadError(f"{path}: a drum note in bar {(n_steps - 1) // spec.steps_per_bar:,}, "
                            f"over the {limits.max_bars:,}-bar limit", "too long")
    shape = (n_steps, spec.n_drums)
    hits = np.zeros(shape, np.float32)
    vel = np.zeros(shape, np.float32)
    off = np.zeros(shape, np.float32)
    for onset, cls, midi_velocity in onsets:
        step = int(math.floor(onset + OFFSET_LIMIT))  # >= 0: ticks are never negative
        velocity = midi_velocity / 127.0
        if hits[step, cls] and vel[step, cls] >= velocity:
            continue  # several notes of one class on one step: the loudest wins
        hits[step, cls] = 1.0
        vel[step, cls] = velocity
        off[step, cls] = onset - step
    return Performance(hits, vel, off, bpm, time_signature, len(onsets), n_unmapped,
                       ev.end_tick / ticks_per_step)


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


def read_playable(path: str | Path, spec: ModelSpec,
                  limits: ReadLimits = DEFAULT_LIMITS) -> Performance:
    """The whole file on the spec's grid, refused in one line (MidiReadError) when it holds no
    note the spec's voices play or is in a meter whose bars are not the model's."""
    perf = read_performance(path, spec, limits)
    if perf.n_notes == 0:
        if perf.n_unmapped:
            raise MidiReadError(f"{path}: none of its {perf.n_unmapped} notes is on a drum pitch "
                                "this model knows (GM drums, e.g. 36 kick, 38 snare, 42 hi-hat)",
                                "no drum notes")
        raise MidiReadError(f"{path}: no notes in this file", "no drum notes")
    numerator, denominator = perf.time_signature
    if numerator * 4.0 / denominator != spec.beats_per_bar:
        # Its bars would be squeezed onto the model's: a 3/4 groove comes back as a wrong 4/4 one.
        raise MidiReadError(f"{path}: in {numerator}/{denominator}, but this model plays bars of "
                            f"{spec.beats_per_bar:g} beats (4/4); give a file in 4/4", "meter")
    return perf


def read_pattern(path: str | Path, spec: ModelSpec, bar: int | None = None,
                 limits: ReadLimits = DEFAULT_LIMITS) -> tuple[Patterns, float]:
    """The `spec.bars`-bar window of a MIDI file starting at `bar` (padded), and its bpm.

    bar None starts at the first bar with a drum note: a count-in or a silent intro would
    otherwise come back as an empty pattern. An explicit bar is taken as asked, but a window
    with no note at all is refused rather than returned silently.
    """
    perf = read_playable(path, spec, limits)
    n_bars = math.ceil(perf.steps / spec.steps_per_bar)
    first_bar = int(np.flatnonzero(perf.hits.any(axis=1))[0]) // spec.steps_per_bar
    if bar is None:
        bar = first_bar
    if not 0 <= bar < n_bars:
        raise MidiReadError(f"{path}: the file has no bar {bar} (its bars are 0 to {n_bars - 1})",
                            "no such bar")
    lo = bar * spec.steps_per_bar
    arrays = []
    for a in (perf.hits, perf.velocities, perf.offsets):
        a = a[lo:lo + spec.steps]
        arrays.append(np.pad(a, ((0, spec.steps - a.shape[0]), (0, 0))))
    if not arrays[0].any():
        raise MidiReadError(f"{path}: bars {bar} to {bar + spec.bars - 1} have no drum note (the "
                            f"first is in bar {first_bar})", "silent")
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
    # The file ends on the phrase's last bar line, not at its last note-off, so a DAW sees a
    # clip of exactly the phrase's bars and loops it without a gap or a cut.
    end_tick = round(p.steps * ticks_per_step)
    events: list[tuple[int, int, int, int]] = []  # (tick, order, pitch, midi_velocity)
    steps, drums = np.nonzero(p.hits[0])
    for step, drum in zip(steps, drums):
        # Notes pushed before the file's start (an early first step) are clamped to tick 0,
        # and a note pushed nearly half a step late stays before the half-step line, where
        # rounding would otherwise carry it onto the next step when the file is read back.
        tick = max(0, min(round((step + p.offsets[0, step, drum]) * ticks_per_step),
                          math.ceil((step + OFFSET_LIMIT) * ticks_per_step) - 1))
        midi_velocity = int(np.clip(round(float(p.velocities[0, step, drum]) * 127), 1, 127))
        pitch = spec.drums[drum].out_pitch
        events.append((tick, 1, pitch, midi_velocity))
        # Note-offs sort before note-ons; none runs past the phrase (see end_tick below).
        events.append((min(tick + note_ticks, end_tick), 0, pitch, 0))
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
    track.append(mido.MetaMessage("end_of_track", time=end_tick - now))
    midi = mido.MidiFile(type=0, ticks_per_beat=tpb)
    midi.tracks.append(track)
    return midi


def write_pattern(path: str | Path, pattern: Patterns, spec: ModelSpec,
                  bpm: float = DEFAULT_BPM, name: str = "groove-live") -> Path:
    path = Path(path)
    pattern_to_midi(pattern, spec, bpm, name).save(path)
    return path
