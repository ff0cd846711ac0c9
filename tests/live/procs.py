"""Subprocess helpers for the live tests: the real `groove-live serve`, jackd, output capture.

Every process started here is stopped by its own PID (SIGTERM, then SIGKILL) in teardown.
"""
from __future__ import annotations

import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TOY_MODEL = REPO / "tests" / "fixtures" / "toy_model.onnx"
# GROOVE_LIVE_TEST_ENGINE=fake runs the same serve command with the test's FakeEngine, for
# working on the server before a model exists. CI leaves it unset: the real engine and model.
FAKE = os.environ.get("GROOVE_LIVE_TEST_ENGINE") == "fake"


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_EPHEMERAL_LOW = _ephemeral_low()
_handed_out: set[int] = set()
_port_rng = random.Random(os.getpid())


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1, free now, for a process we start to bind later.

    Chosen below the kernel's ephemeral range: a port from bind(0) is one the kernel may hand
    to any other socket (every unbound sendto) before the child binds it, and Sonic Pi then
    refuses to boot ("Port N unavailable"). Ports here are only ever taken on purpose.
    """
    low = 20000 if _EPHEMERAL_LOW > 21000 else 1024
    for _ in range(1000):
        port = _port_rng.randrange(low, _EPHEMERAL_LOW)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free UDP port in {low}-{_EPHEMERAL_LOW}")


def serve_argv(*args: str, model: bool = True) -> list[str]:
    """argv for `groove-live serve ARGS` (with the toy model unless model=False)."""
    if FAKE:
        return [sys.executable, str(Path(__file__).with_name("fake_serve.py")), *args]
    script = Path(sys.executable).with_name("groove-live")
    cmd = [str(script)] if script.exists() else [
        sys.executable, "-c", "from groove_live.cli import main; main()"]
    extra = ["--model", str(TOY_MODEL)] if model else []
    return [*cmd, "serve", *extra, *args]


class Proc:
    """A child process whose stdout/stderr lines are collected as they come."""

    def __init__(self, argv: list[str], env: dict | None = None, cwd: Path | None = None) -> None:
        self.argv = argv
        self.t_start_s = time.monotonic()
        self.popen = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})}, cwd=cwd or REPO, text=True, bufsize=1)
        self.pid = self.popen.pid
        self.lines: list[tuple[float, str, str]] = []  # (monotonic, "out"/"err", line)
        self._cond = threading.Condition()
        self._eof = 0  # streams fully read (2: the process is gone and all output is in)
        self._readers = [threading.Thread(target=self._read, args=(stream, name), daemon=True)
                         for stream, name in ((self.popen.stdout, "out"), (self.popen.stderr, "err"))]
        for t in self._readers:
            t.start()

    def _read(self, stream, name: str) -> None:
        for line in stream:
            with self._cond:
                self.lines.append((time.monotonic(), name, line.rstrip("\n")))
                self._cond.notify_all()
        with self._cond:
            self._eof += 1
            self._cond.notify_all()

    def text(self, which: str | None = None) -> str:
        with self._cond:
            return "\n".join(l for _, n, l in self.lines if which is None or n == which)

    def wait_line(self, pattern: str, timeout_s: float, which: str | None = None) -> tuple[float, str]:
        """The first line matching `pattern` and when it came; fails if the process ends first."""
        rx = re.compile(pattern)

        def found():
            for t, n, l in self.lines:
                if (which is None or n == which) and rx.search(l):
                    return t, l
            return None
        with self._cond:
            self._cond.wait_for(lambda: found() is not None or self._eof == 2, timeout_s)
            hit = found()
        if hit is None:
            raise AssertionError(f"no line matching {pattern!r} within {timeout_s} s "
                                 f"(exit status {self.popen.poll()}):\n{self.text()}")
        return hit

    def wait_exit(self, timeout_s: float) -> int:
        rc = self.popen.wait(timeout=timeout_s)
        for t in self._readers:
            t.join(timeout=2.0)
        return rc

    def stop(self, timeout_s: float = 5.0) -> int | None:
        if self.popen.poll() is None:
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.popen.wait(timeout=timeout_s)
        for t in self._readers:
            t.join(timeout=2.0)
        return self.popen.returncode


def kill_pids(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + 5.0
    for pid in pids:
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)  # polling a PID's exit: there is no event to wait on
        if _alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of ours is dead for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def which(name: str) -> str | None:
    return shutil.which(name)
