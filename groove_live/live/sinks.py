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
        # Copy-on-write tuple: the OSC thread adds targets while the clock thread iterates.
        self._targets: tuple[Address, ...] = tuple(dict.fromkeys(targets or ()))
        self._lock = threading.Lock()
        self.bundles = bundles
        self.latency_s = latency_s
        self._wall_s = wall_s
        self.send_errors = 0

    @property
    def targets(self) -> tuple[Address, ...]:
        return self._targets

    def add_target(self, address: Address) -> bool:
        """False when the target list is full; adding a known target is a no-op."""
        with self._lock:
            if address in self._targets:
                return True
            if len(self._targets) >= MAX_TARGETS:
                return False
            self._targets = self._targets + (address,)
            return True

    def remove_target(self, address: Address) -> bool:
        with self._lock:
            if address not in self._targets:
                return False
            self._targets = tuple(a for a in self._targets if a != address)
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
        for address in self._targets:
            try:
                self._sock.sendto(dgram, address)
            except OSError:
                self.send_errors += 1

    def describe(self) -> str:
        kind = f"OSC bundles (+{self.latency_s * 1000:.0f} ms)" if self.bundles else "OSC"
        # With no target yet, say how to get one: a first run of `serve` is otherwise silent.
        targets = ", ".join(f"{h}:{p}" for h, p in self._targets) or (
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

