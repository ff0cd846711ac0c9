"""`groove-live serve` end to end from a venv that has only the runtime's packages: torch is not
there at all, so a stray import of it anywhere on the way to music would end the run."""
from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from pythonosc.osc_message_builder import build_msg

from .osc_client import OscClient
from .procs import REPO, Proc, free_udp_port

pytestmark = pytest.mark.slow
TRAINING_ONLY = {"torch", "pretty_midi", "pretty-midi", "onnx", "tensorboard"}


def runtime_distributions() -> list[metadata.Distribution]:
    """groove-live's own requirements, and theirs, without any extra (train, dev, gpu)."""
    seen: dict[str, metadata.Distribution] = {}
    todo = ["groove-live"]
    while todo:
        name = todo.pop()
        key = name.lower().replace("_", "-")
        if key in seen:
            continue
        dist = metadata.distribution(name)
        seen[key] = dist
        for text in dist.requires or ():
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return [d for k, d in seen.items() if k != "groove-live"]


def top_level_paths(dist: metadata.Distribution) -> set[Path]:
    """What a distribution put in site-packages: its top-level packages, modules, metadata."""
    out = set()
    for f in dist.files or ():
        parts = Path(f).parts
        if not parts or parts[0] in ("..", "__pycache__") or parts[0].endswith(".pth"):
            continue
        path = Path(dist.locate_file(parts[0]))
        if path.exists():
            out.add(path)
    return out


@pytest.fixture(scope="module")
def runtime_venv(tmp_path_factory) -> Path:
    """A fresh venv whose site-packages holds links to the runtime's packages and groove_live
    (the source tree); returns its python."""
    root = tmp_path_factory.mktemp("runtime_venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True,
                   timeout=120)
    python = root / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c",
                                "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    links = {REPO / "groove_live"}
    for dist in runtime_distributions():
        assert dist.metadata["Name"].lower() not in TRAINING_ONLY, dist.metadata["Name"]
        links |= top_level_paths(dist)
    for path in links:
        assert path.name.split(".")[0].split("-")[0].lower() not in TRAINING_ONLY, path
        (site / path.name).symlink_to(path)
    return python


def test_the_runtime_venv_really_has_no_torch(runtime_venv):
    probe = subprocess.run([str(runtime_venv), "-c", "import torch"], capture_output=True,
                           text=True, timeout=60)
    assert probe.returncode != 0 and "No module named 'torch'" in probe.stderr, probe.stderr


def test_serve_answers_info_plays_hits_and_stops_without_torch(runtime_venv):
    port = free_udp_port()
    listener = OscClient(("127.0.0.1", port))
    client = OscClient(("127.0.0.1", port))
    argv = [str(runtime_venv), "-c", "import sys; from groove_live.cli import main; "
            "sys.argv[0] = 'groove-live'; main()", "serve", "--port", str(port), "--bpm", "240",
            "--bar-lookahead-ms", "100", "--send", f"127.0.0.1:{listener.port}", "--seed", "1"]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    p = Proc(argv, env=env)
    try:
        p.wait_line(r"ready in", timeout_s=60)
        out = p.text("out")
        assert f"listening for OSC on udp 127.0.0.1:{port}" in out, p.text()
        assert f"sending OSC -> 127.0.0.1:{listener.port}" in out, p.text()
        info = client.request("/groove/info").params
        info = dict(zip(info[1::2], info[2::2]))
        assert info["model"] == "groovae" and info["playing"] == 1, info
        assert info["voices"].split(",")[0] == "kick"
        # A whole bar of hits reaches the --send target: hits of a later bar have arrived too.
        assert listener.wait_for(
            lambda c: len({m.params[3] for m in c.messages("/groove/hit")}) >= 3,
            timeout_s=10.0), p.text()
        first_full = sorted({m.params[3] for m in listener.messages("/groove/hit")})[1]
        bar = [m.params for m in listener.messages("/groove/hit") if m.params[3] == first_full]
        assert bar and all(0 <= step < 16 for *_, step in bar)
        # Garbage gets one error each and changes nothing.
        for datagram in (b"", b"\xff" * 13, build_msg("/groove/tempo", ["fast"]).dgram):
            client.send_raw(datagram)
        assert client.wait_for(lambda c: len(c.messages("/groove/error")) >= 3, timeout_s=5.0)
        assert client.request("/groove/ping", 1).params == ["/groove/ping", 1]
        assert p.popen.poll() is None
    finally:
        rc = p.stop()  # SIGTERM by PID, as a service manager would
        client.close()
        listener.close()
    assert rc == 0, p.text()
    assert "groove-live: stopped" in p.text("out")
    assert "Traceback" not in p.text() and "torch" not in p.text(), p.text()
