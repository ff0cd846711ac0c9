"""Datagrams with forged source addresses against the real server and its real socket.

UDP sources can be forged, so these tests forge them: a raw socket (IP_HDRINCL) writes the IP
and UDP headers with whatever source the test names. Forged packets only ever go to loopback,
or into a network namespace this test creates (only a loopback device, with 10.77.0.0/24 and
10.99.0.9 on it): nothing sent there can reach a real network. Needs root; skipped otherwise.
"""
from __future__ import annotations

import ctypes
import os
import socket
import struct
import subprocess
from ipaddress import IPv4Address, IPv4Network

import pytest
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message_builder import build_msg

from groove_live.live.events import BarEvent, HitEvent
from groove_live.live.guard import Limits, kernel_route
from groove_live.live.osc_api import MAX_REPLY_BYTES
from groove_live.live.osc_wire import decode_message

from .conftest import OfflineUdpServer

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="forging sources needs root")

CLONE_NEWNET = 0x40000000
LAN = IPv4Network("10.77.0.0/24")  # the "jam network" inside the namespace
SERVER_LAN = "10.77.0.1"
VICTIM = ("10.77.0.9", 5000)  # an allowed address that never sent anything
OUTSIDER = ("10.99.0.9", 5000)  # an address outside every allow-list
FENCE = b"/fence\x00\x00,\x00\x00\x00"
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # root may pass net.core.rmem_max
_in_namespace = False


@pytest.fixture
def netns():
    """Move this thread (and the threads and processes it starts) into a new network
    namespace for the test, and back afterwards."""
    global _in_namespace
    libc = ctypes.CDLL(None, use_errno=True)
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    if libc.unshare(CLONE_NEWNET) != 0:
        os.close(original)
        pytest.skip(f"cannot create a network namespace (errno {ctypes.get_errno()})")
    try:
        for cmd in (["ip", "link", "set", "lo", "up"],
                    ["ip", "addr", "add", f"{SERVER_LAN}/24", "brd", "+", "dev", "lo"],
                    ["ip", "addr", "add", f"{OUTSIDER[0]}/32", "dev", "lo"]):
            subprocess.run(cmd, check=True, capture_output=True)
        assert kernel_route("8.8.8.8", 53) != "unicast", "the namespace must have no way out"
        _in_namespace = True
        yield
    finally:
        _in_namespace = False
        if libc.setns(original, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "could not return to the original namespace")
        os.close(original)


def forge(source: tuple[str, int], destination: tuple[str, int], payload: bytes) -> None:
    """Send one UDP datagram whose IP header claims `source`."""
    dst = IPv4Address(destination[0])
    assert dst.is_loopback or (_in_namespace and (dst in LAN or str(dst) == OUTSIDER[0])), \
        f"forged packets go to loopback or the test's own namespace only, not {dst}"
    udp = struct.pack("!HHHH", source[1], destination[1], 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64,
                     socket.IPPROTO_UDP, 0,  # the kernel fills in the header checksum
                     socket.inet_aton(source[0]), socket.inet_aton(destination[0]))
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP) as raw:
        raw.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
        raw.sendto(ip + udp, (destination[0], 0))


class Listener:
    """A UDP socket at an address that never sends: counts what the server sends it."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # Room for every datagram of a test (a few hundred): an overflow would drop some.
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)
        self.sock.bind(address)
        self.sock.settimeout(2.0)

    def drain(self, server_sock: socket.socket) -> list[bytes]:
        """Everything the server sent here so far: a fence sent last from the server's own
        socket arrives after all of it."""
        server_sock.sendto(FENCE, self.address)
        got = []
        while (dgram := self.sock.recv(65536)) != FENCE:
            got.append(dgram)
        return got

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def rigs():
    made: list = []

    def make(cls, *args, **kw):
        made.append(cls(*args, **kw))
        return made[-1]
    yield make
    for thing in reversed(made):
        thing.close()


def info_bundle(n: int = 64) -> bytes:
    b = OscBundleBuilder(IMMEDIATELY)
    for _ in range(n):
        b.add_content(build_msg("/groove/info", []))
    return b.build().dgram


def outputs_between(rig, t0_s: float, t1_s: float) -> int:
    return sum(1 for e, _ in rig.recording.records
               if isinstance(e, (HitEvent, BarEvent)) and t0_s <= e.t_s < t1_s)


# --- loops: the server's own address as a source --------------------------------------------
def test_a_forged_self_source_is_dropped_so_no_loop_starts(rigs):
    rig = rigs(OfflineUdpServer)
    own = ("127.0.0.1", rig.port)
    payloads = [b"/groove/info", build_msg("/groove/info", []).dgram,  # 12 bytes, then a real one
                build_msg("/groove/target", []).dgram, build_msg("/groove/nope", [1]).dgram,
                info_bundle()]
    for payload in payloads:
        forge(own, own, payload)
    rig.handle(len(payloads))
    assert rig.server.guard.drops["self"] == len(payloads)
    assert rig.server.replies == 0 and rig.server.osc_sink.targets == ()
    rig.run_until(rig.clock.now() + 2.0)
    forge(("127.0.0.1", 9), own, FENCE)  # handle(1) fails if anything else arrived meanwhile
    rig.handle(1)


def test_listening_on_every_address_each_of_them_is_self(netns, rigs):
    rig = rigs(OfflineUdpServer, "0.0.0.0", allow=(LAN,))
    for host in (SERVER_LAN, "127.0.0.1", "127.0.0.2", "10.77.0.50"):  # on lo, all of a /24 is ours
        forge((host, rig.port), (SERVER_LAN, rig.port), build_msg("/groove/info", []).dgram)
    rig.handle(4)
    assert rig.server.guard.drops["self"] == 4 and rig.server.replies == 0
    victim = rigs(Listener, VICTIM)
    forge(VICTIM, (SERVER_LAN, rig.port), build_msg("/groove/target", [SERVER_LAN, rig.port]).dgram)
    rig.handle(1)
    (reply,) = victim.drain(rig.server.sock)
    assert "groove-live itself" in decode_message(reply).args[1]


# --- who is answered ------------------------------------------------------------------------
@pytest.mark.parametrize("allow", [(), (LAN,)])
def test_senders_outside_loopback_and_allow_get_nothing(netns, rigs, allow):
    rig = rigs(OfflineUdpServer, "0.0.0.0", allow=allow)
    outsider = rigs(Listener, OUTSIDER)
    sources = [OUTSIDER, ("8.8.8.8", 53)] + ([] if allow else [VICTIM])
    payloads = [build_msg("/groove/info", []).dgram, build_msg("/groove/target", []).dgram,
                build_msg("/groove/tempo", [300]).dgram, info_bundle(), b"garbage"]
    for source in sources:
        for payload in payloads:
            forge(source, (SERVER_LAN, rig.port), payload)
    rig.handle(len(sources) * len(payloads))
    assert rig.server.guard.drops["not_allowed"] == len(sources) * len(payloads)
    assert rig.server.replies == 0 and rig.server.osc_sink.targets == ()
    assert rig.server.scheduler.bpm == 240.0  # and nothing was acted on
    rig.run_until(rig.clock.now() + 2.0)
    assert outsider.drain(rig.server.sock) == []


def test_a_forged_target_from_an_allowed_network_expires_unless_renewed(netns, rigs):
    ttl_s = 8.0
    rig = rigs(OfflineUdpServer, "0.0.0.0", allow=(LAN,), limits=Limits(target_ttl_s=ttl_s))
    victim = rigs(Listener, VICTIM)
    forged = build_msg("/groove/target", []).dgram  # "send hits to me", 20 bytes
    assert len(forged) == 20
    forge(VICTIM, (SERVER_LAN, rig.port), forged)
    rig.handle(1)
    t_set = rig.clock.now()
    (ack,) = victim.drain(rig.server.sock)
    assert decode_message(ack).address == "/groove/ack"
    assert rig.server.osc_sink.expiries() == {VICTIM: t_set + ttl_s}
    rig.run_until(t_set + ttl_s + 5.0)
    got = victim.drain(rig.server.sock)
    # Exactly the hits and bars due before the expiry, and nothing after it.
    assert len(got) == outputs_between(rig, t_set, t_set + ttl_s) > 20
    rig.run_until(rig.clock.now() + 10.0)
    assert victim.drain(rig.server.sock) == []
    info = dict(zip(*[iter(list(decode_message(ask_info(rig)).args)[1:])] * 2))
    assert info["targets"] == ""  # and it is gone from the list

    # Renewal: any datagram from the target's own address, before it expires, extends it.
    forge(VICTIM, (SERVER_LAN, rig.port), forged)
    rig.handle(1)
    t_set = rig.clock.now()
    rig.run_until(t_set + ttl_s - 1.0)
    forge(VICTIM, (SERVER_LAN, rig.port), build_msg("/groove/ping", []).dgram)
    rig.handle(1)
    rig.run_until(t_set + 3 * ttl_s)
    got = [decode_message(d).address for d in victim.drain(rig.server.sock)]
    renewed_until = t_set + ttl_s - 1.0 + ttl_s
    assert got.count("/groove/ack") == 2
    assert len(got) - 2 == outputs_between(rig, t_set, renewed_until)


def ask_info(rig) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.bind(("127.0.0.1", 0))
        client.settimeout(2.0)
        client.sendto(build_msg("/groove/info", []).dgram, ("127.0.0.1", rig.port))
        rig.handle(1)
        return client.recv(65536)


def test_a_bundle_of_infos_cannot_amplify_without_bound(netns, rigs):
    limits = Limits()
    rig = rigs(OfflineUdpServer, "0.0.0.0", allow=(LAN,), limits=limits)
    victim = rigs(Listener, VICTIM)
    bundle = info_bundle()
    for _ in range(20):  # 1,280 requests for /groove/info, each reply ~60x the request's size
        forge(VICTIM, (SERVER_LAN, rig.port), bundle)
    rig.handle(20)
    got = victim.drain(rig.server.sock)
    sent_bytes = sum(map(len, got))
    assert got and sent_bytes <= limits.byte_burst + MAX_REPLY_BYTES
    assert sent_bytes < 1.5 * 20 * len(bundle)  # it sent back about what it got, not 60x
    assert rig.server.guard.drops["rate_limited"] > 1000
    # A second later, the sender has earned a second's worth, no more.
    rig.clock.advance_to(rig.clock.now() + 1.0)
    for _ in range(20):
        forge(VICTIM, (SERVER_LAN, rig.port), bundle)
    rig.handle(20)
    more = sum(map(len, victim.drain(rig.server.sock)))
    assert 0 < more <= limits.bytes_per_s + MAX_REPLY_BYTES
    # Loopback clients are unaffected.
    assert decode_message(ask_info(rig)).address == "/groove/ack"


def test_many_forged_senders_together_get_a_bounded_total(netns, rigs):
    limits = Limits()
    rig = rigs(OfflineUdpServer, "0.0.0.0", allow=(LAN,), limits=limits)
    bundle = info_bundle()
    for host in range(2, 200):  # nobody listens at these: the replies just vanish on lo
        forge((f"10.77.0.{host}", 6000), (SERVER_LAN, rig.port), bundle)
        rig.handle(1)  # one at a time: 200 bundles would overflow the socket's buffer
    total_burst = limits.byte_burst * limits.total_factor
    assert 0 < rig.server.reply_bytes <= total_burst + MAX_REPLY_BYTES


def test_broadcast_and_multicast_need_an_explicit_allow(netns, rigs):
    rig = rigs(OfflineUdpServer, "0.0.0.0", allow=(LAN,))
    victim = rigs(Listener, VICTIM)
    for host in ("10.77.0.255", "255.255.255.255", "239.1.2.3"):
        forge(VICTIM, (SERVER_LAN, rig.port), build_msg("/groove/target", [host, 5000]).dgram)
    rig.handle(3)
    reasons = [decode_message(d).args[1] for d in victim.drain(rig.server.sock)]
    assert ["broadcast" in reasons[0], "broadcast" in reasons[1], "multicast" in reasons[2]] == \
        [True, True, True], reasons
    # A forged broadcast source would make every host on the network the reply's victim.
    forge(("10.77.0.255", 5000), (SERVER_LAN, rig.port), build_msg("/groove/info", []).dgram)
    rig.handle(1)
    assert rig.server.guard.drops["bad_source"] == 1 and rig.server.osc_sink.targets == ()

    named = rigs(OfflineUdpServer, "0.0.0.0",
                 allow=(LAN, IPv4Network("10.77.0.255/32"), IPv4Network("239.1.2.0/24")))
    assert named.server.sock.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST) == 1
    for host in ("10.77.0.255", "239.1.2.3"):
        forge(VICTIM, (SERVER_LAN, named.port), build_msg("/groove/target", [host, 5000]).dgram)
    named.handle(2)
    assert [decode_message(d).address for d in victim.drain(named.server.sock)] == \
        ["/groove/ack", "/groove/ack"]
    assert set(named.server.osc_sink.targets) == {("10.77.0.255", 5000), ("239.1.2.3", 5000)}


def test_a_running_server_drops_a_forged_self_source_flood(rigs):
    """The same through the real OSC thread: nothing answered, nothing targeted."""
    from groove_live.live.server import ServeConfig, Server

    from .fake_engine import FakeEngine
    from .osc_client import OscClient

    server = rigs(Server, FakeEngine(), ServeConfig(port=0, bpm=240.0, seed=3))
    server.start()
    own = server.listening
    client = rigs(OscClient, own)
    assert client.request("/groove/target").address == "/groove/ack"
    for k in range(100):  # the 12-byte packet that used to start a loop, and real requests
        forge(own, own, [b"/groove/info", build_msg("/groove/info", []).dgram,
                         build_msg("/groove/target", []).dgram][k % 3])
    # Sent after the flood on the same path: once it is answered, the flood was handled.
    assert client.request("/groove/ping", 1).address == "/groove/ack"
    assert server.guard.drops["self"] == 100
    assert server.replies == 2 and server.osc_sink.targets == (("127.0.0.1", client.port),)


def test_serve_with_allow_answers_that_network_only(netns, procs):
    """The command as a user runs it for a LAN jam, inside the test's namespace."""
    from .procs import free_udp_port, serve_argv

    port = free_udp_port()
    p = procs(serve_argv("--port", str(port), "--host", "0.0.0.0", "--allow", str(LAN)))
    p.wait_line(r"ready in", timeout_s=20)
    assert f"answering loopback and {LAN}" in p.text("out")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as lan, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as outside:
        lan.bind(("10.77.0.20", 0))
        outside.bind((OUTSIDER[0], 0))
        lan.settimeout(5.0)
        outside.sendto(build_msg("/groove/ping", [1]).dgram, (SERVER_LAN, port))
        lan.sendto(build_msg("/groove/info", []).dgram, (SERVER_LAN, port))
        info = decode_message(lan.recv(65536)).args[1:]
        info = dict(zip(info[::2], info[1::2]))
        assert info["dropped_not_allowed"] == 1 and info["allow"] == f"loopback and {LAN}"
        outside.setblocking(False)
        with pytest.raises(BlockingIOError):  # answered after the info request: nothing came
            outside.recv(65536)
    assert p.stop() == 0
