"""What the wall-clock tests (marked `timing`) check, minus the wall clock: the server on a
FakeClock sends over real UDP, so each datagram can be compared exactly with what was meant."""
from __future__ import annotations

import socket

import numpy as np
import pytest
from pythonosc.osc_bundle import OscBundle
from pythonosc.osc_message_builder import build_msg

from groove_live.latent import random_latents
from groove_live.live.osc_wire import decode_message
from groove_live.live.worker import phrase_bars

from .conftest import OfflineUdpServer

STEP_S = 1.0 / 16  # OfflineUdpServer plays 240 BPM: a bar a second


@pytest.fixture
def receiver():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    yield sock
    sock.close()


@pytest.fixture
def rig(receiver):
    made = []

    def make(**config) -> OfflineUdpServer:
        r = OfflineUdpServer(sends=(receiver.getsockname(),), **config)
        made.append(r)
        return r
    yield make
    for r in made:
        r.close()


def drain(sock) -> list[bytes]:
    """Every datagram already delivered (loopback delivers during sendto)."""
    out = []
    while True:
        try:
            out.append(sock.recv(65536))
        except BlockingIOError:
            return out


def request(rig: OfflineUdpServer, address: str, *args) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(2.0)
        client.sendto(build_msg(address, list(args)).dgram, ("127.0.0.1", rig.port))
        rig.handle(1)
        return decode_message(client.recv(65536)).address


def committed(rig) -> dict:
    return {bar: (t, c) for bar, t, _, c in rig.server.scheduler.committed}


def first_bar_of(rig, seed: int) -> int:
    z = random_latents(1, rig.server.spec.z_size, np.random.default_rng(seed))[0]
    return min(bar for bar, (_, c) in committed(rig).items()
               if c.z is not None and np.array_equal(c.z, z) and c.phrase_bar == 0)


def test_a_sampled_phrase_goes_out_hit_by_hit_at_grid_plus_offset(rig, receiver):
    r = rig()
    assert request(r, "/groove/sample", 1.0, 42) == "/groove/ack"
    r.run_until(r.clock.now() + 8.0)
    start = first_bar_of(r, 42)
    engine, spec = r.server.engine, r.server.spec
    z = random_latents(1, spec.z_size, np.random.default_rng(42))
    phrase = phrase_bars(engine.decode(z, 1.0), spec)
    sent = [decode_message(d) for d in drain(receiver)]
    hits = [m.args for m in sent if m.address == "/groove/hit" and start <= m.args[3] < start + 4]
    bars = committed(r)
    times = {(h.bar, h.step, h.voice): h.t_s for h in r.recording.hits()}
    n = 0
    for k in range(4):
        want = sorted((spec.drum_names[h.drum], spec.drums[h.drum].out_pitch, h.step,
                       bars[start + k][0] + (h.step + h.offset) * STEP_S) for h in phrase[k])
        got = sorted((v, p, s, times[(b, s, v)]) for v, p, _, b, s in hits if b == start + k)
        assert [g[:3] for g in got] == [w[:3] for w in want]
        assert [g[3] for g in got] == pytest.approx([w[3] for w in want], abs=1e-9)
        n += len(got)
    assert n > 10
    # Each was sent exactly at its time: the fake clock jumps onto it.
    assert all(t == e.t_s for e, t in r.recording.records)


def test_bundles_carry_the_intended_wall_time_plus_latency(rig, receiver):
    r = rig(bundles=True, latency_s=0.05)
    r.run_until(r.clock.now() + 3.0)
    wall = r.server.clock.wall_s
    intended = {(h.bar, h.step, h.voice): h.t_s for h in r.recording.hits()}
    checked = 0
    for datagram in drain(receiver):
        bundle = OscBundle(datagram)
        (m,) = list(bundle)
        if m.address == "/groove/hit":
            voice, _, _, bar, step = m.params
            t_s = intended[(bar, step, voice)]
            checked += 1
        else:
            t_s = [b.t_s for b in r.recording.bars() if b.bar == m.params[0]][0]
        assert bundle.timestamp == pytest.approx(wall(t_s) + 0.05, abs=1e-6)
    assert checked > 5


def test_the_bar_message_goes_a_lookahead_early_with_the_bars_hits(rig, receiver):
    r = rig(bar_lookahead_s=0.2)
    r.run_until(r.clock.now() + 4.0)
    bars = committed(r)
    sent = [decode_message(d) for d in drain(receiver)]
    bar_msgs = [m for m in sent if m.address == "/groove/bar"]
    assert len(bar_msgs) >= 3
    emitted = {e.bar: t for e, t in r.recording.records if type(e).__name__ == "BarEvent"}
    for m in bar_msgs:
        bar, bpm, *flat = m.args
        assert bpm == 240.0 and emitted[bar] == bars[bar][0] - 0.2
        groups = [flat[i:i + 5] for i in range(0, len(flat), 5)]
        content = bars[bar][1]
        assert [g[3] for g in groups] == [h.step for h in content.hits]
        for (_, _, _, step, t_s), h in zip(groups, content.hits):
            assert t_s == pytest.approx((h.step + h.offset) * STEP_S, abs=1e-5)


def test_garbage_between_the_bars_changes_nothing_that_plays(rig, receiver):
    def session(garbage: bool) -> list:
        r = rig(seed=5)
        assert request(r, "/groove/walk", 0.3, 1) == "/groove/ack"
        bad = [b"", b"#bundle\x00" + b"\x00" * 4, build_msg("/groove/tempo", ["fast"]).dgram,
               build_msg("/groove/sample", [0.9, 7]).dgram[:-3], b"\xff" * 40]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(2.0)
            t0 = r.clock.now()
            for k in range(1, 17):
                if garbage:
                    for datagram in bad:
                        client.sendto(datagram, ("127.0.0.1", r.port))
                    r.handle(len(bad))
                    replies = [decode_message(client.recv(65536)) for _ in bad]
                    assert {m.address for m in replies} == {"/groove/error"}
                r.run_until(t0 + 0.25 * k)
        played = [(h.bar, h.step, h.voice, h.t_s, h.velocity) for h in r.recording.hits()]
        drain(receiver)
        return played

    quiet, noisy = session(False), session(True)
    assert len(quiet) > 20 and noisy == quiet
