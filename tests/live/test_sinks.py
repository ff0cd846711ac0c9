"""Sinks on their own: OSC encoding and targets, MIDI notes/clock through a fake port."""
from __future__ import annotations

import socket

import pytest
from pythonosc.osc_bundle import OscBundle
from pythonosc.osc_message import OscMessage

from groove_live.live import midi_sink
from groove_live.live.events import BarEvent, ClockEvent, HitEvent, NoteOffEvent
from groove_live.live.midi_sink import MidiError, MidiSink
from groove_live.live.sinks import MAX_TARGETS, OscSink


@pytest.fixture
def pair():
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(2.0)
    yield tx, rx
    tx.close()
    rx.close()


def test_osc_sink_sends_hits_and_bars_to_each_target(pair):
    tx, rx = pair
    sink = OscSink(tx, [rx.getsockname()])
    hit = HitEvent(10.0, 3, 4, "snare", 38, 0.5)
    bar = BarEvent(9.5, 10.0, 3, 120.0, (("kick", 36, 0.75, 0, -0.01), ("snare", 38, 0.5, 4, 0.5)))
    for e in (hit, bar, NoteOffEvent(10.1, 3, "snare", 38), ClockEvent(10.0, 3, "tick")):
        sink.prepare(e)
        sink.emit(e)
    m = OscMessage(rx.recv(65536))
    assert m.address == "/groove/hit" and m.params == ["snare", 38, 0.5, 3, 4]
    m = OscMessage(rx.recv(65536))
    assert m.address == "/groove/bar" and m.params[:2] == [3, 120.0]
    assert m.params[2:7] == ["kick", 36, 0.75, 0, pytest.approx(-0.01)]
    assert len(m.params) == 2 + 2 * 5


def test_bundled_osc_is_tagged_with_intended_wall_time_plus_latency(pair):
    tx, rx = pair
    sink = OscSink(tx, [rx.getsockname()], bundles=True, latency_s=0.1, wall_s=lambda t: t + 1.7e9)
    e = HitEvent(10.0, 0, 0, "kick", 36, 1.0)
    sink.prepare(e)
    sink.emit(e)
    b = OscBundle(rx.recv(65536))
    assert b.timestamp == pytest.approx(1.7e9 + 10.1, abs=1e-6)
    assert [m.address for m in b] == ["/groove/hit"]


def test_targets_are_deduplicated_capped_and_removable(pair):
    tx, _ = pair
    sink = OscSink(tx, [("127.0.0.1", 9000), ("127.0.0.1", 9000)])
    assert sink.targets == (("127.0.0.1", 9000),)
    for port in range(9001, 9001 + MAX_TARGETS - 1):
        assert sink.add_target(("127.0.0.1", port))
    assert not sink.add_target(("127.0.0.1", 1))
    assert sink.remove_target(("127.0.0.1", 9000)) and not sink.remove_target(("127.0.0.1", 9000))


class FakePort:
    def __init__(self):
        self.sent = []

    def send(self, msg):
        self.sent.append(msg)

    def close(self):
        self.sent.append("closed")


def test_midi_sink_plays_channel_10_with_retrigger_and_stop():
    port = FakePort()
    sink = MidiSink(port, "fake", clock=True)
    events = [HitEvent(0.0, 0, 0, "kick", 36, 1.0), HitEvent(0.1, 0, 1, "kick", 36, 0.0),
              NoteOffEvent(0.2, 0, "kick", 36), NoteOffEvent(0.3, 0, "kick", 36),
              HitEvent(0.4, 0, 2, "snare", 38, 0.5), ClockEvent(0.5, 0, "tick"),
              ClockEvent(0.6, 0, "stop")]
    for e in events:
        sink.prepare(e)
        sink.emit(e)
    kinds = [(m.type, getattr(m, "note", None), getattr(m, "velocity", None), getattr(m, "channel", None))
             for m in port.sent]
    assert kinds == [
        ("note_on", 36, 127, 9),
        ("note_off", 36, 0, 9), ("note_on", 36, 1, 9),  # a retrigger ends the sounding note first
        ("note_off", 36, 0, 9),  # the second note-off finds nothing sounding: not sent
        ("note_on", 38, 64, 9),
        ("clock", None, None, None),
        ("note_off", 38, 0, 9),  # stop ends what still sounds
        ("stop", None, None, None)]
    sink.close()
    assert port.sent[-1] == "closed"


def test_a_retriggered_note_is_ended_by_its_own_note_off_not_the_previous_notes():
    """Micro-timing can start a drum again before its previous note's planned note-off: the
    retrigger ends the old note, and that old note-off must not cut the new one short."""
    from types import SimpleNamespace

    from groove_live.limits import NOTE_LENGTH_STEPS

    port = FakePort()
    sink = MidiSink(port, "fake")
    step_s = 0.125
    first, second = HitEvent(0.0, 0, 0, "kick", 36, 1.0), HitEvent(0.05, 0, 0, "kick", 36, 0.5)
    offs = sink.plan(SimpleNamespace(hits=(first, second), notes=(), step_length_s=step_s))
    assert [o.t_s for o in offs] == [pytest.approx(NOTE_LENGTH_STEPS * step_s),
                                     pytest.approx(0.05 + NOTE_LENGTH_STEPS * step_s)]
    assert offs[0].t_s > second.t_s  # the first note's off falls after the second note's on
    sent_after = []
    for e in sorted([first, second, *offs], key=lambda e: e.t_s):
        sink.prepare(e)
        sink.emit(e)
        sent_after.append([(m.type, m.velocity) for m in port.sent])
    assert sent_after[-1] == [("note_on", 127), ("note_off", 0), ("note_on", 64), ("note_off", 0)]
    assert len(sent_after[2]) == len(sent_after[1])  # the first note's off: nothing sent
    assert len(sent_after[3]) == 4  # the second note's own off ends it


def test_midi_sink_without_clock_ignores_clock_but_still_ends_notes_on_stop():
    port = FakePort()
    sink = MidiSink(port, "fake", clock=False)
    for e in (HitEvent(0.0, 0, 0, "kick", 36, 1.0), ClockEvent(0.1, 0, "tick"), ClockEvent(0.2, 0, "stop")):
        sink.emit(e)
    assert [m.type for m in port.sent] == ["note_on", "note_off"]


def test_missing_output_port_is_one_clear_error(monkeypatch):
    class Backend:
        def get_output_names(self):
            return ["Midi Through:0", "Some Synth"]

    monkeypatch.setattr(midi_sink, "_backend", lambda api: Backend())
    with pytest.raises(MidiError, match="no MIDI output port 'Ableton'; available: Midi Through:0, Some Synth"):
        midi_sink.open_existing("Ableton")


class FakeSocket:
    def __init__(self):
        self.sent: list[tuple[bytes, tuple]] = []

    def sendto(self, dgram, address):
        self.sent.append((dgram, address))


def test_targets_with_an_expiry_stop_at_it_unless_renewed():
    sock = FakeSocket()
    sink = OscSink(sock, [("127.0.0.1", 4560)])
    lan = ("192.168.1.20", 9000)
    assert sink.add_target(lan, expires_t_s=10.0)

    def sent_to_at(t_s):
        sock.sent.clear()
        e = HitEvent(t_s, 0, 0, "kick", 36, 1.0)
        sink.prepare(e)
        sink.emit(e)
        return [a for _, a in sock.sent]

    assert sent_to_at(9.99) == [("127.0.0.1", 4560), lan]
    assert sent_to_at(10.0) == [("127.0.0.1", 4560)]
    assert sink.renew(lan, 20.0) and sent_to_at(15.0) == [("127.0.0.1", 4560), lan]
    assert not sink.renew(lan, 19.0)  # never shortened
    assert not sink.renew(("127.0.0.1", 4560), 30.0)  # --send targets never expire
    assert sink.add_target(lan, expires_t_s=25.0) and sink.expiries()[lan] == 25.0
    sink.prune(24.0)
    assert sink.targets == (("127.0.0.1", 4560), lan)
    sink.prune(25.0)
    assert sink.targets == (("127.0.0.1", 4560),)
    assert sent_to_at(26.0) == [("127.0.0.1", 4560)]


def test_a_target_added_without_expiry_keeps_none():
    sink = OscSink(FakeSocket())
    lan = ("192.168.1.20", 9000)
    sink.add_target(lan, expires_t_s=5.0)
    sink.add_target(lan)  # set again from loopback: permanent
    sink.add_target(lan, expires_t_s=50.0)  # and a later network request does not shorten it
    assert sink.expiries() == {lan: None}


def test_osc_bytes_are_what_python_osc_would_build():
    """The sink writes each datagram once with osc_wire's encoder: same bytes as before."""
    from pythonosc.osc_bundle_builder import OscBundleBuilder
    from pythonosc.osc_message_builder import build_msg

    hit = HitEvent(10.0, 3, 4, "snare", 38, 0.5)
    bar = BarEvent(9.5, 10.0, 3, 120.0, (("kick", 36, 0.75, 0, -0.01),))
    want_hit = build_msg("/groove/hit", ["snare", 38, 0.5, 3, 4]).dgram
    want_bar = build_msg("/groove/bar", [3, 120.0, "kick", 36, 0.75, 0, -0.01]).dgram
    plain = OscSink(FakeSocket())
    assert plain._encode(hit) == want_hit and plain._encode(bar) == want_bar
    bundled = OscSink(FakeSocket(), bundles=True, latency_s=0.1, wall_s=lambda t: t + 1.7e9)
    builder = OscBundleBuilder(1.7e9 + 10.1)
    builder.add_content(build_msg("/groove/hit", ["snare", 38, 0.5, 3, 4]))
    assert bundled._encode(hit) == builder.build().dgram


def test_values_beyond_32_bits_fall_back_to_the_wider_osc_types():
    from groove_live.live.osc_wire import decode_message
    from groove_live.live.sinks import bar_message, hit_message

    m = decode_message(hit_message("kick", 36, 1.0, 2**31, 0))
    assert m.type_tags == "sifhi" and m.args[3] == 2**31
    m = decode_message(bar_message(1, 120.0, [("kick", 36, 0.5, 0, 1e39)]))
    assert m.type_tags == "ifsifid" and m.args[-1] == 1e39
    m = decode_message(bar_message(1, 120.0, []))
    assert m.type_tags == "if" and m.args == (1, 120.0)
