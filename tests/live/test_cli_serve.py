"""`groove-live serve` as a user runs it: a real process, real UDP, the real model (toy)."""
from __future__ import annotations

import socket
import time
import uuid

import numpy as np
from pythonosc.osc_message_builder import build_msg

from .osc_client import OscClient
from .procs import free_udp_port, serve_argv


def test_port_in_use_is_one_line_and_a_failure(procs):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        # No model needed: the port is checked before anything is loaded.
        p = procs(serve_argv("--port", str(port), model=False))
        rc = p.wait_exit(timeout_s=15)
    assert rc != 0
    err = [l for l in p.text("err").splitlines() if l.strip()]
    assert len(err) == 1 and "already in use" in err[0] and str(port) in err[0], p.text()


def test_midi_virtual_without_a_backend_is_one_clear_line(procs):
    # A JACK server name nobody runs, so this holds even while another test runs jackd.
    env = {"JACK_DEFAULT_SERVER": f"nobody-{uuid.uuid4().hex[:8]}"}
    p = procs(serve_argv("--port", str(free_udp_port()), "--midi-virtual", "gl-test", model=False),
              env=env)
    rc = p.wait_exit(timeout_s=15)
    assert rc == 1
    err = [l for l in p.text("err").splitlines() if l.strip()]
    assert len(err) == 1 and "cannot open virtual MIDI port 'gl-test'" in err[0], p.text()


def test_bad_send_address_is_one_line(procs):
    p = procs(serve_argv("--port", str(free_udp_port()), "--send", "127.0.0.1:notaport", model=False))
    assert p.wait_exit(timeout_s=15) == 1
    err = [l for l in p.text("err").splitlines() if l.strip()]
    assert len(err) == 1 and "bad address" in err[0], p.text()


def test_ready_within_a_second_then_plays_to_targets_and_stops_on_sigterm(procs):
    port = free_udp_port()
    listener = OscClient(("127.0.0.1", port))
    try:
        p = procs(serve_argv("--port", str(port), "--bpm", "240", "--bar-lookahead-ms", "100",
                             "--send", f"127.0.0.1:{listener.port}"))
        t_ready, line = p.wait_line(r"ready in", timeout_s=20)
        assert t_ready - p.t_start_s < 1.0, f"ready after {t_ready - p.t_start_s:.2f} s\n{p.text()}"
        out = p.text("out")
        assert f"listening for OSC on udp 127.0.0.1:{port}" in out
        assert f"127.0.0.1:{listener.port}" in out
        client = OscClient(("127.0.0.1", port))
        try:
            assert client.request("/groove/ping", 7).params == ["/groove/ping", 7]
            ack = client.request("/groove/sample", 0.9, 11)
            assert ack.address == "/groove/ack" and ack.params[0] == "/groove/sample"
            t_sent = ack.arrival_s
            # Hits within two bars (one bar = 1 s at 240 BPM).
            assert listener.wait_for(lambda c: any(m.arrival_s > t_sent for m in c.messages("/groove/hit")),
                                     timeout_s=2.0), p.text()
            bars = [m for m in listener.messages("/groove/bar")]
            assert bars and bars[-1].params[1] == 240.0
            info = client.request("/groove/info").params
            info = dict(zip(info[1::2], info[2::2]))
            assert info["playing"] == 1 and info["voices"].split(",")[0] == "kick"
        finally:
            client.close()
        assert p.stop() == 0
        assert "stopped" in p.text("out")
    finally:
        listener.close()


def test_the_process_survives_garbage_and_keeps_time(procs):
    port = free_udp_port()
    listener = OscClient(("127.0.0.1", port))
    client = OscClient(("127.0.0.1", port))
    try:
        p = procs(serve_argv("--port", str(port), "--bpm", "240", "--bundles",
                             "--send", f"127.0.0.1:{listener.port}"))
        p.wait_line(r"ready in", timeout_s=20)
        rng = np.random.default_rng(2)
        garbage = [b"", b"\x00" * 7, b"#bundle\x00", b"/groove/tempo\x00\x00\x00,f\x00\x00\x7f",
                   build_msg("/groove/tempo", [float("nan")]).dgram,
                   build_msg("/groove/walk", [1e30]).dgram,
                   build_msg("/groove/interpolate", ["x"]).dgram,
                   build_msg("/definitely/not", [1, 2, 3]).dgram]
        n = 0
        t_end = client.request("/groove/ping").arrival_s + 3.0  # flood for three bars at least
        k = -1
        while n < 1200 or time.monotonic() < t_end:
            k += 1
            client.send_raw(garbage[k % len(garbage)] if k % 2 else
                            rng.integers(0, 256, int(rng.integers(1, 200)), dtype=np.uint8).tobytes())
            n += 1
            if n % 50 == 0:
                assert client.wait_for(lambda c: len(c.messages("/groove/error")) >= n, 3.0)
        assert client.wait_for(lambda c: len(c.messages("/groove/error")) >= n, 3.0)
        assert p.popen.poll() is None
        t_after = client.request("/groove/ping").arrival_s
        assert listener.wait_for(lambda c: any(m.arrival_s > t_after for m in c.messages("/groove/hit")),
                                 timeout_s=3.0)
        # Bundled hits are tagged with their intended time: they arrived on time meanwhile.
        lags = np.array([m.arrival_wall_s - m.timetag_wall_s for m in listener.messages("/groove/hit")])
        assert len(lags) > 20 and np.median(lags) < 0.003 and lags.max() < 0.030, lags
        info = client.request("/groove/info").params
        info = dict(zip(info[1::2], info[2::2]))
        assert info["missed_bars"] == 0
        assert p.stop() == 0
        assert "Traceback" not in p.text()
    finally:
        client.close()
        listener.close()
