"""The Ableton path for real: `--midi-virtual` on a JACK dummy server, read by a mido input."""
from __future__ import annotations

import re
import sys
import uuid

import pytest

from .osc_client import OscClient
from .procs import REPO, free_udp_port, serve_argv

pytestmark = [pytest.mark.slow, pytest.mark.clients]
MONITOR = REPO / "examples" / "ableton" / "midi_monitor.py"
BPM = 240.0


@pytest.mark.timing  # wall-clock thresholds: see .ci/run
def test_virtual_port_notes_reach_a_jack_midi_input_on_channel_10(procs, jack):
    name = f"gl-{uuid.uuid4().hex[:6]}"
    port = free_udp_port()
    listener = OscClient(("127.0.0.1", port))
    try:
        server = procs(serve_argv("--port", str(port), "--bpm", str(BPM), "--midi-virtual", name,
                                  "--send", f"127.0.0.1:{listener.port}"), env=jack)
        server.wait_line(r"ready in", timeout_s=20)
        assert f"virtual port '{name}' (JACK)" in server.text("out")
        monitor = procs([sys.executable, str(MONITOR), "--port", name, "--jack", "--count", "24"],
                        env=jack)
        monitor.wait_line(r"^listening on", timeout_s=15)
        assert monitor.wait_exit(timeout_s=20) == 0, monitor.text()
        notes = re.findall(r"note_on ch(\d+) (\d+) (\w+) vel (\d+) t ([\d.]+)", monitor.text("out"))
        assert len(notes) == 24
        assert {ch for ch, *_ in notes} == {"10"}
        assert all(1 <= int(v) <= 127 for *_, v, _ in notes)
        assert {n for _, _, n, _, _ in notes} <= {"kick", "snare", "closed_hihat", "open_hihat",
                                                  "low_tom", "mid_tom", "high_tom", "crash", "ride"}
        # The same hits went out over OSC; MIDI and OSC agree on what played, in order.
        osc = [(m.params[1], m.arrival_s) for m in listener.messages("/groove/hit")]
        midi = [(int(p), float(t)) for _, p, _, _, t in notes]
        # Hits that share an intended time may leave in either order, so match each MIDI note to
        # the nearest unused OSC hit of the same drum instead of aligning two sequences.
        used: set[int] = set()
        gaps = []
        for pitch, t_m in midi:
            candidates = [i for i, (p, t_o) in enumerate(osc) if p == pitch and i not in used]
            assert candidates, f"MIDI note {pitch} at {t_m:.4f} never went out over OSC: {osc}"
            best = min(candidates, key=lambda i: abs(osc[i][1] - t_m))
            used.add(best)
            gaps.append(abs(osc[best][1] - t_m))
        gaps.sort()
        # Both left at the same intended time: they arrive a JACK period (~1.3 ms) apart, plus
        # however late the monitor (a normal-priority Python process) reads them on a busy box.
        assert gaps[len(gaps) // 2] < 0.005 and gaps[-1] < 0.05, gaps
        # MIDI kept the order in time: notes never arrive before an earlier one.
        assert [t for _, t in midi] == sorted(t for _, t in midi)
    finally:
        listener.close()
