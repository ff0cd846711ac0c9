"""The harmonizer in the live server (/groove/accompany, /groove/note), on the fake clock: what
plays, from which bar, at which times and for how long, on which MIDI channels, and the one-line
errors for bad melodies (the music goes on)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from groove_live.chorale import REST
from groove_live.live.clock import FakeClock
from groove_live.live.events import NoteEvent, NoteOffEvent
from groove_live.live.harmony import HarmonyError, parse_melody, voice_notes
from groove_live.live.midi_sink import MidiSink
from groove_live.live.scheduler import render_bar
from groove_live.live.osc_wire import BUNDLE_HEADER, decode_message, decode_packet, encode_message
from groove_live.live.server import ServeConfig, ServeError, Server
from groove_live.live.sinks import OscSink, RecordingSink, note_message

from .fake_engine import FakeEngine
from .fake_harmonizer import FakeHarmonizer, harmonize

SENDER = ("127.0.0.1", 57121)
BPM = 240.0  # one bar a second: a 16th is 1/16 s
STEP_S = 1.0 / 16
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
# Bar 1: G4 and A4 for a quarter each, a quarter rest, B4 from step 12 held over the bar line
# to step 19; bar 2: B4 still, then C5 for the last three quarters.
MELODY = [67] * 4 + [69] * 4 + [0] * 4 + [71] * 8 + [72] * 12
# (voice, pitch, bar of the loop, step, steps held): the melody and the fake's triads under it
# (alto a major third down, tenor a fifth, bass an octave).
EXPECTED = sorted(
    (voice, m + shift, bar, step, held)
    for voice, shift in (("soprano", 0), ("alto", -4), ("tenor", -7), ("bass", -12))
    for m, bar, step, held in ((67, 0, 0, 4), (69, 0, 4, 4), (71, 0, 12, 8), (72, 1, 4, 12)))


class FakePort:
    def __init__(self):
        self.sent = []

    def send(self, msg):
        self.sent.append(msg)

    def close(self):
        pass


def offline(harmonizer=None, sinks=(), **config):
    clock = FakeClock()
    recording = RecordingSink(clock.now)
    config.setdefault("seed", 7)
    config.setdefault("bpm", BPM)
    config.setdefault("bar_lookahead_s", 0.1)
    server = Server(FakeEngine(), ServeConfig(port=None, **config), clock=clock,
                    sinks=[recording, *sinks],
                    harmonizer=FakeHarmonizer() if harmonizer is None else harmonizer,
                    harmonize=harmonize)
    server.start(threaded=False)
    return server, clock, recording


def send(server, address, *args):
    """One request through the server's datagram path; its one reply as (address, args)."""
    replies = server.handle_datagram(encode_message(address, list(args)), SENDER)
    assert len(replies) == 1
    m = decode_message(replies[0])
    return m.address, list(m.args)


def committed(server) -> dict:
    return {bar: content for bar, _, _, content in server.scheduler.committed}


def heard(recording, server, bar) -> list:
    """The notes the sinks got in `bar`: (voice, pitch, step from the downbeat, steps held)."""
    t_bar = server.scheduler.bar_t_s(bar)
    return sorted((n.voice, n.pitch, round((n.t_s - t_bar) / STEP_S, 6),
                   round(n.duration_s / STEP_S, 6)) for n in recording.notes() if n.bar == bar)


def note_bars(client) -> set:
    """The bars of the /groove/note messages a client got."""
    return {m.params[4] for m in client.messages("/groove/note")}


def info(server) -> dict:
    return dict(server.info())


# --- the melody as typed -------------------------------------------------------------------
def test_melody_forms_32_notes_one_bar_repeated_and_a_string():
    assert parse_melody(MELODY, 32, 16).tolist() == [REST if p == 0 else p for p in MELODY]
    bar = [60, 0, 62, 64] * 4
    assert parse_melody(bar, 32, 16).tolist() == [REST if p == 0 else p for p in bar * 2]
    text = "67 - - - 69 - - - _ . 0 rest 71 - - - " + "71 - - - 72 - - - - - - - - - - -"
    assert parse_melody([text], 32, 16).tolist() == parse_melody(MELODY, 32, 16).tolist()
    assert parse_melody([60.0] * 16, 32, 16).tolist() == [60] * 32  # a whole float is a note


@pytest.mark.parametrize("args, reason", [
    ([], "needs a melody: 32 MIDI notes"),
    ([0] * 32, "the melody is silent"),
    ([60] * 31, "got 31 notes; give 32 MIDI notes"),
    (["60 62"], "got 2 notes"),
    ([60] * 15 + ["x"], "note 16 is a string"),
    ([60] * 15 + [60.5], "note 16 is 60.5: MIDI notes are whole numbers"),
    ([60] * 15 + [True], "note 16 is bool"),
    ([60] * 15 + [130], "note 16 is 130: MIDI notes are 1..127"),
    ([-3] + [60] * 15, "note 1 is -3"),
    (["60+64 " + "62 " * 15], "step 1 has more than one note (60+64): a melody is one voice"),
    (["62 " * 15 + "[60, 64]"], "step 16 has more than one note"),
    (["- 60" + " 60" * 14], "cannot start with '-'"),
    (["60 62 q" + " 60" * 13], "step 3: 'q' is not a MIDI note number"),
    ([40] * 8 + [80] * 8, "the melody spans 40..80, wider than the soprano range"),
])
def test_a_bad_melody_is_one_line_naming_the_problem(args, reason):
    with pytest.raises(HarmonyError) as e:
        parse_melody(args, 32, 16)
    assert reason in str(e.value) and "\n" not in str(e.value)


def test_a_held_pitch_is_one_note_with_its_full_length_even_over_the_bar_line():
    melody = parse_melody(MELODY, 32, 16)
    bass = np.where(melody == REST, REST, melody - 12)
    bars = voice_notes(np.stack([melody, bass], axis=1), ("soprano", "bass"), (0, 3), 16)
    got = [[(n.voice, n.channel, n.pitch, n.step, n.steps) for n in bar] for bar in bars]
    assert got == [[("soprano", 0, 67, 0, 4), ("bass", 3, 55, 0, 4), ("soprano", 0, 69, 4, 4),
                    ("bass", 3, 57, 4, 4), ("soprano", 0, 71, 12, 8), ("bass", 3, 59, 12, 8)],
                   [("soprano", 0, 72, 4, 12), ("bass", 3, 60, 4, 12)]]


# --- in the server -------------------------------------------------------------------------
def test_accompany_lands_on_the_next_bar_and_loops_with_exact_times_and_lengths():
    server, clock, recording = offline()
    server.run_until(clock.now() + 1.3)  # inside bar 1
    first_free = server.timeline.first_free_bar()
    assert first_free >= 2  # bar 1 is taken: the request comes mid-phrase
    engine = server.harmony.engine
    assert send(server, "/groove/accompany", *MELODY) == (
        "/groove/ack", ["/groove/accompany", 32, 28])
    assert engine.threads == []  # the OSC side only checks and hands over
    server.run_until(clock.now() + 5.0)
    assert len(engine.threads) == 1 and isinstance(engine.seeds[0], int)
    bars = committed(server)
    assert all(not bars[b].notes for b in bars if b < first_free)  # never early
    expected = [[(v, p, float(s), float(h)) for v, p, b, s, h in EXPECTED if b == k]
                for k in (0, 1)]
    for k in range(4):  # from the next free bar on, looped: every note at its step, held
        assert heard(recording, server, first_free + k) == sorted(expected[k % 2])
    # The drums play on under it.
    assert any(h.bar == first_free for h in recording.hits())
    assert info(server)["harmony"] == 1 and info(server)["harmony_since_bar"] == first_free
    assert info(server)["harmonizer"] == "fake_harmonizer"


def test_a_request_that_misses_its_bar_lands_on_the_next_one_never_late():
    server, clock, recording = offline()
    server.run_until(clock.now() + 1.3)
    first_free = server.timeline.first_free_bar()
    send(server, "/groove/accompany", "67 69 71 72 " * 4)
    # The clock takes the bar the request was aiming at before the worker gets to it.
    scheduler = server.scheduler
    scheduler.process(scheduler.bar_t_s(first_free) - scheduler.commit_ahead_s())
    assert server.timeline.taken_bar == first_free
    server.run_until(clock.now() + 3.0)
    bars = committed(server)
    assert not bars[first_free].notes
    melody = [n.pitch for n in bars[first_free + 1].notes if n.voice == "soprano"]
    assert melody == [67, 69, 71, 72] * 4
    for n in recording.notes():  # every note was sent at its time, never after
        assert n.t_s >= server.scheduler.bar_t_s(n.bar)


def test_quantize_phrase_waits_for_the_phrase_start():
    server, clock, _ = offline(quantize="phrase")
    server.run_until(clock.now() + 1.3)
    send(server, "/groove/accompany", *MELODY)
    server.run_until(clock.now() + 8.0)
    bars = committed(server)
    phrase = server.spec.bars
    assert not any(bars[b].notes for b in range(phrase))
    assert bars[phrase].notes and bars[phrase + 1].notes


def test_stop_ends_the_loop_on_the_next_bar_and_a_new_melody_replaces_it():
    server, clock, recording = offline()
    send(server, "/groove/accompany", *MELODY)
    server.run_until(clock.now() + 3.3)
    assert send(server, "/groove/accompany/stop") == ("/groove/ack", ["/groove/accompany/stop"])
    stop_bar = server.timeline.first_free_bar()
    server.run_until(clock.now() + 3.0)
    bars = committed(server)
    assert bars[stop_bar - 1].notes and not any(bars[b].notes for b in bars if b >= stop_bar)
    assert info(server)["harmony"] == 0
    send(server, "/groove/accompany", *([74] * 32))
    again = server.timeline.first_free_bar()
    server.run_until(clock.now() + 2.0)
    assert {n.pitch for n in committed(server)[again].notes if n.voice == "soprano"} == {74}
    assert [n.steps for n in committed(server)[again].notes] == [32] * 4


@pytest.mark.parametrize("args, reason", [
    ([60] * 31, "got 31 notes"),
    ([0] * 32, "silent"),
    ([60] * 15 + [200], "note 16 is 200"),
    ([60] * 15 + ["x"], "note 16 is a string"),
    (["60/64 " * 16], "more than one note"),
    ([60] * 33, "takes at most 32 arguments"),
])
def test_bad_input_gets_one_error_and_the_music_goes_on(args, reason):
    server, clock, recording = offline()
    send(server, "/groove/accompany", *MELODY)
    server.run_until(clock.now() + 2.5)
    before = len(recording.notes())
    address, reply = send(server, "/groove/accompany", *args)
    assert address == "/groove/error" and reply[0] == "/groove/accompany" and reason in reply[1]
    server.run_until(clock.now() + 2.0)
    assert len(recording.notes()) > before  # the loop plays on, unchanged
    assert info(server)["harmonies"] == 1 and info(server)["refused"] == 1


def test_a_server_without_a_harmonizer_says_how_to_get_one():
    clock = FakeClock()
    server = Server(FakeEngine(), ServeConfig(port=None, seed=1), clock=clock)
    server.start(threaded=False)
    for address in ("/groove/accompany", "/groove/accompany/stop"):
        assert send(server, address, *([60] * 32 if address == "/groove/accompany" else [])) == (
            "/groove/error", [address, "no harmonizer: start serve with --harmonizer NAME|PATH"])
    assert info(server)["harmonizer"] == ""


def test_a_failing_model_is_reported_to_the_sender_later_and_the_music_goes_on():
    server, clock, recording = offline(harmonizer=FakeHarmonizer(fail=True))
    later = []
    server.harmony.send = lambda reply, sender: later.append((decode_message(reply), sender))
    assert send(server, "/groove/accompany", *MELODY)[0] == "/groove/ack"
    server.run_until(clock.now() + 3.0)
    assert len(later) == 1 and later[0][1] == SENDER
    message = later[0][0]
    assert message.address == "/groove/error" and message.args[0] == "/groove/accompany"
    assert "the model exploded" in message.args[1]
    assert recording.hits() and not recording.notes()
    assert info(server)["harmony_errors"] == 1


def test_midi_plays_the_voices_on_channels_1_to_4_with_planned_note_offs():
    port = FakePort()
    server, clock, recording = offline(sinks=[MidiSink(port, "fake")])
    send(server, "/groove/accompany", *MELODY)
    server.run_until(clock.now() + 2.9)
    pitched = [m for m in port.sent if m.channel != 9]
    ons = [(m.channel, m.note) for m in pitched if m.type == "note_on"]
    # The first loop's notes: one note-on each (a held pitch is not struck again).
    first = {("soprano", 0), ("alto", 1), ("tenor", 2), ("bass", 3)}
    assert {(v, c) for v, c in first} == {(n.voice, n.channel) for n in recording.notes()}
    expected_ons = sorted((dict(first)[v], p) for v, p, b, s, h in EXPECTED)
    assert sorted(ons[:16]) == expected_ons
    # Every note-on is followed by its note-off before the same pitch starts again.
    sounding = set()
    for m in pitched:
        key = (m.channel, m.note)
        if m.type == "note_on":
            assert key not in sounding
            sounding.add(key)
        else:
            sounding.discard(key)


def test_midi_note_offs_come_at_the_notes_full_length():
    sink = MidiSink(FakePort(), "fake")
    server, clock, recording = offline()
    send(server, "/groove/accompany", *MELODY)
    server.run_until(clock.now() + 3.0)
    bar = server.timeline.taken_bar
    r = render_bar(committed(server)[bar], bar, 10.0, BPM, server.spec, server.scheduler.mix, 0.1)
    offs = [e for e in sink.plan(r) if isinstance(e, NoteOffEvent) and e.channel is not None]
    assert len(offs) == len(r.notes) > 0
    for note, off in zip(r.notes, offs):
        assert off.channel == note.channel and off.pitch == note.pitch
        assert off.t_s == pytest.approx(note.t_s + note.duration_s)


def test_note_message_and_bundles_are_like_hits():
    m = decode_message(note_message("alto", 63, 0.8, 0.25, 5, 4, 1))
    assert m.address == "/groove/note"
    assert m.args[0] == "alto" and m.args[1] == 63 and m.args[3] == pytest.approx(0.25)
    assert list(m.args[4:]) == [5, 4, 1] and m.args[2] == pytest.approx(0.8)

    class Sock:
        sent = []

        def sendto(self, data, address):
            self.sent.append((data, address))

    sink = OscSink(Sock(), [("127.0.0.1", 9000)], bundles=True, latency_s=0.2,
                   wall_s=lambda t: t + 1000.0)
    note = NoteEvent(3.0, 1, 0, "bass", 3, 3, 48, 0.8, 0.5)
    sink.prepare(note)
    sink.emit(note)
    data, _ = Sock.sent[0]
    assert data.startswith(BUNDLE_HEADER)
    (inner,) = decode_packet(data)
    assert inner.address == "/groove/note" and inner.args[:2] == ("bass", 48)
    seconds = int.from_bytes(data[8:12], "big") - 2208988800  # NTP era to Unix time
    assert seconds == int(3.0 + 1000.0 + 0.2)


def test_our_own_notes_are_never_answered():
    server, _, _ = offline()
    assert server.handle_datagram(encode_message("/groove/note", ["alto", 60, 0.8, 0.25]),
                                  SENDER) == []


def test_serve_refuses_a_model_that_is_not_a_harmonizer_in_one_line():
    from groove_live.live.cli import _harmonizer_factory

    load = _harmonizer_factory(ServeConfig(harmonizer=str(FIXTURES / "toy_model.onnx")))
    with pytest.raises(ServeError) as e:
        load()
    assert "not a harmonizer (kind pitched)" in str(e.value) and "\n" not in str(e.value)
    missing = _harmonizer_factory(ServeConfig(harmonizer=str(FIXTURES / "nope.onnx")))
    with pytest.raises(ServeError) as e:
        missing()
    assert str(e.value).startswith("--harmonizer") and "\n" not in str(e.value)
    assert _harmonizer_factory(ServeConfig()) is None


TOY = FIXTURES / "toy_chorale_harmonizer.onnx"


@pytest.mark.skipif(not TOY.exists(), reason="the toy harmonizer fixture is not built yet "
                    "(tests/fixtures/make_toy_chorale_model.py)")
def test_the_toy_harmonizer_plays_four_voices_through_the_real_engine():
    from groove_live.live.cli import _harmonizer_factory

    engine = _harmonizer_factory(ServeConfig(harmonizer=str(TOY)))()
    clock = FakeClock()
    recording = RecordingSink(clock.now)
    server = Server(FakeEngine(), ServeConfig(port=None, seed=3, bpm=BPM), clock=clock,
                    sinks=[recording], harmonizer=engine)
    server.start(threaded=False)
    assert send(server, "/groove/accompany", *MELODY)[0] == "/groove/ack"
    server.run_until(clock.now() + 4.0)
    assert info(server)["harmony_errors"] == 0 and info(server)["harmonies"] == 1
    notes = recording.notes()
    assert {n.voice for n in notes} >= {"soprano"}
    assert sorted({n.pitch for n in notes if n.voice == "soprano"}) == [67, 69, 71, 72]
    for n in notes:
        v = next((v for v in engine.spec.voices if v.name == n.voice), None)
        if v is not None:
            assert v.low_pitch <= n.pitch <= v.high_pitch and n.channel == v.midi_channel


def test_over_udp_the_model_runs_on_the_worker_and_notes_arrive_as_sent():
    from .osc_client import OscClient

    harmonizer = FakeHarmonizer()
    server = Server(FakeEngine(), ServeConfig(port=0, bpm=BPM, seed=3, bar_lookahead_s=0.1),
                    harmonizer=harmonizer, harmonize=harmonize)
    server.start()
    client = OscClient(server.listening)
    try:
        assert client.request("/groove/target").address == "/groove/ack"
        ack = client.request("/groove/accompany", *MELODY)
        assert ack.params == ["/groove/accompany", 32, 28]
        # Notes are sent at their own times: two bars are whole once a third has begun.
        assert client.wait_for(lambda c: len(note_bars(c)) >= 3, timeout_s=8.0)
        assert harmonizer.threads == ["groove-worker"]  # never the OSC or clock thread
        notes = client.messages("/groove/note")
        first = min(m.params[4] for m in notes)
        got = sorted((m.params[0], m.params[1], m.params[4] - first, m.params[5],
                      round(m.params[3] / STEP_S, 3), m.params[6])
                     for m in notes if m.params[4] - first < 2)
        index = {"soprano": 0, "alto": 1, "tenor": 2, "bass": 3}
        assert got == [(v, p, b, s, float(h), index[v]) for v, p, b, s, h in EXPECTED]
    finally:
        client.close()
        server.close()


def test_a_restart_starts_the_loop_again_from_its_first_bar_and_info_fits_a_reply():
    server, clock, _ = offline()
    send(server, "/groove/accompany", *MELODY)  # lands on bar 0
    server.run_until(clock.now() + 2.5)
    assert server.worker.planner.harmony_at(10)[1] == 0
    assert server.timeline.first_free_bar() % 2 == 1  # playing stops after the loop's first bar
    assert send(server, "/groove/stop")[0] == "/groove/ack"
    server.run_until(clock.now() + 1.0)
    restart = server.scheduler.next_bar  # the bar playing starts again on
    assert restart % 2 == 1
    assert send(server, "/groove/start")[0] == "/groove/ack"
    server.run_until(clock.now() + 3.0)
    bars = committed(server)
    assert bars[restart].phrase_bar == 0
    first_loop_bar = [n.pitch for n in bars[restart].notes if n.voice == "soprano"]
    assert first_loop_bar == [67, 69, 71]  # the loop's first bar, not its second
    address, reply = send(server, "/groove/info")
    state = dict(zip(reply[1::2], reply[2::2]))
    assert address == "/groove/ack" and state["harmonizer"] == "fake_harmonizer"
    assert state["harmony"] == 1 and state["harmonies"] == 1 and state["harmony_errors"] == 0


def test_a_harmonizer_on_another_bar_grid_is_refused_in_one_line():
    import dataclasses

    harmonizer = FakeHarmonizer()
    harmonizer.spec = dataclasses.replace(harmonizer.spec, beats_per_bar=3)
    with pytest.raises(ServeError) as e:
        Server(FakeEngine(), ServeConfig(port=None), clock=FakeClock(), harmonizer=harmonizer)
    assert str(e.value) == ("--harmonizer: model fake_harmonizer plays bars of 3 beats in 16 "
                            "steps; the playing model groovae_4bar has 4 beats in 16 steps")
