"""The OSC thread's CPU budget: exact bucket arithmetic on given times, and a real server that
stops reading when a burst spends its share, then answers again."""
from __future__ import annotations

import pytest
from pythonosc.osc_message_builder import build_msg

from groove_live.live.osc_budget import MIN_PAUSE_S, OscBudget
from groove_live.live.server import ServeConfig, Server

from .fake_engine import FakeEngine
from .osc_client import OscClient


def test_within_the_burst_it_never_pauses():
    b = OscBudget(now_s=0.0, share=0.2, burst_s=0.02)
    for i in range(19):
        b.spend(0.001, now_s=0.0)
        assert b.pause_s(0.0) == 0.0
    assert b.pauses == 0


def test_past_the_burst_it_pauses_until_a_quarter_refilled_at_its_share():
    b = OscBudget(now_s=0.0, share=0.2, burst_s=0.02)
    b.spend(0.024, now_s=0.0)  # 4 ms of debt
    # back to 5 ms of tokens (a quarter of the burst): 9 ms of CPU at 0.2 s per s = 45 ms
    assert b.pause_s(0.0) == pytest.approx(0.045)
    assert b.pauses == 1 and b.paused_s == pytest.approx(0.045)
    assert b.pause_s(0.045) == 0.0  # refilled by wall time, not by asking
    assert b.tokens_s == pytest.approx(0.005)


def test_refill_stops_at_the_burst_and_a_pause_has_a_floor():
    b = OscBudget(now_s=0.0, share=0.5, burst_s=0.01)
    b.spend(0.0, now_s=100.0)
    assert b.tokens_s == 0.01  # an idle hour does not buy an hour of flood
    b.spend(0.01, now_s=100.0)  # exactly empty
    assert b.pause_s(100.0) == pytest.approx(max(0.0025 / 0.5, MIN_PAUSE_S))
    tiny = OscBudget(now_s=0.0, share=1.0, burst_s=0.001)
    tiny.spend(0.001, now_s=0.0)
    assert tiny.pause_s(0.0) == MIN_PAUSE_S


@pytest.mark.parametrize("share,burst", [(0.0, 0.01), (1.5, 0.01), (0.2, 0.0)])
def test_nonsense_settings_are_refused(share, burst):
    with pytest.raises(ValueError):
        OscBudget(0.0, share, burst)


def test_a_burst_over_the_share_pauses_reading_and_the_server_answers_after():
    server = Server(FakeEngine(), ServeConfig(port=0, bpm=240.0, seed=3, bar_lookahead_s=0.1))
    # A budget a few datagrams deep, so a burst of pings must run it dry.
    server.osc_budget = OscBudget(server.clock.now(), share=0.05, burst_s=0.0002)
    server.start()
    client = OscClient(server.listening)
    try:
        ping = build_msg("/groove/ping", [1]).dgram
        for _ in range(200):
            client.send_raw(ping)
        assert client.wait_for(lambda c: len(c.messages("/groove/ack")) >= 200, timeout_s=20.0)
        info = client.request("/groove/info")
        values = dict(zip(info.params[1::2], info.params[2::2]))
        assert values["osc_pauses"] >= 1 and values["osc_paused_ms"] > 0
        assert client.request("/groove/ping", 2).address == "/groove/ack"
    finally:
        client.close()
        server.close()
