"""The server in-process over real UDP with the real clock and threads (fake engine)."""
from __future__ import annotations

import gc
import socket

import numpy as np
import pytest
from pythonosc.osc_message_builder import build_msg

from groove_live.latent import random_latents
from groove_live.live.events import BarEvent, HitEvent
from groove_live.live.osc_wire import decode_message
from groove_live.live.server import ServeConfig, Server
from groove_live.live.worker import phrase_bars

from .conftest import OfflineUdpServer
from .fake_engine import FakeEngine
from .osc_client import OscClient

BPM = 240.0  # one bar a second keeps these tests short
BAR_S = 1.0
STEP_S = BAR_S / 16
# A loaded 2-core CI box with pytest's own threads in the same process: generous on purpose;
# the subprocess benchmark measures the real numbers.
TOLERANCE_S = 0.025


@pytest.fixture
def running():
    # The server shares this process with pytest and everything earlier tests imported (torch,
    # ~400k objects): one full garbage collection of that heap holds the GIL for 150-180 ms and
    # stalls the clock thread. `groove-live serve` freezes its own (small) heap at start-up;
    # do the same for pytest's while these tests run.
    gc.collect()
    gc.freeze()
    started = []

    def start(engine=None, **config):
        engine = engine or FakeEngine()
        config.setdefault("bpm", BPM)
        config.setdefault("seed", 3)
        config.setdefault("bar_lookahead_s", 0.1)
        server = Server(engine, ServeConfig(port=0, **config))
        server.start()
        client = OscClient(server.listening)
        started.append((server, client))
        assert client.request("/groove/target").address == "/groove/ack"
        return server, client, engine

    yield start
    for server, client in started:
        client.close()
        server.close()
    gc.unfreeze()


def committed(server):
    return {bar: (t, content) for bar, t, _, content in list(server.scheduler.committed)}


def wait_phrase(server, client, seed, temperature=1.0):
    """After /groove/sample <temperature> <seed>: the bars of the new phrase, once all played."""
    z = random_latents(1, server.spec.z_size, np.random.default_rng(seed))[0]

    def first_bar():
        for bar, (t, c) in sorted(committed(server).items()):
            if c.z is not None and np.array_equal(c.z, z) and c.phrase_bar == 0:
                return bar
        return None
    assert client.wait_for(lambda c: first_bar() is not None, timeout_s=3 * BAR_S)
    start = first_bar()
    assert client.wait_for(lambda c: any(m.params[3] >= start + 4 for m in c.messages("/groove/hit")),
                           timeout_s=6 * BAR_S)
    return start, z


@pytest.mark.timing  # wall-clock thresholds: see .ci/run
def test_sample_plays_the_whole_phrase_on_the_grid_plus_the_models_offsets(running):
    server, client, engine = running()
    ack = client.request("/groove/sample", 1.0, 42)
    assert ack.address == "/groove/ack" and ack.params == ["/groove/sample", 1.0, 42]
    start, z = wait_phrase(server, client, 42)
    phrase = phrase_bars(engine.decode(z[None], 1.0), engine.spec)
    bars = committed(server)
    got = [m for m in client.messages("/groove/hit") if start <= m.params[3] < start + 4]
    lags = []
    for k in range(4):
        bar_t, _ = bars[start + k]
        want = sorted((engine.spec.drum_names[h.drum], h.step) for h in phrase[k])
        mine = [m for m in got if m.params[3] == start + k]
        assert sorted((m.params[0], m.params[4]) for m in mine) == want
        offsets = {(engine.spec.drum_names[h.drum], h.step): h.offset for h in phrase[k]}
        for m in mine:
            voice, pitch, velocity, bar, step = m.params
            assert pitch == engine.spec.out_pitches[engine.spec.drum_names.index(voice)]
            assert 0.0 <= velocity <= 1.0
            intended = bar_t + (step + offsets[(voice, step)]) * STEP_S
            lags.append(m.arrival_s - intended)
    lags = np.array(lags)
    assert len(lags) > 10
    assert lags.min() > -0.001, "a hit arrived before its time"
    assert np.median(lags) < 0.005 and lags.max() < TOLERANCE_S, lags
    # Early notes of a bar arrive before its downbeat (the model's negative offsets).
    early = [(m, bars[m.params[3]][0]) for m in got
             if phrase_offset(phrase, engine, m.params[3] - start, m.params[0], m.params[4]) < 0
             and m.params[4] == 0]
    for m, downbeat in early:
        assert m.arrival_s < downbeat + 0.001


def phrase_offset(phrase, engine, phrase_bar, voice, step):
    (h,) = [h for h in phrase[phrase_bar]
            if h.step == step and engine.spec.drum_names[h.drum] == voice]
    return h.offset


@pytest.mark.timing  # wall-clock thresholds: see .ci/run
def test_bundles_are_time_tagged_with_intended_time_plus_latency(running):
    server, client, engine = running(bundles=True, latency_s=0.05)
    client.request("/groove/sample", 1.0, 5)
    start, z = wait_phrase(server, client, 5)
    bars = committed(server)
    phrase = phrase_bars(engine.decode(z[None], 1.0), engine.spec)
    wall = server.clock.wall_s
    hits = [m for m in client.messages("/groove/hit") if start <= m.params[3] < start + 4]
    assert hits and all(m.timetag_wall_s is not None for m in hits)
    for m in hits:
        voice, _, _, bar, step = m.params
        (h,) = [h for h in phrase[bar - start] if h.step == step and engine.spec.drum_names[h.drum] == voice]
        intended_wall = wall(bars[bar][0] + (step + h.offset) * STEP_S)
        assert m.timetag_wall_s == pytest.approx(intended_wall + 0.05, abs=1e-5)
        assert m.arrival_wall_s < m.timetag_wall_s  # sent on time, 50 ms ahead of the tag
    bar_msgs = [m for m in client.messages("/groove/bar") if m.params[0] == start]
    assert bar_msgs and bar_msgs[0].timetag_wall_s is not None


@pytest.mark.timing  # wall-clock thresholds: see .ci/run
def test_bar_message_arrives_a_lookahead_before_the_downbeat(running):
    server, client, engine = running(bar_lookahead_s=0.2)
    assert client.wait_for(lambda c: len(c.messages("/groove/bar")) >= 3, timeout_s=5 * BAR_S)
    bars = committed(server)
    for m in client.messages("/groove/bar")[1:3]:
        bar, bpm = m.params[:2]
        assert bpm == BPM
        assert m.arrival_s == pytest.approx(bars[bar][0] - 0.2, abs=TOLERANCE_S)
        flat = m.params[2:]
        assert len(flat) % 5 == 0
        groups = [flat[i:i + 5] for i in range(0, len(flat), 5)]
        content = bars[bar][1]
        assert [g[3] for g in groups] == [h.step for h in content.hits]
        for (voice, pitch, velocity, step, t_s), h in zip(groups, content.hits):
            assert t_s == pytest.approx((h.step + h.offset) * STEP_S, abs=1e-5)


@pytest.mark.timing  # wall-clock thresholds: see .ci/run
def test_garbage_gets_errors_while_the_music_keeps_time(running):
    server, client, engine = running()
    client.request("/groove/walk", 0.3, 1)
    rng = np.random.default_rng(1)
    bad = [
        build_msg("/groove/nope", []).dgram,
        build_msg("/groove/tempo", ["fast"]).dgram,
        build_msg("/groove/tempo", [float("nan")]).dgram,
        build_msg("/groove/tempo", [float("inf")]).dgram,
        build_msg("/groove/tempo", [1e12]).dgram,
        build_msg("/groove/interpolate", [-3]).dgram,
        build_msg("/groove/sample", [0.9, 7]).dgram[:-3],  # truncated
        b"#bundle\x00" + b"\x00" * 4,
        b"",
    ]
    t_begin = server.clock.now()
    sent = 0
    errors_before = len(client.messages("/groove/error"))
    k = -1
    while sent < 1500 or server.clock.now() < t_begin + 3.5 * BAR_S:  # flood for a few bars
        k += 1
        datagram = bad[k % len(bad)] if k % 3 else rng.integers(0, 256, 40, dtype=np.uint8).tobytes()
        client.send_raw(datagram)
        sent += 1
        if k % 50 == 49:  # keep the loopback buffer from overflowing: wait for the replies
            assert client.wait_for(
                lambda c: len(c.messages("/groove/error")) - errors_before >= sent, timeout_s=2.0)
    assert client.wait_for(lambda c: len(c.messages("/groove/error")) - errors_before >= sent, 2.0)
    assert client.request("/groove/ping", 1).address == "/groove/ack"
    t_end = server.clock.now()
    # Every bar during the flood was played, on time, from the worker's decodes.
    played = [(bar, t, c) for bar, (t, c) in committed(server).items() if t_begin + 1 < t < t_end]
    assert played and all(c.source in ("walk", "sample") for _, _, c in played)
    stats = server.stats.summary()
    assert stats["missed_bars"] == 0
    hits = [m for m in client.messages("/groove/hit") if any(m.params[3] == b for b, _, _ in played)]
    bars = committed(server)
    for m in hits:
        bar_t = bars[m.params[3]][0]
        assert bar_t + (m.params[4] - 0.5) * STEP_S - 0.001 < m.arrival_s < bar_t + (m.params[4] + 0.5) * STEP_S + TOLERANCE_S


@pytest.mark.timing  # wall-clock thresholds: see .ci/run
def test_inference_runs_only_on_the_worker_and_stays_a_bar_ahead(running):
    engine = FakeEngine(delay_s=0.15)  # a slow model: 15% of a bar per decode
    server, client, _ = running(engine=engine)
    client.request("/groove/walk", 0.2, 1)  # a new latent, hence a decode, every bar
    assert client.wait_for(lambda c: len(c.messages("/groove/bar")) >= 7, timeout_s=10 * BAR_S)
    threads = {name for name, _, _ in engine.calls}
    assert threads <= {"MainThread", "groove-worker"}, threads  # MainThread: start-up priming
    info = client.request("/groove/info").params
    info = dict(zip(info[1::2], info[2::2]))
    assert info["min_ready_bars"] >= 1.0
    assert info["missed_bars"] == 0 and info["decodes"] >= 5
    assert info["walk_step"] == pytest.approx(0.2) and info["playing"] == 1


def test_tempo_stop_start_mute_over_osc(running):
    server, client, engine = running()
    assert client.request("/groove/tempo", 300).address == "/groove/ack"
    assert client.wait_for(lambda c: any(m.params[1] == 300.0 for m in c.messages("/groove/bar")),
                           timeout_s=3 * BAR_S)
    assert client.request("/groove/mute", "all").address == "/groove/ack"
    assert client.request("/groove/stop").address == "/groove/ack"
    n_bars = len(client.messages("/groove/bar"))
    assert client.request("/groove/start").address == "/groove/ack"
    assert client.wait_for(lambda c: len(c.messages("/groove/bar")) >= n_bars + 2, timeout_s=3.0)
    last = client.messages("/groove/bar")[-1]
    assert last.params[2:] == []  # all voices muted: bars without hits
    info = client.request("/groove/info").params
    info = dict(zip(info[1::2], info[2::2]))
    assert info["bpm"] == 300.0 and info["muted"].startswith("kick,snare")


# --- no reply ever provokes a reply --------------------------------------------------------
@pytest.fixture
def udp_client():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2.0)
    yield sock
    sock.close()


def ask(client, rig, address, *args):
    client.sendto(build_msg(address, list(args)).dgram, ("127.0.0.1", rig.port))
    rig.handle(1)
    reply = decode_message(client.recv(65536))
    return reply.address, list(reply.args)


def outputs_after(rig, t_s):
    """Datagrams the rig's OscSink sent per target after t_s: one per hit and per bar."""
    return sum(1 for e, _ in rig.recording.records
               if isinstance(e, (HitEvent, BarEvent)) and e.t_s > t_s)


def test_the_servers_own_address_is_refused_as_a_target(udp_client):
    rig = OfflineUdpServer()
    try:
        for args in ([rig.port], ["127.0.0.1", rig.port], ["localhost", rig.port]):
            address, params = ask(udp_client, rig, "/groove/target", *args)
            assert address == "/groove/error" and "groove-live itself" in params[1], params
        assert rig.server.osc_sink.targets == ()
    finally:
        rig.close()


def test_two_servers_targeting_each_other_exchange_hits_but_never_a_reply(udp_client):
    a, b = OfflineUdpServer(), OfflineUdpServer(seed=4)
    try:
        assert ask(udp_client, a, "/groove/target", b.port)[0] == "/groove/ack"
        assert ask(udp_client, b, "/groove/target", a.port)[0] == "/groove/ack"
        t0 = a.clock.now()
        for bar in range(1, 5):
            a.run_until(t0 + bar)
            b.run_until(t0 + bar)
        sent_a, sent_b = outputs_after(a, t0), outputs_after(b, t0)
        assert sent_a > 20 and sent_b > 20
        b.handle(sent_a)  # exactly what the other sent: pump_osc takes all that is waiting
        a.handle(sent_b)
        assert (a.server.replies, b.server.replies) == (1, 1)  # the acks to the client only
        assert (a.server.api.ignored, b.server.api.ignored) == (sent_b, sent_a)
        # A request that looks like it came from the other server gets one reply, which the
        # other drops: the exchange ends there.
        a.server.sock.sendto(build_msg("/groove/info", []).dgram, ("127.0.0.1", b.port))
        b.handle(1)
        a.handle(1)
        assert b.server.replies == 2 and a.server.replies == 1
        assert a.server.api.ignored == sent_b + 1
        # Untargeted, they go quiet: nothing more arrives but the client's own fences.
        assert ask(udp_client, a, "/groove/untarget", b.port)[0] == "/groove/ack"
        assert ask(udp_client, b, "/groove/untarget", a.port)[0] == "/groove/ack"
        t1 = a.clock.now()
        for bar in range(1, 5):
            a.run_until(t1 + bar)
            b.run_until(t1 + bar)
        assert outputs_after(a, t1) > 20  # still playing, to no one
        assert ask(udp_client, a, "/groove/ping", 1)[0] == "/groove/ack"  # handle(1): nothing else
        assert ask(udp_client, b, "/groove/ping", 1)[0] == "/groove/ack"
    finally:
        a.close()
        b.close()


def test_send_addresses_are_checked_when_the_server_is_built():
    from groove_live.live.server import ServeError

    from .procs import free_udp_port

    port = free_udp_port()
    for sends, why in [((("127.0.0.1", port),), "own address"),
                       ((("studio.local", 4560),), "numeric IPv4"),  # resolve_address's job
                       ((("0.0.0.0", 4560),), "not a destination")]:
        with pytest.raises(ServeError, match=why):
            Server(FakeEngine(), ServeConfig(port=port, sends=sends))
    # Asked for by name, broadcast is let through the kernel (built, never started: no sends).
    server = Server(FakeEngine(), ServeConfig(port=port, sends=(("255.255.255.255", 4560),)))
    try:
        assert server.sock.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST) == 1
    finally:
        server.close()
    server = Server(FakeEngine(), ServeConfig(port=port, sends=(("127.0.0.1", 4560),)))
    try:
        assert server.sock.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST) == 0
    finally:
        server.close()
