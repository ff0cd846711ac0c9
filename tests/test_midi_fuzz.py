"""Any file at all: the MIDI readers either give a sane grid or raise MidiReadError, nothing else.

Hypothesis builds files three ways: well-formed structure with hostile values (ticks per beat
0, time signatures n/0 or 0/n, tempo 0, 2**28-tick deltas, SMPTE, many tracks, running status,
lying chunk sizes), random bytes, and real GMD fixtures cut short or with bytes changed. A
last property checks the reader against mido on files mido writes.
"""
from __future__ import annotations

import struct
import tempfile
from pathlib import Path

import mido
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from groove_live.midi_io import MidiReadError, _parse_smf, read_pattern, read_performance
from groove_live.spec import DEFAULT_SPEC as SPEC

GMD = Path(__file__).parent / "fixtures" / "gmd"
FIXTURES = [p.read_bytes() for p in sorted(GMD.rglob("*.mid"))]
FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def scratch():
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp) / "fuzz.mid"


def _vlq(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def _check(path: Path, data: bytes, bar: int | None) -> None:
    """Read `data` both ways; only MidiReadError may escape, and what is read must be sane."""
    path.write_bytes(data)
    try:
        perf = read_performance(path, SPEC)
    except MidiReadError as e:
        assert str(e).startswith(f"{path}: ") and "\n" not in str(e)
    else:
        assert perf.hits.shape == perf.velocities.shape == perf.offsets.shape
        assert perf.hits.shape[1] == SPEC.n_drums
        assert set(np.unique(perf.hits)) <= {0.0, 1.0}
        assert np.all((perf.velocities > 0) == (perf.hits > 0))
        assert perf.velocities.max(initial=0) <= 1
        assert np.all(perf.offsets >= -0.5) and np.all(perf.offsets < 0.5)
        assert 0 < perf.bpm < 1e9 and perf.time_signature[0] > 0
    try:
        pattern, bpm = read_pattern(path, SPEC, bar=bar)
    except MidiReadError as e:
        assert str(e).startswith(f"{path}: ") and "\n" not in str(e)
    else:
        assert pattern.hits.shape == (1, SPEC.steps, SPEC.n_drums) and pattern.hits.any()
        assert bpm > 0


# Values that broke or fooled the reader once, mixed with anything in range.
deltas = st.one_of(st.integers(0, 3), st.integers(0, 480), st.just(0x0FFFFFFF),
                   st.integers(0, 0x0FFFFFFF))
drum_pitch = st.sampled_from(sorted(SPEC.pitch_to_class()))


@st.composite
def events(draw, broken: bool) -> list[bytes]:
    """One track's events. Not `broken`: every event well formed, values still hostile."""
    data_byte = st.integers(0, 255) if broken else st.integers(0, 127)
    out = [_vlq(0) + bytes([0x99, draw(drum_pitch), draw(st.integers(1, 127))])]
    running = 2  # data bytes the running status takes; 0: none
    kinds = ["note", "note", "note", "running", "other_channel", "tempo", "meter", "meta",
             "sysex"] + (["garbage"] if broken else [])
    for kind in draw(st.lists(st.sampled_from(kinds), max_size=30)):
        delta = _vlq(draw(deltas))
        if kind == "note":
            status = draw(st.sampled_from([0x90, 0x90, 0x80])) | draw(st.integers(0, 15))
            pitch = draw(st.one_of(drum_pitch, data_byte))
            out.append(delta + bytes([status, pitch, draw(data_byte)]))
            running = 2
        elif kind == "running":  # data bytes alone, for the last status (none after sysex)
            if broken or running:
                out.append(delta + bytes([draw(drum_pitch), draw(data_byte)][:running or 2]))
        elif kind == "other_channel":
            status = draw(st.integers(0xA0, 0xEF))
            n_data = 1 if status & 0xF0 in (0xC0, 0xD0) else 2
            if broken:
                n_data = draw(st.integers(0, 2))
            out.append(delta + bytes([status] + [draw(data_byte) for _ in range(n_data)]))
            running = n_data
        elif kind == "tempo":
            tempo = draw(st.one_of(st.integers(1, 0xFFFFFF), st.sampled_from([0, 1, 500000])))
            length = draw(st.sampled_from([0, 2, 3, 5])) if broken else 3
            body = tempo.to_bytes(3, "big")[:length].ljust(length, b"\x00")
            out.append(delta + b"\xff\x51" + _vlq(length) + body)
        elif kind == "meter":
            numerator = draw(st.one_of(st.integers(1, 16), st.integers(0, 255)))
            power = draw(st.one_of(st.sampled_from([2, 2, 3]), st.integers(0, 7),
                                   st.integers(0, 255)))
            length = draw(st.integers(0, 4)) if broken else 4
            body = bytes([numerator, power, 24, 8])[:length]
            out.append(delta + b"\xff\x58" + _vlq(length) + body)
        elif kind == "meta":
            body = draw(st.binary(max_size=20))
            out.append(delta + bytes([0xFF, draw(st.integers(0, 0x7F))]) + _vlq(len(body)) + body)
        elif kind == "sysex":
            body = draw(st.binary(max_size=20)) + b"\xf7"
            out.append(delta + b"\xf0" + _vlq(len(body)) + body)
            running = 0
        else:
            out.append(delta + draw(st.binary(min_size=1, max_size=6)))
    return out


@st.composite
def midi_files(draw) -> bytes:
    broken = draw(st.sampled_from([False, False, False, True]))
    tracks = [b"".join(draw(events(broken))) for _ in range(draw(st.integers(0, 8)))]
    fmt = draw(st.sampled_from([0, 1, 1, 1, 1, 2]))
    n_tracks = len(tracks)
    if broken:
        fmt = draw(st.one_of(st.just(fmt), st.integers(0, 0xFFFF)))
        n_tracks = draw(st.one_of(st.just(n_tracks), st.integers(0, 0xFFFF)))
    division = draw(st.one_of(
        st.integers(1, 0x7FFF), st.sampled_from([0, 1, 96, 480, 480, 0x7FFF]),
        st.builds(lambda code, tpf: -(code << 8) + tpf,  # SMPTE
                  st.sampled_from([24, 25, 29, 30]), st.integers(1, 255)),
        st.integers(-0x8000, 0x7FFF)))  # SMPTE or not, valid or not
    out = b"MThd" + struct.pack(">IHHh", 6, fmt, n_tracks, division)
    for body in tracks:
        size = len(body)
        name = b"MTrk"
        if broken:
            size = draw(st.one_of(st.just(size), st.integers(0, 0xFFFFFFFF)))
            name = draw(st.sampled_from([b"MTrk", b"MTrk", b"XFIH"]))
        out += name + struct.pack(">I", size) + body
    return out


@FUZZ
@given(midi_files(), st.one_of(st.none(), st.integers(-2, 40)))
def test_structured_hostile_files_only_raise_midi_read_error(scratch, data, bar):
    _check(scratch, data, bar)


@FUZZ
@given(st.one_of(st.binary(max_size=300),
                 st.binary(max_size=300).map(lambda b: b"MThd\x00\x00\x00\x06" + b)))
def test_random_bytes_only_raise_midi_read_error(scratch, data):
    _check(scratch, data, None)


@FUZZ
@given(st.sampled_from(range(len(FIXTURES))), st.data())
def test_cut_or_damaged_real_files_only_raise_midi_read_error(scratch, index, draw):
    data = bytearray(FIXTURES[index])
    if draw.draw(st.booleans()):
        data = data[:draw.draw(st.integers(0, len(data)))]
    else:
        for _ in range(draw.draw(st.integers(1, 8))):
            at = draw.draw(st.integers(0, len(data) - 1))
            data[at] = draw.draw(st.integers(0, 255))
    _check(scratch, bytes(data), draw.draw(st.one_of(st.none(), st.integers(0, 20))))


# Well-formed files as mido writes them: our parser must see exactly what mido reads back.
messages = st.one_of(
    st.builds(lambda ch, n, v, t: mido.Message("note_on", channel=ch, note=n, velocity=v, time=t),
              st.integers(0, 15), st.integers(0, 127), st.integers(0, 127), deltas),
    st.builds(lambda ch, n, t: mido.Message("note_off", channel=ch, note=n, time=t),
              st.integers(0, 15), st.integers(0, 127), deltas),
    st.builds(lambda ch, p, t: mido.Message("program_change", channel=ch, program=p, time=t),
              st.integers(0, 15), st.integers(0, 127), deltas),
    st.builds(lambda v, t: mido.Message("pitchwheel", pitch=v, time=t),
              st.integers(-8192, 8191), deltas),
    st.builds(lambda tempo, t: mido.MetaMessage("set_tempo", tempo=tempo, time=t),
              st.integers(0, 0xFFFFFF), deltas),
    st.builds(lambda n, d, t: mido.MetaMessage("time_signature", numerator=n, denominator=2 ** d,
                                               time=t),
              st.integers(0, 255), st.integers(0, 7), deltas),
    st.builds(lambda data, t: mido.Message("sysex", data=data, time=t),
              st.lists(st.integers(0, 127), max_size=10), deltas),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(messages, max_size=25), max_size=4),
       st.one_of(st.integers(1, 0x7FFF), st.integers(-0x8000, -1)))
def test_parser_agrees_with_mido_on_well_formed_files(scratch, tracks, division):
    midi = mido.MidiFile(type=1, ticks_per_beat=division)
    midi.tracks.extend(mido.MidiTrack(t) for t in tracks)
    midi.save(scratch)
    expected = mido.MidiFile(scratch)
    ev = _parse_smf(scratch.read_bytes(), max_messages=10**6)
    notes, tempos, meters = [], [], []
    for track in expected.tracks:
        tick = 0
        for msg in track:
            tick += msg.time
            if msg.type == "note_on" and msg.velocity > 0:
                notes.append((tick, msg.note, msg.velocity))
            elif msg.type == "set_tempo":
                tempos.append(msg.tempo)
            elif msg.type == "time_signature":
                meters.append((msg.numerator, msg.denominator))
    assert (ev.format, ev.division) == (1, expected.ticks_per_beat)
    assert ev.notes == notes and ev.tempos == tempos
    assert [(n, 2 ** p) for n, p in ev.meters] == meters
