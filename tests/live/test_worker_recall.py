"""Recall: every random groove is a seed, the ack names it, and sending it back plays the same
groove (the spare one decoded ahead included); interpolation takes a seed too."""
from __future__ import annotations

import numpy as np
import pytest

from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import build_msg

from groove_live.live.osc_api import OscApi

from .conftest import offline_server
from .fake_engine import FakeEngine

SENDER = ("127.0.0.1", 57121)


def ask(api: OscApi, address: str, *args) -> list:
    reply, = api.handle(build_msg(address, list(args)).dgram, SENDER)
    msg = OscMessage(reply)
    assert msg.address == "/groove/ack", msg.params
    return list(msg.params[1:])


def played_z(server, bar: int) -> np.ndarray:
    return {b: c.z for b, _, _, c in server.scheduler.committed}[bar]


@pytest.fixture
def live():
    server, clock, rec = offline_server(FakeEngine(), bpm=120.0, temperature=0.7)
    server.run_until(clock.now() + 1.0)
    return server, clock


def test_a_sample_without_a_seed_acks_the_seed_and_the_seed_recalls_it(live):
    server, clock = live
    temperature, seed = ask(server.api, "/groove/sample")
    assert temperature == pytest.approx(0.7) and 0 <= seed < 2**31
    decodes = server.worker.decodes
    server.run_until(clock.now() + 5.0)
    bar = server.scheduler.committed[-1][0]
    first = played_z(server, bar)
    np.testing.assert_array_equal(first, server.worker.seed_latent(seed))
    # It was the spare groove, decoded ahead: playing it cost no new decode of its phrase.
    assert server.worker.decodes == decodes
    ask(server.api, "/groove/sample", 1.0)  # something else in between
    server.run_until(clock.now() + 5.0)
    assert ask(server.api, "/groove/sample", temperature, seed) == [pytest.approx(0.7), seed]
    server.run_until(clock.now() + 5.0)
    np.testing.assert_array_equal(played_z(server, server.scheduler.committed[-1][0]), first)


def test_each_unseeded_sample_gets_a_new_seed_and_info_names_the_playing_one(live):
    server, clock = live
    seeds = {ask(server.api, "/groove/sample")[1] for _ in range(5)}
    assert len(seeds) == 5
    _, seed = ask(server.api, "/groove/sample", 0.5, 1234)
    server.run_until(clock.now() + 5.0)
    info = dict(zip(*[iter(ask(server.api, "/groove/info"))] * 2))
    assert info["seed"] == 1234 and info["temperature"] == pytest.approx(0.5)


def test_interpolate_heads_to_the_seeds_groove_and_acks_it(live):
    server, clock = live
    bars, temperature, seed = ask(server.api, "/groove/interpolate", 2)
    assert bars == 2 and temperature == pytest.approx(0.7)
    server.run_until(clock.now() + 12.0)
    np.testing.assert_allclose(played_z(server, server.scheduler.committed[-1][0]),
                               server.worker.seed_latent(seed), atol=1e-6)
    assert ask(server.api, "/groove/interpolate", 2, 0.5, 99) == [2, 0.5, 99]
    server.run_until(clock.now() + 12.0)
    np.testing.assert_allclose(played_z(server, server.scheduler.committed[-1][0]),
                               server.worker.seed_latent(99), atol=1e-6)


def test_info_shows_what_was_asked_beside_what_plays(live):
    server, clock = live
    ask(server.api, "/groove/temperature", 2.0)
    ask(server.api, "/groove/tempo", 90.0, 4)
    ask(server.api, "/groove/quantize", "phrase")
    info = dict(zip(*[iter(ask(server.api, "/groove/info"))] * 2))
    assert info["temperature_pending"] == pytest.approx(2.0)
    assert info["temperature"] == pytest.approx(0.7)
    server.run_until(clock.now() + 0.01)  # the clock thread takes the tempo
    info = dict(zip(*[iter(ask(server.api, "/groove/info"))] * 2))
    assert info["bpm"] == 120.0 and info["bpm_pending"] == 90.0


def test_lookahead_acks_and_reports_the_value_in_use(live):
    server, clock = live
    server.controls.set_tempo(300.0)
    server.run_until(clock.now() + 3.0)  # 300 bpm: a bar lasts 0.8 s
    used_ms, = ask(server.api, "/groove/lookahead", 1500)
    assert used_ms < 800.0
    server.run_until(clock.now() + 0.01)  # the clock thread takes it
    assert used_ms == pytest.approx(server.scheduler.lookahead_s * 1000)
    info = dict(zip(*[iter(ask(server.api, "/groove/info"))] * 2))
    assert info["bar_lookahead_ms"] == pytest.approx(used_ms)


def test_a_walk_acks_its_seed_and_replays_from_the_same_groove(live):
    server, clock = live

    def walk_from(sample_seed: int, walk_seed: int | None) -> tuple[int, list]:
        ask(server.api, "/groove/walk", 0.0)
        ask(server.api, "/groove/sample", 1.0, sample_seed)
        server.run_until(clock.now() + 4.0)
        asked = server.scheduler.committed[-1][0]
        step, every, seed = ask(server.api, "/groove/walk", 0.3, 1,
                                *([] if walk_seed is None else [walk_seed]))
        server.run_until(clock.now() + 16.0)
        walked = [c.z for b, _, _, c in server.scheduler.committed
                  if b > asked and c.source == "walk"]
        return seed, walked[:5]

    seed, first = walk_from(3, None)
    again_seed, again = walk_from(3, seed)
    assert again_seed == seed
    assert len(first) == len(again) == 5
    for a, b in zip(first, again):
        np.testing.assert_allclose(a, b, atol=1e-6)
