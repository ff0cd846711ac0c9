"""Outputs behind one interface: OSC messages, time-tagged OSC bundles, and a recording sink."""
from __future__ import annotations

import socket
import threading
from typing import Callable

from pythonosc.osc_bundle_builder import OscBundleBuilder
from pythonosc.osc_message_builder import build_msg

from .events import BarEvent, Event, HitEvent

Address = tuple[str, int]
MAX_TARGETS = 16


class Sink:
    """An output. The scheduler calls prepare() when it plans an event and emit() at its time.

    prepare() runs at bar-commit time, so a sink can do its encoding there and emit() only
    sends; emit() runs on the clock thread and must never block or raise for user-caused
    trouble (an unreachable target is counted, not fatal).
    """

    name = "sink"

    def prepare(self, event: Event) -> None:
        pass

    def emit(self, event: Event) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return self.name


class OscSink(Sink):
    """`/groove/hit` per hit and `/groove/bar` per bar to every target.

    With `bundles`, each message goes in a bundle time-tagged with its intended time plus
    `latency_s`, for receivers that honour time tags (sclang forwarding to scsynth).
    Sends from the server's own socket, so replies and hits share one source port.
    """

    name = "osc"

    def __init__(self, sock: socket.socket, targets: list[Address] | None = None,
                 bundles: bool = False, latency_s: float = 0.0,
                 wall_s: Callable[[float], float] | None = None) -> None:
        if bundles and wall_s is None:
            raise ValueError("bundles need the clock's wall_s to write time tags")
        self._sock = sock
        # Copy-on-write tuple of (address, expires_t_s or None): the OSC thread adds, renews
        # and removes targets while the clock thread iterates. Addresses are numeric (host,
        # port): sendto() with a name would look it up on the clock thread at every send.
        self._targets: tuple[tuple[Address, float | None], ...] = tuple(
            (a, None) for a in dict.fromkeys(targets or ()))
        self._lock = threading.Lock()
        self.bundles = bundles
        self.latency_s = latency_s
        self._wall_s = wall_s
        self.send_errors = 0

    @property
    def targets(self) -> tuple[Address, ...]:
        return tuple(a for a, _ in self._targets)

    def expiries(self) -> dict[Address, float | None]:
        return dict(self._targets)

    def add_target(self, address: Address, expires_t_s: float | None = None) -> bool:
        """False when the target list is full. Adding a known target renews it; one that
        never expires (None) stays so."""
        with self._lock:
            known = dict(self._targets)
            if address in known:
                old = known[address]
                never = old is None or expires_t_s is None
                known[address] = None if never else max(old, expires_t_s)
                self._targets = tuple(known.items())
                return True
            if len(self._targets) >= MAX_TARGETS:
                return False
            self._targets = self._targets + ((address, expires_t_s),)
            return True

    def renew(self, address: Address, expires_t_s: float) -> bool:
        """Push back the expiry of a target that has one (a sign of life from it)."""
        with self._lock:
            known = dict(self._targets)
            old = known.get(address, None)
            if old is None or old >= expires_t_s:
                return False
            known[address] = expires_t_s
            self._targets = tuple(known.items())
            return True

    def prune(self, now_s: float) -> None:
        """Forget expired targets (emit already skips them; this frees their places)."""
        with self._lock:
            if any(e is not None and now_s >= e for _, e in self._targets):
                self._targets = tuple((a, e) for a, e in self._targets
                                      if e is None or now_s < e)

    def remove_target(self, address: Address) -> bool:
        with self._lock:
            if address not in dict(self._targets):
                return False
            self._targets = tuple((a, e) for a, e in self._targets if a != address)
            return True

    def _encode(self, event: Event) -> bytes | None:
        if isinstance(event, HitEvent):
            msg = build_msg("/groove/hit", [event.voice, event.pitch, float(event.velocity),
                                            event.bar, event.step])
        elif isinstance(event, BarEvent):
            args: list = [event.bar, float(event.bpm)]
            for voice, pitch, velocity, step, t_s in event.hits:
                args += [voice, pitch, float(velocity), step, float(t_s)]
            msg = build_msg("/groove/bar", args)
        else:
            return None
        if not self.bundles:
            return msg.dgram
        bundle = OscBundleBuilder(self._wall_s(event.t_s) + self.latency_s)
        bundle.add_content(msg)
        return bundle.build().dgram

    def prepare(self, event: Event) -> None:
        if isinstance(event, (HitEvent, BarEvent)):
            event.payload[self.name] = self._encode(event)

    def emit(self, event: Event) -> None:
        if not isinstance(event, (HitEvent, BarEvent)):
            return
        dgram = event.payload.get(self.name)
        if dgram is None:  # emitted without prepare (a late event): encode now
            dgram = self._encode(event)
        for address, expires_t_s in self._targets:
            if expires_t_s is not None and event.t_s >= expires_t_s:
                continue  # expired: not renewed by whoever set it
            try:
                self._sock.sendto(dgram, address)
            except OSError:
                self.send_errors += 1

    def describe(self) -> str:
        kind = f"OSC bundles (+{self.latency_s * 1000:.0f} ms)" if self.bundles else "OSC"
        # With no target yet, say how to get one: a first run of `serve` is otherwise silent.
        targets = ", ".join(f"{h}:{p}" for h, p in self.targets) or (
            "no targets yet (--send HOST:PORT, or send /groove/target from your client; "
            "see docs/osc.md)")
        return f"{kind} -> {targets}"


class RecordingSink(Sink):
    """Keeps every event with the clock time it was emitted at; tests wait on it."""

    name = "recording"

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        self.records: list[tuple[Event, float]] = []  # (event, emitted_t_s)
        self._cond = threading.Condition()

    def emit(self, event: Event) -> None:
        with self._cond:
            self.records.append((event, self._now()))
            self._cond.notify_all()

    def events(self, kind: type | None = None) -> list[Event]:
        with self._cond:
            return [e for e, _ in self.records if kind is None or isinstance(e, kind)]

    def hits(self) -> list[HitEvent]:
        return self.events(HitEvent)

    def bars(self) -> list[BarEvent]:
        return self.events(BarEvent)

    def wait_for(self, predicate: Callable[["RecordingSink"], bool], timeout_s: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout_s)

