"""Fixtures for the live-server tests: fake engines, servers on a fake clock, UDP helpers."""
from __future__ import annotations

import numpy as np
import pytest

from groove_live.live.clock import FakeClock
from groove_live.live.server import ServeConfig, Server
from groove_live.live.sinks import RecordingSink
from groove_live.pattern import Patterns
from groove_live.spec import ModelSpec

from .fake_engine import FakeEngine


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
