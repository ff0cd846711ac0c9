"""SuperCollider for real: sclang runs the examples against `groove-live serve` (scsynth on JACK)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from .conftest import need
from .procs import REPO, free_udp_port, kill_pids, serve_argv

pytestmark = [pytest.mark.slow, pytest.mark.clients]
HARNESS = Path(__file__).with_name("sclang") / "run_example.scd"
EXAMPLES = REPO / "examples" / "supercollider"
BPM = 240.0
BAR_S = 4 * 60.0 / BPM


def run_example(procs, jack, tmp_path, example: str, *serve_args: str) -> dict:
    sclang = need("sclang")
    need("scsynth")
    port = free_udp_port()
    server = procs(serve_argv("--port", str(port), "--bpm", str(BPM), *serve_args))
    server.wait_line(r"ready in", timeout_s=20)
    scsynth_port = free_udp_port()
    home = tmp_path / "home"
    home.mkdir()
    env = {**jack, "QT_QPA_PLATFORM": "offscreen", "QTWEBENGINE_DISABLE_SANDBOX": "1",
           "XDG_RUNTIME_DIR": str(tmp_path), "HOME": str(home)}
    client = procs([sclang, str(HARNESS), str(port), str(EXAMPLES / example), str(scsynth_port),
                    "8", "30", str(BAR_S)], env=env)
    try:
        _, line = client.wait_line(r"^(RESULT|TIMEOUT|ERROR) ", timeout_s=60)
    finally:
        client.stop()
        text = client.text()
        pids = [int(m) for m in re.findall(r"scsynth_pid=(\d+)", text)]
        kill_pids(pids)  # sclang asks scsynth to quit; make sure, by its PID
        shm = Path(f"/dev/shm/SuperColliderServer_{scsynth_port}")
        if shm.exists():
            shm.unlink()
    assert line.startswith("RESULT"), client.text()
    return {k: float(v) for k, v in re.findall(r"(\w+)=(-?[\d.e-]+)", line)}


@pytest.mark.timing  # wall-clock thresholds: see .ci/run
def test_sclang_example_receives_hits_within_two_bars_and_plays_them(procs, jack, tmp_path):
    r = run_example(procs, jack, tmp_path, "groove_hits.scd")
    assert r["hits"] >= 8 and r["started"] >= 8  # scsynth started a synth per hit
    assert 0 <= r["first_hit_after_sample_s"] <= 2 * BAR_S


@pytest.mark.timing  # wall-clock thresholds: see .ci/run
def test_sclang_bundles_example_schedules_every_hit_ahead_on_scsynth(procs, jack, tmp_path):
    r = run_example(procs, jack, tmp_path, "groove_bundles.scd", "--bundles", "--latency-ms", "100")
    assert r["hits"] >= 8 and r["started"] >= 8
    assert r["ahead"] == r["hits"] and r["late"] == 0  # every tag still in the future on arrival


TASKS_HARNESS = r"""
// argv: groove_port example_path timeout_s tap_delay_s bpm. Prints RESULT once a take was
// acked, TIMEOUT otherwise; counts the acks and errors the example's requests got.
(
var argv = thisProcess.argv;
var groovePort = argv[0].asInteger, example = argv[1], timeout = argv[2].asFloat;
var humanized = -1, take = -1, errors = 0, taps = 0, done = false;
var report = { |word, code|
    if(done.not) {
        done = true;
        "% humanize=% take=% errors=% tap_acks=%".format(word, humanized, take, errors, taps).postln;
        code.exit;
    }
};
~grooveAddr = NetAddr("127.0.0.1", groovePort);
~grooveTapDelay = argv[3].asFloat;
~grooveBpm = argv[4].asFloat;
OSCFunc({ |msg|
    case
    { msg[1] == '/groove/humanize' } { humanized = msg[2] }
    { msg[1] == '/groove/tap' } { taps = taps + 1 }
    { msg[1] == '/groove/tap/take' } { take = msg[2]; report.("RESULT", 0) };
}, '/groove/ack', ~grooveAddr);
OSCFunc({ |msg| errors = errors + 1; msg.postln }, '/groove/error', ~grooveAddr);
SystemClock.sched(timeout, { report.("TIMEOUT", 1); nil });
try { this.executeFile(example) } { |e| e.reportError; report.("ERROR", 1) };
)
"""
TOY_TASKS = [arg for task in ("humanize", "drumify", "infill") for arg in
             (f"--{task}-model", str(REPO / "tests" / "fixtures" / f"toy_{task}.onnx"))]


def test_sclang_tasks_example_humanizes_and_its_tapped_rhythm_becomes_a_kit(procs, tmp_path):
    from .osc_client import OscClient

    sclang = need("sclang")
    port = free_udp_port()
    listener = OscClient(("127.0.0.1", port))
    try:
        server = procs(serve_argv("--port", str(port), "--bpm", str(BPM), *TOY_TASKS,
                                  "--send", f"127.0.0.1:{listener.port}"))
        server.wait_line(r"ready in", timeout_s=20)
        harness = tmp_path / "run_tasks.scd"
        harness.write_text(TASKS_HARNESS)
        home = tmp_path / "home"
        home.mkdir()
        env = {"QT_QPA_PLATFORM": "offscreen", "QTWEBENGINE_DISABLE_SANDBOX": "1",
               "XDG_RUNTIME_DIR": str(tmp_path), "HOME": str(home)}
        client = procs([sclang, str(harness), str(port), str(EXAMPLES / "groove_tasks.scd"), "30",
                        str(3 * BAR_S), str(BPM)], env=env)
        try:
            _, line = client.wait_line(r"^(RESULT|TIMEOUT|ERROR) ", timeout_s=60)
        finally:
            client.stop()
        assert line.startswith("RESULT"), client.text()
        r = dict(re.findall(r"(\w+)=(-?\d+)", line))
        assert r == {"humanize": "30", "take": "7", "errors": "0", "tap_acks": "7"}, line
        seen = set()

        def sources(c) -> bool:  # asked once per bar groove-live sends
            bars = len(c.messages("/groove/bar"))
            if bars != getattr(sources, "bars", 0):
                sources.bars = bars
                reply = c.request("/groove/info")
                state = dict(zip(reply.params[1::2], reply.params[2::2]))
                seen.add(state["source"])
            return "drumify" in seen
        assert listener.wait_for(sources, timeout_s=12 * BAR_S), seen
        assert "humanize" in seen
    finally:
        listener.close()


ACCOMPANY_HARNESS = r"""
// argv: groove_port example_path scsynth_port want_notes timeout_s. Prints RESULT once
// `want_notes` /groove/note arrived and scsynth started as many synths (and ended them:
// /n_end, each note released after its duration), TIMEOUT otherwise.
(
var argv = thisProcess.argv;
var groovePort = argv[0].asInteger, example = argv[1], scPort = argv[2].asInteger;
var want = argv[3].asInteger, timeout = argv[4].asFloat;
var notes = 0, started = 0, ended = 0, steps = -1, sounding = -1, errors = 0, done = false;
var report = { |word, code|
    if(done.not) {
        done = true;
        "% notes=% started=% ended=% steps=% sounding=% errors=% scsynth_pid=%".format(
            word, notes, started, ended, steps, sounding, errors, s.pid).postln;
        s.quit;
        code.exit;
    }
};
var check = {
    if(notes >= want and: { started >= want } and: { ended >= want }) { report.("RESULT", 0) }
};
~grooveAddr = NetAddr("127.0.0.1", groovePort);
Server.default = s = Server(\grooveTest, NetAddr("127.0.0.1", scPort));
s.options.numInputBusChannels = 0;
s.options.maxLogins = 2;
OSCFunc({ notes = notes + 1; check.() }, '/groove/note', ~grooveAddr);
OSCFunc({ |msg| if(msg[1] == '/groove/accompany') { steps = msg[2]; sounding = msg[3] } },
    '/groove/ack', ~grooveAddr);
OSCFunc({ |msg| errors = errors + 1; msg.postln }, '/groove/error', ~grooveAddr);
OSCFunc({ started = started + 1; check.() }, '/n_go', s.addr);
OSCFunc({ ended = ended + 1; check.() }, '/n_end', s.addr);
SystemClock.sched(timeout, { report.("TIMEOUT", 1); nil });
try { this.executeFile(example) } { |e| e.reportError; report.("ERROR", 1) };
)
"""
TOY_HARMONIZER = REPO / "tests" / "fixtures" / "toy_chorale_harmonizer.onnx"


def test_sclang_accompany_example_plays_every_note_of_its_melody(procs, jack, tmp_path):
    sclang = need("sclang")
    need("scsynth")
    port = free_udp_port()
    server = procs(serve_argv("--port", str(port), "--bpm", str(BPM),
                              "--harmonizer", str(TOY_HARMONIZER)))
    server.wait_line(r"ready in", timeout_s=20)
    harness = tmp_path / "run_accompany.scd"
    harness.write_text(ACCOMPANY_HARNESS)
    scsynth_port = free_udp_port()
    home = tmp_path / "home"
    home.mkdir()
    env = {**jack, "QT_QPA_PLATFORM": "offscreen", "QTWEBENGINE_DISABLE_SANDBOX": "1",
           "XDG_RUNTIME_DIR": str(tmp_path), "HOME": str(home)}
    client = procs([sclang, str(harness), str(port), str(EXAMPLES / "groove_accompany.scd"),
                    str(scsynth_port), "16", "30"], env=env)
    try:
        _, line = client.wait_line(r"^(RESULT|TIMEOUT|ERROR) ", timeout_s=60)
    finally:
        client.stop()
        pids = [int(m) for m in re.findall(r"scsynth_pid=(\d+)", client.text())]
        kill_pids(pids)  # sclang asks scsynth to quit; make sure, by its PID
        shm = Path(f"/dev/shm/SuperColliderServer_{scsynth_port}")
        if shm.exists():
            shm.unlink()
    assert line.startswith("RESULT"), client.text()
    r = {k: int(v) for k, v in re.findall(r"(\w+)=(-?\d+)", line)}
    # The example's melody: 32 steps, all sounding; each note a synth, released in time.
    assert r["steps"] == 32 and r["sounding"] == 32 and r["errors"] == 0, line
    assert r["notes"] >= 16 and r["started"] >= 16 and r["ended"] >= 16, line
