"""Live timing benchmark: `groove-live serve` under 1,000 OSC requests/s, how close to time?

For each tempo the real server runs for --seconds with a latent walk (a decode every bar),
sending time-tagged bundles (--bundles --latency-ms 0, so each tag is the intended time) to a
loopback receiver here, while a second process sends --rate requests/s and counts replies.
Prints p50/p99/max of send - intended (the server's own stats, /groove/info) and of
arrival - intended (tags vs arrival here), late bars and the server's RSS at start and end.

Flood mode (--flood-rate N): a third process also sends N datagrams/s at the server's port for
the same --seconds (valid /groove/ping and /groove/info, garbage, bundles; at most N * seconds,
then it stops by itself), and the server runs at normal priority (no SCHED_FIFO) unless
--priority realtime: the case of a user without an rtprio limit whose port gets flooded.
--flood-at decoy is the control: the flood goes to a second, silent server instead, so the
machine carries the same work (the flood, and a server parsing and answering it) while the
measured server's interpreter carries none of it. Lateness that stays then is the machine's
(CPU time), not the server's (its interpreter lock); only what goes away is.

    python benchmarks/live_timing.py                        # bundled model, 120 and 174 BPM, 60 s
    python benchmarks/live_timing.py --model tests/fixtures/toy_model.onnx --seconds 10
    python benchmarks/live_timing.py --flood-rate 4000 --seconds 30 --bpms 174

Commit mode (--commit-cost): no server, no sockets; the clock thread's work to commit one bar
(take it, render it, build every output's datagrams) timed in this process on a fake clock,
for a bar of 16 hits to one OSC output, plain and bundled. Run it on a quiet machine.

    python benchmarks/live_timing.py --commit-cost
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import build_msg

from groove_live.live.osc_listen import TimestampedListener

LATE_MS = 2.0  # a bar with any event later than this counts as late (the server uses the same)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def serve_argv(args, port: int, bpm: float, receiver_port: int | None) -> list[str]:
    """The measured server's command line; receiver_port None: a silent one (the decoy)."""
    exe = shutil.which("groove-live") or str(Path(sys.executable).with_name("groove-live"))
    argv = [exe, "serve", "--port", str(port), "--bpm", str(bpm), "--bundles", "--latency-ms", "0",
            "--bar-lookahead-ms", "100", "--seed", "1"]
    if receiver_port is not None:
        argv += ["--send", f"127.0.0.1:{receiver_port}"]
    if args.model:
        argv += ["--model", args.model]
    return argv


def start_server(argv: list[str], env: dict) -> subprocess.Popen:
    """Start `serve` in a session of its own and wait until it says it is ready."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True)
    for line in proc.stdout:
        if "ready in" in line:
            return proc
    raise SystemExit(f"groove-live serve did not start (exit {proc.wait()})")


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --- the load process --------------------------------------------------------------------
def run_load(port: int, rate: float, seconds: float, bpm: float) -> None:
    """Send `rate` requests/s on an absolute schedule; print a JSON line with the counts."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    # Cheap controls, info, and some garbage (errors cost a reply too).
    requests = [build_msg(a, args).dgram for a, args in [
        ("/groove/ping", [1]), ("/groove/info", []), ("/groove/velocity", [1.0]),
        ("/groove/timing", [1.0]), ("/groove/mute", ["ride", 0]), ("/groove/temperature", [1.0]),
        ("/groove/tempo", [bpm]), ("/groove/nope", [])]]
    requests.append(b"\x00not osc at all")
    sample = build_msg("/groove/sample", []).dgram
    replies = {"ack": 0, "error": 0}
    stop = threading.Event()

    def read():
        while not stop.is_set():
            try:
                data, _ = sock.recvfrom(65536)
            except socket.timeout:
                continue
            replies["ack" if data.startswith(b"/groove/ack") else "error"] += 1
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    t0 = time.monotonic()
    n = 0
    while True:
        t = time.monotonic() - t0
        if t >= seconds:
            break
        due = int(t * rate)
        while n < due:
            # A new sample twice a second keeps the decode worker busy too.
            dgram = sample if n % max(1, int(rate / 2)) == 0 else requests[n % len(requests)]
            sock.sendto(dgram, ("127.0.0.1", port))
            n += 1
        time.sleep(0.0005)
    deadline = time.monotonic() + 2.0
    while replies["ack"] + replies["error"] < n and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    reader.join()
    print(json.dumps({"sent": n, **replies, "seconds": seconds}), flush=True)


# --- the flood process -------------------------------------------------------------------
def flood_datagrams(seed: int = 7) -> list[bytes]:
    """One cycle of what the flood sends: valid requests, garbage and bundles (nothing that
    changes the music, so the timing measured is the flood's cost alone)."""
    rng = np.random.default_rng(seed)

    def bundle(*messages, nested: bytes | None = None) -> bytes:
        b = OscBundleBuilder(IMMEDIATELY)
        for address, args in messages:
            b.add_content(build_msg(address, args))
        dgram = b.build().dgram
        if nested is not None:  # builders only nest built bundles; splice one in by hand
            dgram += len(nested).to_bytes(4, "big") + nested
        return dgram

    ping_info = bundle(("/groove/ping", [7]), ("/groove/info", []))
    return [
        build_msg("/groove/ping", [1]).dgram, build_msg("/groove/info", []).dgram,
        rng.integers(0, 256, 48, dtype=np.uint8).tobytes(),  # noise
        build_msg("/groove/ping", [2]).dgram, ping_info,
        b"/groove/ping\x00\x00\x00\x00,iii\x00\x00\x00\x00\x01",  # truncated arguments
        build_msg("/groove/info", []).dgram, build_msg("/groove/nope", [1.5]).dgram,
        bundle(("/groove/ping", [3]), nested=ping_info),
        b"#bundle\x00" + rng.integers(0, 256, 200, dtype=np.uint8).tobytes(),  # a broken bundle
    ]


def run_flood(port: int, rate: float, seconds: float, senders: int) -> None:
    """Send `rate` datagrams/s from `senders` sockets for `seconds`, then stop by itself;
    print a JSON line with the counts. Bounded twice: by count (rate * seconds) and by time."""
    socks = []
    for _ in range(senders):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        socks.append(sock)
    cycle = flood_datagrams()
    limit = int(rate * seconds)
    replies = [0]
    stop = threading.Event()

    def read():  # count replies, so the table shows how much of the flood the server answered
        import selectors
        sel = selectors.DefaultSelector()
        for sock in socks:
            sel.register(sock, selectors.EVENT_READ)
        while not stop.is_set():
            for key, _ in sel.select(timeout=0.2):
                try:
                    while True:
                        key.fileobj.recv(65536)
                        replies[0] += 1
                except (BlockingIOError, ConnectionRefusedError):
                    pass
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    t0 = time.monotonic()
    n = dropped = 0
    while n < limit:
        t = time.monotonic() - t0
        if t >= seconds:
            break
        due = min(limit, int(t * rate))
        while n < due:
            try:
                socks[n % senders].sendto(cycle[n % len(cycle)], ("127.0.0.1", port))
            except (BlockingIOError, ConnectionRefusedError):
                dropped += 1  # our own send buffer full: counted, not retried
            n += 1
        time.sleep(0.0005)
    time.sleep(0.5)  # replies still in flight
    stop.set()
    reader.join()
    print(json.dumps({"sent": n, "send_dropped": dropped, "replies": replies[0],
                      "seconds": time.monotonic() - t0, "senders": senders}), flush=True)


# --- the receiver and one run ------------------------------------------------------------
class Receiver:
    """Keeps (address, bar, kernel arrival, time tag) of every hit and bar it is sent."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, int, float, float]] = []
        self._listener = TimestampedListener(self._keep, receive_buffer_bytes=8 << 20)
        self.port = self._listener.port

    def _keep(self, items) -> None:
        for m in items:
            if m.timetag_wall_s is not None and m.address in ("/groove/hit", "/groove/bar"):
                bar = m.params[3] if m.address == "/groove/hit" else m.params[0]
                self.rows.append((m.address, bar, m.arrival_wall_s, m.timetag_wall_s))

    def close(self) -> None:
        self._listener.close()


def request(port: int, address: str, *args, timeout_s: float = 3.0) -> list:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(timeout_s)
        s.sendto(build_msg(address, list(args)).dgram, ("127.0.0.1", port))
        while True:
            m = OscMessage(s.recv(65536))
            if m.params[:1] == [address]:
                return m.params


def one_run(args, bpm: float) -> dict:
    port = free_port()
    receiver = Receiver()
    env = dict(os.environ)
    if args.priority == "normal":
        env["GROOVE_LIVE_NO_REALTIME"] = "1"  # what a user without an rtprio limit gets
    else:
        env.pop("GROOVE_LIVE_NO_REALTIME", None)
    # Server, load and flood each run in a session of their own, as separate programs started
    # from separate terminals would: where the kernel groups CPU time by session (autogroup,
    # the default on desktop Linux) they then share the CPU as programs, not thread by thread.
    server = start_server(serve_argv(args, port, bpm, receiver.port), env)
    flood = decoy = None
    flood_port = port
    try:
        if args.flood_rate > 0 and args.flood_at == "decoy":
            flood_port = free_port()
            decoy = start_server(serve_argv(args, flood_port, bpm, None), env)
        request(port, "/groove/walk", 0.05, 1)  # a new latent, hence a decode, every bar
        rss_start = rss_mb(server.pid)
        load = subprocess.Popen([sys.executable, __file__, "--role", "load", "--port", str(port),
                                 "--rate", str(args.rate), "--seconds", str(args.seconds),
                                 "--bpm", str(bpm)], stdout=subprocess.PIPE, text=True,
                                start_new_session=True)
        if args.flood_rate > 0:
            flood = subprocess.Popen([sys.executable, __file__, "--role", "flood", "--port",
                                      str(flood_port), "--flood-rate", str(args.flood_rate),
                                      "--flood-senders", str(args.flood_senders),
                                      "--seconds", str(args.seconds)],
                                     stdout=subprocess.PIPE, text=True, start_new_session=True)
        t_begin = time.time()
        rss_samples: list[tuple[float, float]] = []  # (seconds into the run, MB)
        while load.poll() is None:  # sample RSS once a second while the load runs
            rss_samples.append((time.time() - t_begin, rss_mb(server.pid)))
            try:
                load.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                pass
        load_out = load.communicate(timeout=30)[0]
        flood_out = flood.communicate(timeout=30)[0] if flood is not None else ""
        t_end = time.time()
        rss_end = rss_mb(server.pid)
        rss_10s = next((mb for t, mb in rss_samples if t >= 10.0), rss_end)
        rss_half = next((mb for t, mb in rss_samples if t >= args.seconds / 2), rss_end)
        info_flat = request(port, "/groove/info")[1:]
        info = dict(zip(info_flat[0::2], info_flat[1::2]))
    finally:
        if flood is not None and flood.poll() is None:  # only if this run failed half-way
            flood.kill()
            flood.wait()
        for proc in (server, decoy):
            if proc is not None:
                stop_server(proc)
        receiver.close()
    rows = [r for r in receiver.rows if t_begin <= r[3] <= t_end]
    lag_ms = np.array([(arrival - tag) * 1000 for _, _, arrival, tag in rows])
    hit_lag_ms = np.array([(arrival - tag) * 1000 for address, _, arrival, tag in rows
                           if address == "/groove/hit"])
    late_bars = {bar for _, bar, arrival, tag in rows if (arrival - tag) * 1000 > LATE_MS}
    bars = {bar for _, bar, _, _ in rows}
    flood_counts = json.loads(flood_out.strip().splitlines()[-1]) if flood_out.strip() else None
    return {"bpm": bpm, "load": json.loads(load_out.strip().splitlines()[-1]), "info": info,
            "flood": flood_counts,
            "arrival_ms": np.percentile(lag_ms, [50, 99]).tolist() + [float(lag_ms.max())],
            "hit_arrival_ms": (np.percentile(hit_lag_ms, [50, 99]).tolist()
                               + [float(hit_lag_ms.max())]),
            "events": len(rows), "bars": len(bars), "late_bars_arrival": len(late_bars),
            "rss_mb": (rss_start, rss_10s, rss_half, rss_end)}


def commit_cost(bars: int = 2000) -> None:
    """Print the mean and p99 time the clock thread spends committing a bar."""
    from groove_live.live.clock import FakeClock
    from groove_live.live.events import BarContent, Hit
    from groove_live.live.scheduler import Scheduler
    from groove_live.live.sinks import OscSink
    from groove_live.live.timeline import Timeline
    from groove_live.spec import ModelSpec

    spec = ModelSpec(z_size=8)
    hits = tuple(Hit(step, step % spec.n_drums, 0.7, 0.1) for step in range(16))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    print("| output | bars | commit mean (ms) | commit p99 (ms) |")
    print("|---|---|---|---|")
    for bundles in (False, True):
        clock = FakeClock()
        timeline = Timeline()
        osc = OscSink(sock, [], bundles=bundles, wall_s=clock.wall_s)  # no target: no sends
        sched = Scheduler(clock, timeline, [osc], spec, bpm=120.0)
        sched.start(notify=False)
        sched.process(clock.now())
        costs_s = []
        for bar in range(bars):
            timeline.publish(bar, {bar: BarContent(hits, None, 0, "sample")}, strict=False)
            t0 = time.perf_counter()
            sched._commit(clock.now())
            costs_s.append(time.perf_counter() - t0)
            sched._heap.clear()  # what was committed is not sent here
        ms = np.array(costs_s) * 1000
        print(f"| {'OSC bundles' if bundles else 'OSC'} | {bars} | {ms.mean():.3f} | "
              f"{np.percentile(ms, 99):.3f} |", flush=True)
    sock.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="an exported .onnx (default: the bundled model)")
    ap.add_argument("--bpms", default="120,174")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--rate", type=float, default=1000.0, help="OSC requests per second")
    ap.add_argument("--flood-rate", type=float, default=0.0,
                    help="also flood the server's port with this many datagrams/s (0: no flood)")
    ap.add_argument("--flood-senders", type=int, default=1,
                    help="spread the flood over this many source ports")
    ap.add_argument("--flood-at", choices=["server", "decoy"], default="server",
                    help="flood the measured server, or a second, silent one (the control: the "
                         "same work for the machine, none for the measured server)")
    ap.add_argument("--priority", choices=["realtime", "normal"],
                    help="the server's scheduling: normal = GROOVE_LIVE_NO_REALTIME=1 (default: "
                         "normal with --flood-rate, else realtime unless that variable is set)")
    ap.add_argument("--role", default="main", choices=["main", "load", "flood"],
                    help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--bpm", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--commit-cost", action="store_true",
                    help="only time the clock thread's bar commit in-process (see above)")
    args = ap.parse_args()
    if args.commit_cost:
        commit_cost()
        return 0
    if args.role == "load":
        run_load(args.port, args.rate, args.seconds, args.bpm)
        return 0
    if args.role == "flood":
        run_flood(args.port, args.flood_rate, args.seconds, args.flood_senders)
        return 0
    if args.priority is None:
        normal = args.flood_rate > 0 or os.environ.get("GROOVE_LIVE_NO_REALTIME")
        args.priority = "normal" if normal else "realtime"
    flood = (f", flood {args.flood_rate:g} datagrams/s from {args.flood_senders} port(s) at "
             f"the {args.flood_at}" if args.flood_rate > 0 else "")
    print(f"# live timing: {args.seconds:g} s per tempo, {args.rate:g} OSC requests/s{flood}, "
          f"server priority {args.priority}, model {args.model or 'bundled'}")
    print(f"# {platform.platform()}, {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}, Python {platform.python_version()}")
    header = ("| BPM | bars | events | send-intended p50 / p99 / max (ms) | arrival-intended p50 / p99 / "
              "max (ms) | hits only: arrival-intended p50 / p99 / max (ms) | late bars (server / "
              "receiver) | missed bars | requests sent / replied | flood sent / replied | "
              "decode max (ms) | RSS start / 10 s / half-time / end (MB) |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for bpm in (float(b) for b in args.bpms.split(",")):
        r = one_run(args, bpm)
        i, ld, a, h, fl = r["info"], r["load"], r["arrival_ms"], r["hit_arrival_ms"], r["flood"]
        if int(i["realtime"]) != (args.priority == "realtime"):
            print(f"# note: asked for {args.priority} priority, the server reports realtime="
                  f"{i['realtime']}", flush=True)
        flood_cell = f"{fl['sent']} / {fl['replies']}" if fl else "-"
        print(f"| {bpm:g} | {r['bars']} | {r['events']} | {i['send_lag_p50_ms']:.3f} / "
              f"{i['send_lag_p99_ms']:.3f} / {i['send_lag_max_ms']:.3f} | {a[0]:.3f} / {a[1]:.3f} / "
              f"{a[2]:.3f} | {h[0]:.3f} / {h[1]:.3f} / {h[2]:.3f} | {i['late_bars']} / "
              f"{r['late_bars_arrival']} | {i['missed_bars']} | "
              f"{ld['sent']} / {ld['ack'] + ld['error']} | {flood_cell} | "
              f"{i['decode_max_ms']:.2f} | "
              f"{' / '.join(f'{mb:.1f}' for mb in r['rss_mb'])} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
