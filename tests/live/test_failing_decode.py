"""A sampling decode that fails on the worker: counted, reported, and the music goes on."""
from __future__ import annotations

import numpy as np

from groove_live.live.osc_wire import decode_message, encode_message

from .conftest import offline_server
from .fake_engine import FakeEngine


class FlakyEngine(FakeEngine):
    """Fails every decode after `good` successful ones, until `heal()`."""

    def __init__(self, good: int) -> None:
        super().__init__()
        self.good = good
        self.failing = False

    def decode(self, z, temperature=1.0, seed=None):
        if self.failing or self.good <= 0:
            self.failing = True
            raise RuntimeError("the model exploded")
        self.good -= 1
        return super().decode(z, temperature, seed)

    def heal(self) -> None:
        self.failing, self.good = False, 10**9


def _hits_in(recording, t0_s: float, t1_s: float) -> int:
    return sum(1 for e in recording.hits() if t0_s <= e.t_s < t1_s)


def test_a_failing_decode_keeps_the_playing_groove_and_is_reported():
    engine = FlakyEngine(good=64)
    server, clock, recording = offline_server(engine, bpm=240.0)
    server.run_until(clock.now() + 4.0)  # first phrase decoded and playing
    engine.failing = True
    reply = server.handle_datagram(encode_message("/groove/sample", [1.0, 99]), None)
    assert decode_message(reply[0]).address == "/groove/ack"  # accepted: it fails later
    t0_s = clock.now()
    server.run_until(t0_s + 16.0)  # 16 bars at 240 bpm
    info = dict(server.info())
    assert info["decode_errors"] >= 1
    assert "model exploded" in server.worker.last_error
    # No bar went silent or missing: the groove that was playing went on.
    assert info["missed_bars"] == 0
    assert _hits_in(recording, t0_s, t0_s + 16.0) > 0
    engine.heal()
    server.handle_datagram(encode_message("/groove/sample", [1.0, 100]), None)
    server.run_until(clock.now() + 16.0)
    assert dict(server.info())["decodes"] > 0
    assert np.isfinite(dict(server.info())["decode_max_ms"])
