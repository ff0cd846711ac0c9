"""MIDI taps without a MIDI system: what a note does, and one stderr line per new refusal."""
from __future__ import annotations

import mido

from groove_live.live.midi_in import MidiTaps, _match

from .test_task_live import offline, send


class FakePort:
    callback = None

    def close(self):
        self.closed = True


def test_note_ons_of_any_pitch_and_channel_are_taps_and_note_offs_are_not(capsys):
    server, clock, _ = offline()
    server.run_until(clock.now())  # the grid is placed when the clock first runs
    server.run_until(server.scheduler.bar_t_s(1) + 4 / 16)
    port = FakePort()
    taps = MidiTaps(port, "input 'pads' (JACK)", server.tasks)
    assert port.callback == taps._on_message
    port.callback(mido.Message("note_on", note=60, velocity=64, channel=3))
    port.callback(mido.Message("note_on", note=36, velocity=0))  # a note-off
    port.callback(mido.Message("note_off", note=36))
    port.callback(mido.Message("control_change", control=1, value=5))
    assert taps.taps == 1
    take = server.tasks.taps.take
    assert [(t.bar, t.step, round(t.velocity, 3)) for t in take.taps] == [(1, 4, round(64 / 127, 3))]
    send(server, "/groove/stop")
    server.run_until(clock.now() + 0.5)
    for _ in range(5):
        port.callback(mido.Message("note_on", note=38, velocity=100))
    assert taps.refused == 5
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "MIDI tap: not playing" in err[0]
    taps.close()
    assert port.closed


def test_port_names_match_exactly_then_by_prefix_then_by_part():
    names = ["pads:out", "pads-2:out", "system:midi_capture_1"]
    assert _match(names, "pads:out") == ["pads:out"]
    assert _match(names, "pads") == ["pads:out", "pads-2:out"]  # ambiguous: the caller says so
    assert _match(names, "capture_1") == ["system:midi_capture_1"]
    assert _match(names, "nothing") == []
