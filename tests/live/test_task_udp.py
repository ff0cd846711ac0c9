"""The tasks over real UDP with the real clock and threads: a humanize or tap request lands on
the next phrase start (or, if its inference missed that bar, the one after), never mid-phrase;
the task model runs on the worker thread; bad requests get one error and the music goes on."""
from __future__ import annotations

import gc

import pytest

from groove_live.live.server import ServeConfig, Server

from .fake_engine import FakeEngine
from .osc_client import OscClient
from .test_task_live import BEAT, KICK, task_engines

BPM = 240.0
BAR_S = 1.0
STEP_S = BAR_S / 16
TOLERANCE_S = 0.025  # a loaded 2-core box; the benchmarks measure the real numbers


@pytest.fixture
def running():
    gc.collect()
    gc.freeze()  # why: see test_udp_server.running
    started = []

    def start(**config):
        config.setdefault("bpm", BPM)
        config.setdefault("seed", 3)
        config.setdefault("bar_lookahead_s", 0.1)
        engines = task_engines()
        server = Server(FakeEngine(), ServeConfig(port=0, **config), task_engines=engines)
        server.start()
        client = OscClient(server.listening)
        started.append((server, client))
        assert client.request("/groove/target").address == "/groove/ack"
        return server, client, engines

    yield start
    for server, client in started:
        client.close()
        server.close()
    gc.unfreeze()


def committed(server) -> dict:
    return {bar: (t, c) for bar, t, _, c in list(server.scheduler.committed)}


def first_bar_of(server, client, source, timeout_s) -> int:
    def found(_):
        return any(c.source == source for _, c in committed(server).values())
    assert client.wait_for(found, timeout_s), [c.source for _, c in committed(server).values()]
    return min(b for b, (_, c) in committed(server).items() if c.source == source)


def assert_lands_on_the_next_phrase_start(server, first_free: int, first: int) -> None:
    bars_per_phrase = server.spec.bars  # the sampling model's phrase: the server's
    boundary = -(-first_free // bars_per_phrase) * bars_per_phrase
    assert first in (boundary, boundary + bars_per_phrase), (first_free, first)
    bars = committed(server)
    assert bars[first][1].phrase_bar == 0
    assert bars[first - 1][1].source == "sample"


def test_humanize_over_udp_lands_on_the_next_phrase_start_and_plays_its_hits(running):
    server, client, engines = running()
    assert client.wait_for(lambda c: len(c.messages("/groove/bar")) >= 2, timeout_s=4 * BAR_S)
    first_free = server.timeline.first_free_bar()
    ack = client.request("/groove/humanize", *BEAT)
    assert ack.address == "/groove/ack" and ack.params == ["/groove/humanize", 28]
    first = first_bar_of(server, client, "humanize", timeout_s=10 * BAR_S)
    assert_lands_on_the_next_phrase_start(server, first_free, first)
    assert engines["humanize"].threads == ["groove-worker"]  # never the OSC or clock thread
    assert client.wait_for(lambda c: any(m.params[3] >= first + 1 for m in c.messages("/groove/hit")),
                           timeout_s=3 * BAR_S)
    downbeat = committed(server)[first][0]
    kicks = [m for m in client.messages("/groove/hit") if m.params[3] == first and m.params[0] == "kick"]
    assert sorted(m.params[4] for m in kicks) == [0, 4, 8, 12]
    for m in kicks:
        lag = m.arrival_s - (downbeat + (m.params[4] + 0.1) * STEP_S)
        assert -0.001 < lag < TOLERANCE_S, lag


def test_bad_patterns_over_udp_get_one_error_each_and_the_music_goes_on(running):
    server, client, engines = running()
    for args, reason in [(("kick", "x..x.."), "6 steps do not divide"),
                         (("tabla", "x..."), "unknown voice 'tabla'"),
                         ((), "no voices given")]:
        reply = client.request("/groove/humanize", *args)
        assert reply.address == "/groove/error" and reason in reply.params[1]
    assert client.request("/groove/infill", "open_hihat", "x...").address == "/groove/error"
    n = len(client.messages("/groove/hit"))
    assert client.wait_for(lambda c: len(c.messages("/groove/hit")) > n + 8, timeout_s=3 * BAR_S)
    assert engines["humanize"].calls == [] and server.worker.decode_errors == 0
    assert dict(server.info()).get("internal_errors", 0) == 0


def test_taps_over_udp_drumify_from_the_next_phrase_start_with_the_taps_timing(running):
    server, client, engines = running(tap_bars=1)
    assert client.wait_for(lambda c: len(c.messages("/groove/bar")) >= 1, timeout_s=4 * BAR_S)
    # Tap early in a bar, so the four taps (a few ms apart) cannot straddle a bar line: right
    # after a hit of the bar's first half arrives.
    n = len(client.messages("/groove/hit"))
    assert client.wait_for(lambda c: any(2 <= m.params[4] <= 7 for m in c.messages("/groove/hit")[n:]),
                           timeout_s=4 * BAR_S)
    acks = []
    for _ in range(4):
        acks.append(client.request("/groove/tap", 0.8))
    assert all(a.address == "/groove/ack" for a in acks)
    placed = [tuple(a.params[1:4]) for a in acks]
    take_bar = placed[0][0]
    assert all(bar == take_bar for bar, _, _ in placed), placed
    assert client.wait_for(lambda c: any(m.params[:1] == ["/groove/tap/take"]
                                         for m in c.messages("/groove/ack")), timeout_s=3 * BAR_S)
    (take,) = [m for m in client.messages("/groove/ack") if m.params[:1] == ["/groove/tap/take"]]
    assert take.params == ["/groove/tap/take", 4, take_bar, 1]
    first = first_bar_of(server, client, "drumify", timeout_s=10 * BAR_S)
    assert_lands_on_the_next_phrase_start(server, take_bar + 1, first)
    assert engines["drumify"].threads == ["groove-worker"]
    kicks = {h.step: h.offset for h in committed(server)[first][1].hits if h.drum == KICK}
    loudest = {}
    for _, step, offset in placed:  # a step tapped twice keeps one tap's timing
        loudest.setdefault(step, offset)
    assert set(kicks) == set(loudest)


def test_no_taps_or_too_many_over_udp_get_one_error_and_the_music_goes_on(running):
    server, client, engines = running(tap_bars=1)
    reply = client.request("/groove/tap/end")
    assert reply.address == "/groove/error" and "no taps to drumify" in reply.params[1]
    n = len(client.messages("/groove/hit"))
    assert client.wait_for(lambda c: any(2 <= m.params[4] <= 7 for m in c.messages("/groove/hit")[n:]),
                           timeout_s=4 * BAR_S)
    for _ in range(40):  # a flood inside one bar: more than 2 per 16th
        assert client.request("/groove/tap").address == "/groove/ack"

    def errors(c):
        return [m for m in c.messages("/groove/error") if m.params[0] == "/groove/tap"]
    assert client.wait_for(lambda c: errors(c), timeout_s=3 * BAR_S)
    (error,) = errors(client)
    assert error.params[1].startswith("too many taps: 40 in 1 bar(s)"), error.params
    n = len(client.messages("/groove/hit"))
    assert client.wait_for(lambda c: len(c.messages("/groove/hit")) > n + 8, timeout_s=3 * BAR_S)
    assert engines["drumify"].calls == []
    assert {c.source for _, c in committed(server).values()} == {"sample"}
