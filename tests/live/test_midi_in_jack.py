"""`serve --midi-in` for real: note-ons sent into the server's MIDI input on a JACK dummy
server are taps; the take's drumified kit comes out over OSC from the next phrase start."""
from __future__ import annotations

import sys
import uuid

import pytest

from .osc_client import OscClient
from .procs import REPO, free_udp_port

pytestmark = [pytest.mark.slow, pytest.mark.clients]
BPM = 240.0
# `groove-live serve` itself, with the tests' fake sampling engine and fake task models (their
# drumify answer is known: a kick on every tapped step, a snare on 4 and 12 of every bar).
LAUNCHER = f"""
import sys
sys.path.insert(0, {str(REPO / "tests")!r})
from live.fake_engine import FakeEngine
from live.test_task_live import task_engines
from groove_live.live import cli
cli._engine_factory = lambda model: FakeEngine
cli._task_engines_factory = lambda config: (lambda engine: task_engines())
cli.serve.main(args=sys.argv[1:], prog_name="groove-live serve")
"""


def test_note_ons_into_the_midi_input_are_taps_and_the_kit_plays_from_the_next_phrase(
        procs, jack, tmp_path, monkeypatch):
    pytest.importorskip("rtmidi")
    import mido

    for key, value in jack.items():
        monkeypatch.setenv(key, value)
    name = f"gl-pads-{uuid.uuid4().hex[:6]}"
    pads = mido.Backend("mido.backends.rtmidi/UNIX_JACK").open_output(name, virtual=True,
                                                                     client_name=name)
    launcher = tmp_path / "serve.py"
    launcher.write_text(LAUNCHER)
    port = free_udp_port()
    listener = OscClient(("127.0.0.1", port))
    try:
        server = procs([sys.executable, str(launcher), "--port", str(port), "--bpm", str(BPM),
                        "--bar-lookahead-ms", "100", "--tap-bars", "1", "--midi-in", name,
                        "--send", f"127.0.0.1:{listener.port}"], env=jack)
        server.wait_line(r"ready in", timeout_s=20)
        assert f"taps from MIDI input '{name}" in server.text("out"), server.text()
        assert "drumify: model drumify" in server.text("out")
        # Tap early in a bar (right after a hit of its first half) so the taps share a bar.
        assert listener.wait_for(lambda c: any(2 <= m.params[4] <= 7 for m in c.messages("/groove/hit")),
                                 timeout_s=5)
        for velocity, pitch, channel in ((100, 36, 9), (60, 60, 0), (127, 40, 3)):
            pads.send(mido.Message("note_on", note=pitch, velocity=velocity, channel=channel))
        pads.send(mido.Message("note_on", note=36, velocity=0))  # a note-off: not a tap

        def kit_bars(c):
            by_bar: dict[int, set] = {}
            for m in c.messages("/groove/hit"):
                by_bar.setdefault(m.params[3], set()).add((m.params[0], m.params[4]))
            return {bar: hits for bar, hits in by_bar.items()
                    if {("snare", 4), ("snare", 12)} <= hits
                    and {v for v, _ in hits} == {"kick", "snare"}}
        assert listener.wait_for(lambda c: len(kit_bars(c)) >= 2, timeout_s=12), (
            server.text(), [m.params for m in listener.messages("/groove/hit")][-20:])
        bars = kit_bars(listener)
        first = min(bars)
        assert first % 4 == 0  # a phrase start (the server's phrase is 4 bars)
        kicks = {s for v, s in bars[first] if v == "kick"}
        assert 1 <= len(kicks) <= 3  # the three taps, some perhaps on one 16th
        assert bars[first + 1] == bars[first]  # a 1-bar take repeats
        assert "MIDI tap" not in server.text("err")
        assert "groove-live: drumifying 3 taps from bar" in server.text("err")
    finally:
        listener.close()
        pads.close()
