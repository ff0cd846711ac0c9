"""Live attribute steering: /groove/style, /groove/density, /groove/syncopation and /groove/fill
move the decoded latent from the next bar on (walks and new samples stay steered), a fill plays
once at the end of the phrase; refusals are one /groove/error. Fake clock, fake engine."""
from __future__ import annotations

import numpy as np
import pytest

from groove_live.attributes import SCALED_AMOUNT_PER_UNIT, Attributes, Scaled
from groove_live.latent import random_latents
from groove_live.live.osc_wire import decode_message, encode_message
from groove_live.live.planner import BarState, Planner, Sample, StartWalk
from groove_live.live.steering import Fill, Steer, fill_bar
from groove_live.live.worker import phrase_bars

from .conftest import offline_server

SENDER = ("127.0.0.1", 57121)


def attributes(z_size: int) -> Attributes:
    # Long vectors, so a steered decode of the fake engine surely differs from the plain one.
    rng = np.random.default_rng(3)
    v = lambda: (3 * rng.standard_normal(z_size)).astype(np.float32)  # noqa: E731
    return Attributes(z_size, {"funk": v(), "jazz": v()},
                      {"density": Scaled(v(), 8.0, 24.0), "syncopation": Scaled(v(), 0.2, 0.6)},
                      v())


def ask(server, address, *args):
    reply = decode_message(server.api.handle(encode_message(address, list(args)), SENDER)[0])
    return reply.address, list(reply.args)


def played(server):
    return {bar: content for bar, _, _, content in server.scheduler.committed}


def decoded_bar(engine, z, phrase_bar):
    return phrase_bars(engine.decode(np.asarray(z, np.float32)[None]), engine.spec)[phrase_bar]


@pytest.mark.parametrize("phrase_start, first_free, want", [
    (0, 0, 3), (0, 1, 3), (0, 3, 3), (0, 4, 7), (2, 5, 5), (2, 6, 9)])
def test_fill_lands_on_the_last_bar_of_the_playing_phrase(phrase_start, first_free, want):
    assert fill_bar(phrase_start, first_free, 4) == want


def test_planner_keeps_the_offset_through_samples_and_walks():
    rng = np.random.default_rng(0)
    z0 = random_latents(1, 8, rng)[0]
    planner = Planner(BarState(z=z0, temperature=1.0, noise_seed=1, phrase_start_bar=0,
                               source="sample"), 0, rng, bars_per_phrase=4)
    offset = np.ones(8, np.float32)
    assert planner.apply(Steer(offset), 2) == 2
    assert planner.state(1).offset is None and planner.state(2).offset is offset
    planner.apply(StartWalk(0.3, 1), 3)
    planner.apply(Sample(random_latents(1, 8, rng)[0], 5), 5)
    assert all(planner.state(b).offset is offset for b in range(2, 9))
    assert planner.apply(Steer(None), 9) == 9 and planner.state(9).offset is None
    # The sample at bar 5 started a phrase (5..8, 9..12): the fill ends the one playing.
    assert planner.apply(Fill(offset), 10) == 12 and set(planner.fills) == {12}
    assert planner.state(12).offset is None  # a fill changes no state
    planner.prune_before(13)
    assert planner.fills == {}


def test_style_density_and_syncopation_steer_from_the_next_bar(fake_engine):
    a = attributes(fake_engine.spec.z_size)
    fake_engine.attributes = a
    server, clock, _ = offline_server(fake_engine, bpm=240.0)
    server.run_until(clock.now() + 1.3)
    first_free = server.timeline.first_free_bar()
    assert ask(server, "/groove/style", "jazz", 0.5) == ("/groove/ack",
                                                         ["/groove/style", "jazz", 0.5])
    assert ask(server, "/groove/density", 1.0) == ("/groove/ack", ["/groove/density", 1.0])
    assert ask(server, "/groove/syncopation", -0.5)[0] == "/groove/ack"
    server.run_until(clock.now() + 4.0)
    bars = played(server)
    offset = a.offset("jazz", 0.5, density=1.0, syncopation=-0.5)
    np.testing.assert_allclose(offset, 0.5 * a.styles["jazz"] + SCALED_AMOUNT_PER_UNIT * (
        a.scaled["density"].vector - 0.5 * a.scaled["syncopation"].vector), atol=1e-5)
    before = [b for b in bars if b < first_free]
    after = [b for b in bars if b >= first_free]
    assert before and len(after) >= 3
    for b in before:
        assert bars[b].hits == decoded_bar(fake_engine, bars[b].z, bars[b].phrase_bar)
    for b in after:  # the requests landed together on the first free bar
        want = decoded_bar(fake_engine, bars[b].z + offset, bars[b].phrase_bar)
        assert bars[b].hits == want
        assert want != decoded_bar(fake_engine, bars[b].z, bars[b].phrase_bar)
    # A walk goes on steered.
    server.controls.walk(0.25, 1)
    server.run_until(clock.now() + 4.0)
    walked = [c for c in played(server).values() if c.source == "walk"]
    assert len(walked) >= 3
    for c in walked:
        assert c.hits == decoded_bar(fake_engine, c.z + offset, c.phrase_bar)
    info = dict(zip(*[iter(ask(server, "/groove/info")[1][1:])] * 2))
    assert info["styles"] == "funk,jazz" and info["steering"] == "density,syncopation,fill"
    assert (info["style"], info["style_amount"], info["density"]) == ("jazz", 0.5, 1.0)
    # none (or amount 0) stops steering toward a style; the density stays.
    assert ask(server, "/groove/style", "none") == ("/groove/ack", ["/groove/style", "none", 0.0])


def test_fill_plays_one_bar_at_the_end_of_the_phrase_then_returns(fake_engine):
    a = attributes(fake_engine.spec.z_size)
    fake_engine.attributes = a
    server, clock, _ = offline_server(fake_engine, bpm=240.0)
    server.run_until(clock.now() + 1.3)
    assert ask(server, "/groove/fill") == ("/groove/ack", ["/groove/fill"])
    server.run_until(clock.now() + 6.0)
    bars = played(server)
    fills = [b for b, c in bars.items() if c.source == "fill"]
    assert len(fills) == 1
    bar = fills[0]
    c = bars[bar]
    assert c.phrase_bar == fake_engine.spec.bars - 1  # the phrase's last bar
    assert c.hits == decoded_bar(fake_engine, c.z + a.fill, fake_engine.spec.bars - 1)
    assert c.hits != decoded_bar(fake_engine, c.z, c.phrase_bar)
    after = bars[bar + 1]  # the next phrase plays as before
    assert after.source == "sample" and after.phrase_bar == 0
    assert after.hits == decoded_bar(fake_engine, after.z, 0)


def test_refusals_are_one_error_each(fake_engine):
    fake_engine.attributes = attributes(fake_engine.spec.z_size)
    server, clock, _ = offline_server(fake_engine, bpm=240.0)
    address, args = ask(server, "/groove/style", "polka")
    assert address == "/groove/error"
    assert args == ["/groove/style", "unknown style 'polka'; this model knows: funk, jazz, none"]
    assert ask(server, "/groove/density", 1.5)[1][1] == "density must be in [-1, 1], got 1.5"
    assert ask(server, "/groove/style", "funk", 4.0)[0] == "/groove/error"
    assert ask(server, "/groove/style")[0] == "/groove/error"
    assert ask(server, "/groove/fill", 1)[0] == "/groove/error"


def test_a_model_without_vectors_says_how_to_add_them(fake_engine):
    server, clock, _ = offline_server(fake_engine, bpm=240.0)
    for address, args in (("/groove/style", ["funk"]), ("/groove/density", [0.5]),
                          ("/groove/syncopation", [0.5]), ("/groove/fill", [])):
        reply, reply_args = ask(server, address, *args)
        assert reply == "/groove/error"
        assert "no attribute vectors" in reply_args[1]
        assert "groove-export attributes" in reply_args[1]
    info = dict(zip(*[iter(ask(server, "/groove/info")[1][1:])] * 2))
    assert info["styles"] == "" and info["style"] == "none"


def test_fill_over_udp_plays_its_hits(fake_engine):
    from groove_live.live.server import ServeConfig, Server

    from .osc_client import OscClient

    a = attributes(fake_engine.spec.z_size)
    fake_engine.attributes = a
    server = Server(fake_engine, ServeConfig(port=0, bpm=240.0, seed=3, bar_lookahead_s=0.1))
    server.start()
    client = OscClient(server.listening)
    try:
        assert client.request("/groove/target").address == "/groove/ack"
        reply = client.request("/groove/style", "funk")
        assert (reply.address, reply.params) == ("/groove/ack", ["/groove/style", "funk", 1.0])
        assert client.request("/groove/fill").address == "/groove/ack"

        def fill_played(c) -> int | None:
            bars = {b: content for b, _, _, content in list(server.scheduler.committed)}
            done = [b for b, content in bars.items() if content.source == "fill"
                    and any(m.params[3] > b for m in c.messages("/groove/hit"))]
            return done[0] if done else None
        assert client.wait_for(lambda c: fill_played(c) is not None, timeout_s=8.0)
        bar = fill_played(client)
        content = {b: x for b, _, _, x in list(server.scheduler.committed)}[bar]
        z = content.z + a.offset("funk") + a.fill
        want = decoded_bar(fake_engine, z, fake_engine.spec.bars - 1)
        assert want and want != decoded_bar(fake_engine, content.z, content.phrase_bar)
        got = sorted((m.params[4], m.params[0]) for m in client.messages("/groove/hit")
                     if m.params[3] == bar)
        assert got == sorted((h.step, fake_engine.spec.drum_names[h.drum]) for h in want)
    finally:
        client.close()
        server.close()
