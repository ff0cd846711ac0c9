"""Sonic Pi for real: its headless server runs examples/sonic_pi/groove.rb against groove-live.

Sonic Pi reports what it played to its GUI port (/log/multi_message, one per live_loop pass,
one line per `sample`); the test stands in for the GUI and compares that with the bars
groove-live sent. Boot rules from REAL_CLIENTS.md: settings.json with no_update_checking
before the first boot, a temporary HOME and TMPDIR, never /version or /check-for-updates-now,
every process it starts stopped by PID.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from .conftest import need
from .osc_client import OscClient
from .procs import REPO, free_udp_port, kill_pids, serve_argv

pytestmark = [pytest.mark.slow, pytest.mark.clients]
SONIC_PI_SERVER = Path("/usr/lib/sonic-pi/app/server/ruby/bin/sonic-pi-server.rb")
EXAMPLE = REPO / "examples" / "sonic_pi" / "groove.rb"
BPM = 240.0
BAR_S = 1.0
GUI_ID = "groove-live-test"
SAMPLES = {"kick": "bd_haus", "snare": "sn_dolf", "closed_hihat": "drum_cymbal_closed",
           "open_hihat": "drum_cymbal_open", "low_tom": "drum_tom_lo_hard",
           "mid_tom": "drum_tom_mid_hard", "high_tom": "drum_tom_hi_hard",
           "crash": "drum_splash_hard", "ride": "drum_cymbal_soft"}


@pytest.fixture
def sonic_pi(procs, jack, tmp_path):
    """A booted headless Sonic Pi server on free ports; yields (control, gui, cue_port)."""
    ruby = need("ruby")
    if not SONIC_PI_SERVER.exists():
        pytest.skip("Sonic Pi is not installed here (.ci/install_clients.sh installs it in CI)")
    home = tmp_path / "home"
    (home / ".sonic-pi").mkdir(parents=True)
    # Before the first boot, or the server goes looking for updates on the internet.
    (home / ".sonic-pi" / "settings.json").write_text(json.dumps({"no_update_checking": True}))
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    gui = OscClient(("127.0.0.1", 9))  # stands in for the GUI: logs and errors arrive here
    server_port, scsynth_port, cue_port, erlang_port, midi_out, midi_in, ws = (
        free_udp_port() for _ in range(7))
    argv = [ruby, str(SONIC_PI_SERVER), "-u", str(server_port), str(gui.port), str(scsynth_port),
            str(scsynth_port), str(cue_port), str(erlang_port), str(midi_out), str(midi_in), str(ws)]
    server = procs(argv, env={**jack, "HOME": str(home), "TMPDIR": str(tmp)})
    control = OscClient(("127.0.0.1", server_port))
    try:
        server.wait_line(r"Sonic Pi Server successfully booted", timeout_s=60)
        open_cue_port(control, gui, cue_port)
        yield control, gui, cue_port
    finally:
        # Sonic Pi records the PIDs of what it spawned (scsynth, beam.smp, o2m, m2o).
        children = [int(p.name) for p in (tmp / "sonic-pi-pids").glob("*") if p.name.isdigit()]
        control.send("/exit", GUI_ID)
        try:
            server.wait_exit(timeout_s=10)
        except Exception:
            pass
        server.stop()
        kill_pids(children)
        control.close()
        gui.close()


def open_cue_port(control, gui, cue_port, requests: int = 10) -> None:
    """Let OSC from 127.0.0.1 into Sonic Pi, and see a probe come through before going on.

    The GUI's two messages are relayed by the Ruby server to the Erlang cue server, which then
    opens the port a moment later. Right after boot the request is sometimes lost on the way
    (6 boots of 30 on a loaded machine: the port stayed closed and the example waited forever
    on its first sync). A probe that shows up as /incoming/osc proves the path is open; probes
    go every 0.25 s, and the request is repeated every 2 s until one does."""
    probe = OscClient(("127.0.0.1", cue_port))

    def probed(g) -> bool:
        return any("/groove-live-test/probe" in str(m.params) for m in g.messages("/incoming/osc"))
    try:
        for request in range(1, requests + 1):
            control.send("/cue-port-internal", GUI_ID)  # cues from 127.0.0.1 only
            control.send("/cue-port-start", GUI_ID)
            for _ in range(8):
                probe.send("/groove-live-test/probe", request)
                if gui.wait_for(probed, timeout_s=0.25):
                    print(f"Sonic Pi cue port open after {request} request(s)")
                    return
        pytest.fail(f"Sonic Pi's cue port {cue_port} let no OSC in after {requests} requests")
    finally:
        probe.close()


def sonic_pi_log(gui):
    """From Sonic Pi's GUI log: the logical times of the :groove loop's passes (each right
    after its sync on /groove/bar) and every sample it played as (logical time, name, amp).
    A sample inside time_warp is logged on its own, at its own (warped) logical time."""
    pass_times, samples = [], []
    for m in gui.messages("/log/multi_message"):
        t = float(m.params[2])
        texts = [x for x in m.params[5::2] if isinstance(x, str)]
        if m.params[1] == ":live_loop_groove" and any(x.startswith("synced") for x in texts):
            pass_times.append(t)
        for text in texts:
            if text.startswith("sample "):
                name = re.search(r'"(\w+)\.flac"', text)
                amp = re.search(r"amp: ([\d.]+)", text)
                samples.append((t, name.group(1), float(amp.group(1))))
    return pass_times, samples


@pytest.mark.timing  # wall-clock thresholds: see .ci/run
def test_sonic_pi_example_plays_the_hits_of_each_bar(procs, sonic_pi):
    control, gui, cue_port = sonic_pi
    port = free_udp_port()
    listener = OscClient(("127.0.0.1", port))
    try:
        server = procs(serve_argv("--port", str(port), "--bpm", str(BPM),
                                  "--send", f"127.0.0.1:{cue_port}",
                                  "--send", f"127.0.0.1:{listener.port}"))
        server.wait_line(r"ready in", timeout_s=20)
        # The example as a user pastes it; only groove-live's port differs (a free one here).
        code = EXAMPLE.read_text().replace('use_osc "127.0.0.1", 57120',
                                           f'use_osc "127.0.0.1", {port}')
        control.send("/run-code", GUI_ID, code)
        assert gui.wait_for(lambda g: len(sonic_pi_log(g)[0]) >= 5, timeout_s=30), "\n".join(
            f"{m.address} {m.params}" for m in gui.messages()[-20:]) + "\nsent: " + ", ".join(
            m.address for m in listener.messages()[-20:])
        errors = gui.messages("/error") + gui.messages("/syntax_error")
        assert not errors, [e.params for e in errors]
        pass_times, samples = sonic_pi_log(gui)
        # What groove-live sent: per bar, (sample, velocity, seconds after the downbeat).
        sent = []
        for m in listener.messages("/groove/bar"):
            flat = m.params[2:]
            sent.append([(SAMPLES[flat[i]], flat[i + 2], flat[i + 4]) for i in range(0, len(flat), 5)])

        def played_as_sent(pass_t, bar_hits) -> bool:
            for name, velocity, t_s in bar_hits:
                if not any(n == name and abs(tau - (pass_t + t_s)) < 0.0011 and
                           abs(amp - velocity) < 0.0011 for tau, n, amp in samples):
                    return False
            return True
        # Pass k played bar j + k: each hit at the pass's time plus its micro-timed offset.
        complete = pass_times[:-1]  # the last pass may still be playing
        firsts = [j for j in range(len(sent)) if sent[j] and played_as_sent(complete[0], sent[j])]
        assert firsts, (complete[0], samples[:10], sent[:3])
        j = firsts[0]
        for k, pass_t in enumerate(complete):
            assert j + k < len(sent) and played_as_sent(pass_t, sent[j + k]), (k, pass_t)
        assert sum(len(sent[j + k]) for k in range(len(complete))) >= 8
        # Passes follow groove-live's bar line: one per bar (cue arrival jitter only).
        gaps = [b - a for a, b in zip(pass_times, pass_times[1:])]
        assert all(abs(g - BAR_S) < 0.03 for g in gaps), gaps
    finally:
        listener.close()


TASKS_EXAMPLE = REPO / "examples" / "sonic_pi" / "tasks.rb"
TOY_TASKS = [arg for task in ("humanize", "drumify", "infill") for arg in
             (f"--{task}-model", str(REPO / "tests" / "fixtures" / f"toy_{task}.onnx"))]


def info(client) -> dict:
    reply = client.request("/groove/info")
    return dict(zip(reply.params[1::2], reply.params[2::2]))


def test_sonic_pi_tasks_example_humanizes_its_beat_and_its_taps_become_a_kit(procs, sonic_pi):
    control, gui, cue_port = sonic_pi
    port = free_udp_port()
    listener = OscClient(("127.0.0.1", port))
    try:
        server = procs(serve_argv("--port", str(port), "--bpm", str(BPM), *TOY_TASKS,
                                  "--send", f"127.0.0.1:{cue_port}",
                                  "--send", f"127.0.0.1:{listener.port}"))
        server.wait_line(r"ready in", timeout_s=20)
        assert info(listener)["tasks"] == "humanize,drumify,infill", server.text()
        code = TASKS_EXAMPLE.read_text().replace('use_osc "127.0.0.1", 57120',
                                                 f'use_osc "127.0.0.1", {port}')
        control.send("/run-code", GUI_ID, code)
        seen = set()

        def progressed(c) -> bool:  # asked once per bar groove-live sends
            bars = len(c.messages("/groove/bar"))
            if bars != getattr(progressed, "bars", 0):
                progressed.bars = bars
                state = info(c)
                seen.add(state["source"])
                progressed.state = state
            return "drumify" in seen
        assert listener.wait_for(progressed, timeout_s=30), (seen, server.text())
        state = progressed.state
        assert state["takes"] == 1 and state["take_errors"] == 0 and state["decode_errors"] == 0
        assert "humanize" in seen  # the beat played before the taps' kit replaced it
        errors = gui.messages("/error") + gui.messages("/syntax_error")
        assert not errors, [e.params for e in errors]
        # Sonic Pi's cue log got the acks: the beat (30 hits in 2 bars) and a take of 7 taps.
        acks = [m.params for m in gui.messages("/incoming/osc") if "/groove/ack" in str(m.params)]
        assert any("/groove/humanize" in str(p) and "30" in str(p) for p in acks), acks
        assert any(p[3].startswith('["/groove/tap/take", 7,') for p in acks), acks
        # Each tap reached groove-live on the 16th it was written for, all in one bar.
        taps = [json.loads(p[3]) for p in acks if p[3].startswith('["/groove/tap", ')]
        assert sorted(t[2] for t in taps) == [0, 3, 6, 8, 10, 11, 14], taps
        assert len({t[1] for t in taps}) == 1 and all(abs(t[3]) < 0.4 for t in taps), taps
    finally:
        listener.close()


ACCOMPANY_EXAMPLE = REPO / "examples" / "sonic_pi" / "accompany.rb"
TOY_HARMONIZER = REPO / "tests" / "fixtures" / "toy_chorale_harmonizer.onnx"


def sonic_pi_synths(gui) -> list[tuple[float, str, float]]:
    """From Sonic Pi's GUI log: every synth it played as (logical time, synth, note)."""
    played = []
    for m in gui.messages("/log/multi_message"):
        for text in (x for x in m.params[5::2] if isinstance(x, str)):
            found = re.match(r"synth :(\w+), \{note: ([\d.]+)", text)
            if found:
                played.append((float(m.params[2]), found.group(1), float(found.group(2))))
    return played


def test_sonic_pi_accompany_example_plays_every_voice_of_its_melody(procs, sonic_pi):
    control, gui, cue_port = sonic_pi
    port = free_udp_port()
    listener = OscClient(("127.0.0.1", port))
    try:
        server = procs(serve_argv("--port", str(port), "--bpm", str(BPM),
                                  "--harmonizer", str(TOY_HARMONIZER),
                                  "--send", f"127.0.0.1:{cue_port}",
                                  "--send", f"127.0.0.1:{listener.port}"))
        server.wait_line(r"ready in", timeout_s=20)
        code = ACCOMPANY_EXAMPLE.read_text().replace('use_osc "127.0.0.1", 57120',
                                                     f'use_osc "127.0.0.1", {port}')
        control.send("/run-code", GUI_ID, code)
        # Notes sent in 5 bars: the 2-bar loop over twice.
        def note_bars(c) -> int:
            return len({m.params[4] for m in c.messages("/groove/note")})
        assert listener.wait_for(lambda c: note_bars(c) >= 5, timeout_s=30), server.text()
        sent = listener.messages("/groove/note")
        assert gui.wait_for(lambda g: len(sonic_pi_synths(g)) >= len(sent), timeout_s=5), (
            len(sonic_pi_synths(gui)), len(sent))
        errors = gui.messages("/error") + gui.messages("/syntax_error")
        assert not errors, [e.params for e in errors]
        acks = [m.params for m in gui.messages("/incoming/osc") if "/groove/ack" in str(m.params)]
        assert any(p[3] == '["/groove/accompany", 32, 32]' for p in acks), acks
        played = sonic_pi_synths(gui)
        # The melody on :pulse (Ode to Joy's pitches), the written voices on :tri: what was sent.
        assert {n for _, s, n in played if s == "pulse"} == {62.0, 64.0, 65.0, 67.0}
        assert {n for _, s, n in played} <= {float(m.params[1]) for m in sent}
        voices = {m.params[0] for m in sent}
        assert "soprano" in voices and voices <= {"soprano", "alto", "tenor", "bass"}, voices
    finally:
        listener.close()
