"""Fixtures for the live-server tests: fake engines, servers on a fake clock, UDP helpers."""
from __future__ import annotations

import select
import uuid

import numpy as np
import pytest

from groove_live.live.clock import FakeClock
from groove_live.live.server import ServeConfig, Server
from groove_live.live.sinks import RecordingSink
from groove_live.pattern import Patterns
from groove_live.spec import ModelSpec

from .fake_engine import FakeEngine
from .procs import Proc, which


class ScriptedEngine:
    """Always decodes the same hand-written phrase (exact times are easy to state)."""

    def __init__(self, hits: list[tuple[int, int, float, float]], spec: ModelSpec | None = None):
        self.spec = spec or ModelSpec(z_size=8)
        self.hits = hits  # (step in phrase, drum, velocity, offset)
        self.calls = 0

    def decode(self, z, temperature=1.0, seed=None) -> Patterns:
        self.calls += 1
        n = np.asarray(z).shape[0]
        p = Patterns.empty(n, self.spec)
        for step, drum, velocity, offset in self.hits:
            p.hits[:, step, drum] = 1.0
            p.velocities[:, step, drum] = velocity
            p.offsets[:, step, drum] = offset
        return p


@pytest.fixture
def fake_engine() -> FakeEngine:
    return FakeEngine()


def offline_server(engine, **config) -> tuple[Server, FakeClock, RecordingSink]:
    """A server on a FakeClock with a recording sink and no socket; drive it with run_until."""
    clock = FakeClock()
    recording = RecordingSink(clock.now)
    config.setdefault("seed", 7)
    server = Server(engine, ServeConfig(port=None, **config), clock=clock, sinks=[recording])
    server.start(threaded=False)
    return server, clock, recording


# --- real clients ---------------------------------------------------------------------------


def need(binary: str) -> str:
    path = which(binary)
    if path is None:
        pytest.skip(f"{binary} is not installed here (.ci/install_clients.sh installs it in CI)")
    return path


@pytest.fixture
def procs():
    """Start processes that are all stopped by PID at teardown, newest first."""
    started: list[Proc] = []

    def start(argv, **kw) -> Proc:
        p = Proc(argv, **kw)
        started.append(p)
        return p
    yield start
    for p in reversed(started):
        p.stop()


@pytest.fixture
def jack(procs, tmp_path) -> dict:
    """A private JACK dummy server; returns the environment clients need to reach it."""
    jackd = need("jackd")
    name = f"groove-test-{uuid.uuid4().hex[:8]}"
    env = {"JACK_DEFAULT_SERVER": name}
    server = procs([jackd, "-n", name, "--no-realtime", "-d", "dummy", "-r", "48000", "-p", "64"],
                   env=env)
    waiter = Proc([need("jack_wait"), "-s", name, "-w", "-t", "15"], env=env)
    rc = waiter.wait_exit(timeout_s=20)
    assert rc == 0 and server.popen.poll() is None, f"jackd did not start:\n{server.text()}"
    return env


class OfflineUdpServer:
    """A server on a FakeClock with a real UDP socket: tests run the clock with run_until and
    hand it the datagrams that arrived with handle(n), so what it sends is exact."""

    def __init__(self, host: str = "127.0.0.1", engine=None, **config) -> None:
        self.clock = FakeClock()
        self.recording = RecordingSink(self.clock.now)
        config.setdefault("seed", 3)
        config.setdefault("bpm", 240.0)  # one bar a second
        config.setdefault("bar_lookahead_s", 0.1)
        self.server = Server(engine or FakeEngine(), ServeConfig(host=host, port=0, **config),
                             clock=self.clock, sinks=[self.recording])
        self.server.start(threaded=False)
        self.port = self.server.listening[1]
        self.handled = 0

    def handle(self, n: int, timeout_s: float = 2.0) -> None:
        """Handle exactly the next `n` datagrams, waiting for each (they are in flight)."""
        target = self.handled + n
        while self.handled < target:
            if not select.select([self.server.sock], [], [], timeout_s)[0]:
                raise AssertionError(f"{target - self.handled} datagrams never arrived")
            self.handled += self.server.pump_osc()
        assert self.handled == target, f"{self.handled - target} datagrams more than expected"

    def run_until(self, t_s: float) -> None:
        self.server.run_until(t_s)

    def close(self) -> None:
        self.server.close()
