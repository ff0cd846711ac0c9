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


def test_sclang_example_receives_hits_within_two_bars_and_plays_them(procs, jack, tmp_path):
    r = run_example(procs, jack, tmp_path, "groove_hits.scd")
    assert r["hits"] >= 8 and r["started"] >= 8  # scsynth started a synth per hit
    assert 0 <= r["first_hit_after_sample_s"] <= 2 * BAR_S


def test_sclang_bundles_example_schedules_every_hit_ahead_on_scsynth(procs, jack, tmp_path):
    r = run_example(procs, jack, tmp_path, "groove_bundles.scd", "--bundles", "--latency-ms", "100")
    assert r["hits"] >= 8 and r["started"] >= 8
    assert r["ahead"] == r["hits"] and r["late"] == 0  # every tag still in the future on arrival
