"""Example helpers fail as a user would want: one line saying what to try, no traceback."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

MONITOR = Path(__file__).resolve().parents[1] / "examples" / "ableton" / "midi_monitor.py"


@pytest.mark.parametrize("backend", [[], ["--jack"]], ids=["alsa", "jack"])
def test_midi_monitor_without_its_port_says_one_line(backend):
    # Whether this box has no ALSA sequencer / JACK server, or has one without this port,
    # the monitor must end with a single line of its own.
    r = subprocess.run([sys.executable, str(MONITOR), "--port", "no-such-port-groove-test",
                        "--timeout", "0.3", *backend], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("midi_monitor: "), r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("folder", ["sonic_pi", "supercollider", "ableton"])
def test_every_example_folder_has_a_readme(folder):
    readme = MONITOR.parents[1] / folder / "README.md"
    assert readme.is_file()
    assert "groove-live serve" in readme.read_text()


@pytest.mark.parametrize("example", ["sonic_pi/groove.rb", "sonic_pi/tasks.rb",
                                     "sonic_pi/accompany.rb",
                                     "supercollider/groove_hits.scd",
                                     "supercollider/groove_bundles.scd",
                                     "supercollider/groove_tasks.scd",
                                     "supercollider/groove_accompany.scd"])
def test_examples_only_send_addresses_the_server_answers(example):
    import re

    from groove_live.live.osc_api import OUTPUT_ADDRESSES, OscApi
    from groove_live.spec import ModelSpec

    class Controls:
        spec = ModelSpec()
    routes = set(OscApi(Controls()).routes)
    text = (MONITOR.parents[1] / example).read_text()
    used = set(re.findall(r"[\"'](/groove/[a-z/]+)[\"']", text))
    assert used, example
    unknown = used - routes - OUTPUT_ADDRESSES - {"/groove/tap/take"}  # the take's ack names it
    assert not unknown, f"{example} sends {unknown}, which groove-live does not answer"
