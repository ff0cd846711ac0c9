"""No network traffic of its own: the real `groove-live serve` watched in a fresh network namespace.

The pytest side starts this same file under `unshare` (new network, mount and PID namespaces;
a user namespace too when not root). Inside, `watch` builds a world where every way out is
observed: `lo`, plus a veth interface d0 (10.99.0.1/24) carrying the default route, so any
packet not for loopback leaves through d0 and is seen by an AF_PACKET socket; /etc/resolv.conf
(bind-mounted, namespace only) names a fake DNS server on d0's own address that records every
query and answers every A query with 10.99.0.9 (an address on d0), so a lookup that goes on to
connect shows up as packets too. Nothing here can reach a real network: the namespace has none.

A control run (a lookup and one datagram) must be seen by the same harness, so a harness that
cannot see traffic fails instead of passing.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest

if __package__:
    from .osc_client import OscClient
    from .procs import REPO, Proc
else:  # run as a script inside the namespace
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from osc_client import OscClient
    from procs import REPO, Proc

D0_ADDRESS = "10.99.0.1"  # d0's own address; the fake DNS server listens here
ANSWER_ADDRESS = "10.99.0.9"  # every A query's answer: on d0's subnet, so a connect leaves via d0
WATCH_S = 30.0  # how long the server is watched (telemetry uploaders retry every few seconds)
REPORT_MARK = "NETNS-REPORT "
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


# --- inside the namespace -------------------------------------------------------------------


def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True)


def _setup_network(scratch: Path) -> None:
    """lo up; d0 with the default route; DNS pointed at d0 (this namespace only)."""
    # IPv6 off before d0 exists: its link-local address would send router solicitations and
    # duplicate-address probes on d0 by itself, which are not the traffic under test.
    Path("/proc/sys/net/ipv6/conf/default/disable_ipv6").write_text("1\n")
    _sh("ip", "link", "set", "lo", "up")
    # A veth pair, both ends here: d0 carries the address and the default route, its peer is up
    # only so that d0 has carrier and transmits (a dummy interface would do, but not every
    # kernel has the dummy module; every container kernel has veth). NOARP: a packet to any
    # address leaves at once, instead of waiting behind an ARP request nobody answers.
    _sh("ip", "link", "add", "d0", "type", "veth", "peer", "name", "d0peer")
    _sh("ip", "link", "set", "d0", "arp", "off")
    _sh("ip", "addr", "add", f"{D0_ADDRESS}/24", "dev", "d0")
    _sh("ip", "link", "set", "d0peer", "up")
    _sh("ip", "link", "set", "d0", "up")
    _sh("ip", "route", "add", "default", "dev", "d0")
    # Name lookups must go to the fake server and nowhere else: plain files-then-DNS (no nscd,
    # systemd-resolved or mDNS module, whose sockets would lead out of the namespace).
    for name, text in (("resolv.conf", f"nameserver {D0_ADDRESS}\n"),
                       ("nsswitch.conf", "hosts: files dns\n")):
        private = scratch / name
        private.write_text(text)
        _sh("mount", "--bind", str(private), str(Path("/etc") / name))


def _dns_question(query: bytes) -> tuple[str, int, int]:
    """(name, type, end of the question section) of a DNS query."""
    labels, i = [], 12
    while query[i]:
        labels.append(query[i + 1:i + 1 + query[i]].decode("ascii", "replace"))
        i += 1 + query[i]
    qtype = struct.unpack("!H", query[i + 1:i + 3])[0]
    return ".".join(labels), qtype, i + 5


def _dns_answer(query: bytes, qtype: int, end: int) -> bytes:
    """The reply: ANSWER_ADDRESS for A (TTL 0, so every use is a new lookup), no data otherwise."""
    ident = query[:2]
    answers = b""
    if qtype == 1:
        answers = (struct.pack("!HHHIH", 0xC00C, 1, 1, 0, 4)
                   + socket.inet_aton(ANSWER_ADDRESS))
    header = ident + struct.pack("!HHHHH", 0x8180, 1, 1 if answers else 0, 0, 0)
    return header + query[12:end] + answers


class FakeDns:
    """A DNS server on D0_ADDRESS:53 (UDP and TCP) that records every query it gets."""

    def __init__(self) -> None:
        self.queries: list[dict] = []
        self._lock = threading.Lock()
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((D0_ADDRESS, 53))
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.bind((D0_ADDRESS, 53))
        self.tcp.listen(16)
        for s in (self.udp, self.tcp):
            s.settimeout(0.2)  # how often the threads look at the stop flag
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=f, daemon=True) for f in (self._udp, self._tcp)]
        for t in self._threads:
            t.start()

    def _record(self, proto: str, query: bytes) -> bytes | None:
        try:
            name, qtype, end = _dns_question(query)
        except (IndexError, struct.error):
            name, qtype, end = "?", 0, 0
        with self._lock:
            self.queries.append({"proto": proto, "name": name, "type": qtype,
                                 "t_s": time.monotonic()})
        return _dns_answer(query, qtype, end) if end else None

    def _udp(self) -> None:
        while not self._stop.is_set():
            try:
                query, peer = self.udp.recvfrom(4096)
            except socket.timeout:
                continue
            reply = self._record("udp", query)
            if reply:
                self.udp.sendto(reply, peer)

    def _tcp(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.tcp.accept()
            except socket.timeout:
                continue
            with conn:
                conn.settimeout(2.0)
                try:
                    size = struct.unpack("!H", conn.recv(2))[0]
                    query = conn.recv(size)
                except (OSError, struct.error):
                    with self._lock:
                        self.queries.append({"proto": "tcp", "name": "?", "type": 0,
                                             "t_s": time.monotonic()})
                    continue
                reply = self._record("tcp", query)
                if reply:
                    conn.sendall(struct.pack("!H", len(reply)) + reply)

    def stop(self) -> list[dict]:
        """Stop, after answering what is already queued; all queries seen."""
        self._stop.set()
        for t in self._threads:
            t.join()
        self.udp.setblocking(False)
        while True:  # datagrams that arrived after the last read still count
            try:
                self._record("udp", self.udp.recv(4096))
            except BlockingIOError:
                break
        self.udp.close()
        self.tcp.close()
        return self.queries


def _describe_packet(frame: bytes, ethertype: int) -> dict:
    """Enough of a captured packet to say where it went."""
    has_ethernet_header = len(frame) >= 14 and struct.unpack("!H", frame[12:14])[0] == ethertype
    ip = frame[14:] if has_ethernet_header else frame
    info: dict = {"ethertype": hex(ethertype), "bytes": len(frame)}
    if ethertype == 0x0800 and len(ip) >= 20:
        ihl = (ip[0] & 0x0F) * 4
        info.update(proto=ip[9], src=socket.inet_ntoa(ip[12:16]), dst=socket.inet_ntoa(ip[16:20]))
        if ip[9] in (6, 17) and len(ip) >= ihl + 4:
            info["dport"] = struct.unpack("!H", ip[ihl + 2:ihl + 4])[0]
    return info


class Capture:
    """Every packet on every interface but lo, from an AF_PACKET socket."""

    def __init__(self) -> None:
        self.packets: list[dict] = []
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.settimeout(0.2)  # how often the thread looks at the stop flag
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _keep(self, frame: bytes, addr: tuple) -> None:
        ifname, ethertype, pkttype = addr[0], addr[1], addr[2]
        if ifname != "lo":
            self.packets.append({"if": ifname, "outgoing": pkttype == PACKET_OUTGOING,
                                 "t_s": time.monotonic(),
                                 **_describe_packet(frame, ethertype)})

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._keep(*self.sock.recvfrom(65536))
            except socket.timeout:
                continue

    def stop(self) -> list[dict]:
        """Stop; every packet seen, including those still queued. A packet is handed to this
        socket as it is transmitted, so once the sender has exited all of its are queued."""
        self._stop.set()
        self._thread.join()
        self.sock.setblocking(False)
        while True:
            try:
                self._keep(*self.sock.recvfrom(65536))
            except BlockingIOError:
                break
        self.sock.close()
        return self.packets


def _drive_server(proc: Proc, port: int, deadline_s: float) -> dict:
    """Play the server over loopback until `deadline_s` (monotonic): target, info, samples."""
    proc.wait_line(r"ready in", timeout_s=max(1.0, deadline_s - time.monotonic()))
    client = OscClient(("127.0.0.1", port))
    replies: list[str] = []
    try:
        def ask(address: str, *args) -> None:
            reply = client.request(address, *args, timeout_s=5.0)
            replies.append(f"{reply.address} {address}")

        ask("/groove/target")  # hits and bars come to this client, over loopback
        ask("/groove/info")
        seed = 1
        while time.monotonic() < deadline_s:
            ask("/groove/sample", 0.9, seed)
            ask("/groove/info")
            seed += 1
            bars_seen = len(client.messages("/groove/bar"))
            # Paced by the server's own bars (one per 2 s at 120 BPM), not by sleeps.
            client.wait_for(lambda c: len(c.messages("/groove/bar")) > bars_seen,
                            timeout_s=max(0.0, deadline_s - time.monotonic()))
        return {"replies": replies, "hits": len(client.messages("/groove/hit")),
                "bars": len(client.messages("/groove/bar"))}
    finally:
        client.close()


def watch(argv: list[str], window_s: float, serve_port: int | None) -> dict:
    """Run `argv` in this (fresh) namespace for `window_s` (or until it exits) and report every
    DNS query and non-loopback packet seen meanwhile; with `serve_port`, drive it as a server."""
    with tempfile.TemporaryDirectory(prefix="netns-") as scratch:
        _setup_network(Path(scratch))
        capture = Capture()
        dns = FakeDns()
        proc = Proc(argv)
        deadline_s = proc.t_start_s + window_s
        report: dict = {}
        try:
            if serve_port is not None:
                report["drive"] = _drive_server(proc, serve_port, deadline_s)
            else:
                proc.popen.wait(timeout=window_s)
        except (AssertionError, TimeoutError, OSError, subprocess.TimeoutExpired) as e:
            report["error"] = f"{type(e).__name__}: {e}"  # reported with what was seen so far
        finally:
            report["rc"] = proc.stop()
            report["watched_s"] = round(time.monotonic() - proc.t_start_s, 1)
            report["output"] = proc.text()
            # Times in the report: seconds after the command started.
            report["dns"] = [{**q, "t_s": round(q["t_s"] - proc.t_start_s, 2)} for q in dns.stop()]
            report["packets"] = [{**p, "t_s": round(p["t_s"] - proc.t_start_s, 2)}
                                 for p in capture.stop()]
    return report


def main(args: list[str]) -> None:
    """watch WINDOW_S SERVE_PORT|- ARGV...: print the report as one line."""
    if args[:1] != ["watch"] or len(args) < 4:
        sys.exit(f"usage: {Path(__file__).name} watch WINDOW_S SERVE_PORT|- ARGV...")
    window_s, port, argv = float(args[1]), args[2], args[3:]
    report = watch(argv, window_s, None if port == "-" else int(port))
    print(REPORT_MARK + json.dumps(report), flush=True)


# --- the tests (outside) ---------------------------------------------------------------------


def _unshare() -> list[str]:
    # As root, plain new namespaces; otherwise a user namespace gives this process root's
    # powers over its own new network and mounts (where the kernel allows user namespaces).
    # A PID namespace too: if the harness dies or is killed on timeout, the kernel kills
    # everything it started (the server included), so nothing outlives the test.
    user = [] if os.geteuid() == 0 else ["--map-root-user"]
    return ["unshare", *user, "--net", "--mount", "--pid", "--fork", "--kill-child",
            "--mount-proc", "--"]


def _in_netns(argv: list[str], window_s: float, serve_port: int | None = None) -> dict:
    env = dict(os.environ)
    # The product must turn telemetry off itself: nothing inherited from here may do it for it.
    env.pop("ORT_DISABLE_TELEMETRY", None)
    cmd = [*_unshare(), sys.executable, str(Path(__file__).resolve()), "watch", str(window_s),
           "-" if serve_port is None else str(serve_port), *argv]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=window_s + 90)
    lines = [l for l in done.stdout.splitlines() if l.startswith(REPORT_MARK)]
    assert done.returncode == 0 and lines, (
        f"the namespace harness failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
    return json.loads(lines[-1][len(REPORT_MARK):])


@pytest.fixture(scope="module")
def netns() -> None:
    """Skip where a private network namespace with a veth pair cannot be made here."""
    for tool in ("unshare", "ip", "mount"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (iproute2 / util-linux; .ci/install_clients.sh)")
    probe = subprocess.run(
        [*_unshare(), "sh", "-c",
         "ip link add d0 type veth peer name d0peer && mount --bind /etc/hosts /etc/hosts"],
        capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a network namespace with a veth pair here: "
                    f"{probe.stderr.strip() or probe.returncode}")


# Which files may import onnxruntime themselves: only the module that turns telemetry off first.
ORT_GATE = Path("groove_live") / "ort.py"
PRODUCT_DIRS = ("groove_live", "export", "train", "benchmarks", "examples")


def test_onnxruntime_is_imported_only_through_groove_live_ort():
    pattern = re.compile(r"^\s*(import onnxruntime|from onnxruntime\b)", re.MULTILINE)
    offenders = [str(f.relative_to(REPO)) for d in PRODUCT_DIRS
                 for f in sorted((REPO / d).rglob("*.py"))
                 if f.relative_to(REPO) != ORT_GATE and pattern.search(f.read_text())]
    assert offenders == [], f"import onnxruntime via `from groove_live.ort import ort`: {offenders}"
    # The code above must be able to see an import: the gate itself has one.
    assert pattern.search((REPO / ORT_GATE).read_text())


def test_telemetry_is_off_before_onnxruntime_loads():
    # Record the variable at the moment onnxruntime's module is first looked up: set after
    # that it is too late (onnxruntime reads it once, at start-up).
    code = textwrap.dedent("""
        import os, sys
        class Spy:
            seen = []
            def find_spec(self, name, path=None, target=None):
                if name == "onnxruntime":
                    self.seen.append(os.environ.get("ORT_DISABLE_TELEMETRY"))
                return None
        sys.meta_path.insert(0, Spy())
        from groove_live.engine import Engine
        print(Spy.seen)
    """)
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["['1']"], done.stdout


@pytest.mark.slow
@pytest.mark.clients
def test_the_harness_sees_a_lookup_and_a_packet(netns):
    # The control: a lookup and one datagram to the address it returned, the shape of any
    # phone-home. If this is not seen, "nothing seen" below would mean nothing.
    code = ("import socket; a = socket.getaddrinfo('example.invalid', 9, socket.AF_INET, "
            "socket.SOCK_DGRAM)[0][4]; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
            ".sendto(b'x', a); print(a[0])")
    report = _in_netns([sys.executable, "-c", code], window_s=WATCH_S)
    assert "error" not in report, report
    assert report["rc"] == 0 and ANSWER_ADDRESS in report["output"], report
    assert [q["name"] for q in report["dns"] if q["type"] == 1] == ["example.invalid"], report
    sent = [p for p in report["packets"] if p.get("dst") == ANSWER_ADDRESS and p.get("dport") == 9]
    # Seen leaving d0 (and arriving on its peer: every packet shows twice, both count).
    assert [(p["if"], p["outgoing"]) for p in sent] == [("d0", True), ("d0peer", False)], report


@pytest.mark.slow
@pytest.mark.clients
def test_serve_makes_no_network_traffic_of_its_own(netns):
    port = 57120
    report = _in_netns([str(Path(sys.executable).with_name("groove-live")), "serve",
                        "--port", str(port), "--seed", "3"], window_s=WATCH_S, serve_port=port)
    # It ran the whole window and was really played over loopback...
    assert "error" not in report, report
    assert report["watched_s"] >= WATCH_S and report["rc"] == 0, report
    drive = report["drive"]
    assert "/groove/ack /groove/target" in drive["replies"], report
    assert drive["replies"].count("/groove/ack /groove/sample") >= 5, report
    assert drive["hits"] > 0 and drive["bars"] >= 5, report
    # ...and asked no one's name and sent nothing anywhere but loopback.
    assert report["dns"] == [], report["dns"]
    assert report["packets"] == [], report["packets"]


if __name__ == "__main__":
    main(sys.argv[1:])
