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
