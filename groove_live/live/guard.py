"""Who may talk to the live server and where it may send: the address policy.

UDP source addresses can be forged, so every reply and every stream of hits goes to an
address nobody proved they own. The policy keeps that harmless: requests are answered only
from loopback and the networks the user allowed at start (`--allow`); targets must be
loopback or allowed, never the server itself, broadcast or multicast only when allowed by
name; targets set from the network expire unless renewed; replies to each network sender
(and to all of them together) are rate-limited in messages and bytes.

Pure apart from two kernel probes (is this address ours? is it a broadcast?), both
injectable, and without a clock of its own: every call takes `now_s`, so tests are exact.
"""
from __future__ import annotations

import errno
import functools
import ipaddress
import socket
from collections import Counter
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Callable, Iterable

Address = tuple[str, int]

LOOPBACK = IPv4Network("127.0.0.0/8")
MULTICAST = IPv4Network("224.0.0.0/4")
THIS_NETWORK = IPv4Network("0.0.0.0/8")  # 0.x.x.x: "this host", never a destination
LIMITED_BROADCAST = IPv4Address("255.255.255.255")
MAX_SENDERS_TRACKED = 1024  # rate-limit buckets kept; the global bucket still bounds the rest


class AddressRefused(ValueError):
    """An address the user (or a request) may not use; the message says why, in one line."""


# --- parsing: ASCII only, numeric only, so nothing is ever looked up later ------------------
def parse_host(text: object) -> str:
    """A numeric IPv4 address (or the name localhost) -> its canonical dotted form."""
    if not isinstance(text, str):
        raise AddressRefused(f"host must be a string, got {type(text).__name__}")
    if text == "localhost":
        return "127.0.0.1"
    # str.isdigit() and int() accept non-ASCII digits ("١٢٧"); a host written with them is
    # not a number to the resolver, which would then look it up as a name on every send.
    if text.isascii():
        try:
            return str(IPv4Address(text))
        except ValueError:
            pass
        if _is_ipv6(text):
            raise AddressRefused(f"IPv6 is not supported (groove-live speaks IPv4), "
                                 f"got {_shown(text)}")
    raise AddressRefused(f"host must be a numeric IPv4 address or localhost, got {_shown(text)}")


def parse_network(text: str) -> IPv4Network:
    """`--allow` values: an IPv4 network in CIDR form or a single address (a /32)."""
    if not text.isascii():
        raise AddressRefused(f"not an IPv4 network or address: {_shown(text)}")
    if text == "localhost":
        text = "127.0.0.1"
    try:
        return IPv4Network(text)
    except ValueError:
        pass
    try:
        network = IPv4Network(text, strict=False)
    except ValueError:
        if _is_ipv6(text.partition("/")[0]):
            raise AddressRefused(f"IPv6 is not supported (groove-live speaks IPv4): {_shown(text)}")
        raise AddressRefused(f"not an IPv4 network or address: {_shown(text)}") from None
    raise AddressRefused(f"{text} has host bits set; did you mean {network}?")


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _shown(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


# Every datagram asks several of these questions about its sender; parsing the address each
# time was a tenth of what a flood of small requests cost. Bounded: forged sources cannot grow it.
@functools.lru_cache(maxsize=4096)
def is_loopback(host: str) -> bool:
    try:
        return IPv4Address(host) in LOOPBACK
    except ValueError:
        return False


# --- kernel probes: syscalls that never leave the machine ----------------------------------
def kernel_is_local(host: str) -> bool:
    """Whether `host` is one of this machine's addresses (only those can be bound)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((host, 0))
        except OSError:
            return False
        return True


def kernel_route(host: str, port: int) -> str:
    """'unicast', 'broadcast', or why there is no route. A UDP connect() only consults the
    routing table, which knows every interface's broadcast address; it sends nothing."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((host, port))
        except OSError as e:
            if e.errno == errno.EACCES:  # the kernel's answer for broadcast without SO_BROADCAST
                return "broadcast"
            return f"no route to {host} ({e.strerror or e})"
        return "unicast"


# source_refused's memo: a verdict is kept this long (a route or address change is seen within
# it), for at most this many senders.
SOURCE_VERDICT_TTL_S = 1.0
SOURCE_VERDICT_MAX = 1024


@dataclass(frozen=True)
class Limits:
    """Rate limits for senders outside loopback, and how long their targets live."""

    messages_per_s: float = 50.0  # per sender host
    message_burst: float = 128.0  # a full bundle (64 messages) fits, twice
    bytes_per_s: float = 16_384.0  # reply bytes per sender host
    byte_burst: float = 32_768.0  # about 16 /groove/info replies
    total_factor: float = 4.0  # all network senders together: this many senders' worth
    target_ttl_s: float = 60.0  # a target set from the network, unless renewed


class Bucket:
    """A token bucket that may run into debt: a reply whose size is known only after it is
    built is always sent whole, and the debt delays the next one."""

    __slots__ = ("tokens", "t_s")

    def __init__(self, tokens: float, t_s: float) -> None:
        self.tokens = tokens
        self.t_s = t_s

    def refill(self, rate_per_s: float, burst: float, now_s: float) -> float:
        if now_s > self.t_s:
            self.tokens = min(burst, self.tokens + (now_s - self.t_s) * rate_per_s)
            self.t_s = now_s
        return self.tokens


class Guard:
    def __init__(self, allow: Iterable[IPv4Network] = (), own: Address | None = None,
                 limits: Limits = Limits(),
                 is_local: Callable[[str], bool] = kernel_is_local,
                 route: Callable[[str, int], str] = kernel_route) -> None:
        self.allow = tuple(allow)
        self.own = own
        self.limits = limits
        self._is_local = is_local
        self._route = route
        self._senders: dict[str, tuple[Bucket, Bucket]] = {}  # host -> (messages, bytes)
        total = limits.total_factor
        self._all = (Bucket(limits.message_burst * total, 0.0),
                     Bucket(limits.byte_burst * total, 0.0))
        self.drops: Counter[str] = Counter()  # why datagrams or messages were dropped
        self._verdicts: dict[Address, tuple[str | None, float]] = {}  # sender -> (why, when)

    # --- addresses ----------------------------------------------------------------------
    def is_allowed_network(self, host: str) -> bool:
        address = IPv4Address(host)
        return address in LOOPBACK or any(address in n for n in self.allow)

    def is_self(self, host: str, port: int) -> bool:
        if self.own is None or port != self.own[1]:
            return False
        own_host = self.own[0]
        if own_host == host:
            return True
        # Listening on 0.0.0.0: every address of this machine is ours.
        return own_host == "0.0.0.0" and self._is_local(host)

    def source_refused(self, sender: Address, now_s: float | None = None) -> str | None:
        """Why a datagram from `sender` is dropped unanswered, or None to take it. With now_s,
        a verdict is reused for SOURCE_VERDICT_TTL_S: a flood from one address costs a dict
        lookup per datagram instead of address parsing and, for a network sender when
        listening on every interface, kernel probes."""
        if now_s is None:
            return self._source_verdict(sender)
        memo = self._verdicts.get(sender)
        if memo is not None and now_s - memo[1] < SOURCE_VERDICT_TTL_S:
            return memo[0]
        if len(self._verdicts) >= SOURCE_VERDICT_MAX:
            self._verdicts.clear()  # forged sources cannot grow it; the next ones refill it
        verdict = self._source_verdict(sender)
        self._verdicts[sender] = (verdict, now_s)
        return verdict

    def _source_verdict(self, sender: Address) -> str | None:
        host, port = sender
        try:
            address = IPv4Address(host)
        except ValueError:
            return "bad_source"
        if port == 0 or address in THIS_NETWORK or address in MULTICAST \
                or address == LIMITED_BROADCAST:
            return "bad_source"  # nobody can be answered there
        if self.is_self(host, port):
            return "self"  # our own reply or hit coming back (or forged to look like it)
        if not self.is_allowed_network(host):
            return "not_allowed"
        if address not in LOOPBACK and self.route_kind(host, port) == "broadcast":
            return "bad_source"  # a subnet's broadcast address: the reply would go to everyone
        return None

    def check_target(self, host: str, port: int) -> None:
        """Raise AddressRefused unless hits may be sent to host:port (numeric, parsed)."""
        address = IPv4Address(host)
        if address in THIS_NETWORK:
            raise AddressRefused(f"{host} is not a destination")
        if self.is_self(host, port):
            raise AddressRefused(f"{host}:{port} is groove-live itself")
        if address in MULTICAST:
            if not any(address in n and n.subnet_of(MULTICAST) for n in self.allow):
                raise AddressRefused(f"{host} is multicast: start groove-live with --allow "
                                     f"{host} (or its multicast group range) to send there")
            return
        route = self.route_kind(host, port)
        if route == "broadcast":
            if IPv4Network(host) not in self.allow:
                raise AddressRefused(f"{host} is a broadcast address: start groove-live with "
                                     f"--allow {host} to send there")
            return
        if not self.is_allowed_network(host):
            raise AddressRefused(f"{host} is not allowed: targets are loopback only unless "
                                 f"groove-live is started with --allow {host} (or a network "
                                 f"holding it)")
        if route != "unicast":
            raise AddressRefused(route)

    def check_send(self, host: str, port: int) -> str:
        """A --send address is the user's own choice on the command line, so it needs no
        --allow (and may be multicast or broadcast); only what can never work is refused.
        Returns its kind: 'unicast', 'broadcast' or 'multicast'."""
        address = IPv4Address(host)
        if address in THIS_NETWORK:
            raise AddressRefused(f"{host} is not a destination")
        if self.is_self(host, port):
            raise AddressRefused("that is groove-live's own address")
        if address in MULTICAST:
            return "multicast"
        route = self.route_kind(host, port)
        if route not in ("unicast", "broadcast"):
            raise AddressRefused(route)
        return route

    def route_kind(self, host: str, port: int = 9) -> str:
        if IPv4Address(host) == LIMITED_BROADCAST:  # whatever the routes say: it is everyone
            return "broadcast"
        return self._route(host, port)

    def target_expiry_s(self, requested_by: Address | None, now_s: float) -> float | None:
        """When a target set by `requested_by` expires: never when set from this machine."""
        if requested_by is None or is_loopback(requested_by[0]):
            return None
        return now_s + self.limits.target_ttl_s

    # --- rate limits ----------------------------------------------------------------------
    def take_message(self, sender: Address, now_s: float) -> bool:
        """Spend one message from the sender's allowance; False: drop it unhandled. Loopback
        is not limited: only this machine can send from it (Linux drops 127/8 sources
        arriving from a network), and a local program could send anything itself anyway."""
        host = sender[0]
        if is_loopback(host):
            return True
        lim, total = self.limits, self.limits.total_factor
        messages, reply_bytes = self._buckets(host, now_s)
        all_messages, all_bytes = self._all
        ok = (messages.refill(lim.messages_per_s, lim.message_burst, now_s) >= 1
              and reply_bytes.refill(lim.bytes_per_s, lim.byte_burst, now_s) > 0
              and all_messages.refill(lim.messages_per_s * total, lim.message_burst * total,
                                      now_s) >= 1
              and all_bytes.refill(lim.bytes_per_s * total, lim.byte_burst * total, now_s) > 0)
        if not ok:
            self.drops["rate_limited"] += 1
            return False
        messages.tokens -= 1
        all_messages.tokens -= 1
        return True

    def charge_reply(self, sender: Address, n_bytes: int, now_s: float) -> None:
        if is_loopback(sender[0]):
            return
        _, reply_bytes = self._buckets(sender[0], now_s)
        reply_bytes.tokens -= n_bytes
        self._all[1].tokens -= n_bytes

    def _buckets(self, host: str, now_s: float) -> tuple[Bucket, Bucket]:
        buckets = self._senders.get(host)
        if buckets is None:
            if len(self._senders) >= MAX_SENDERS_TRACKED:
                # Forget the longest-idle sender; the global bucket still bounds what a crowd
                # of (forged) senders can get.
                oldest = min(self._senders, key=lambda h: self._senders[h][0].t_s)
                del self._senders[oldest]
            buckets = (Bucket(self.limits.message_burst, now_s),
                       Bucket(self.limits.byte_burst, now_s))
            self._senders[host] = buckets
        return buckets

    def describe(self) -> str:
        allowed = ", ".join(str(n) for n in self.allow)
        return "loopback" + (f" and {allowed}" if allowed else " only (add networks with --allow)")
