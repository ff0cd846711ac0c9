"""Outputs behind one interface: OSC messages, time-tagged OSC bundles, and a recording sink.

Each output owns its protocol. The scheduler renders a bar to music events (a /groove/bar
summary and one HitEvent per hit, see scheduler.render_bar) and hands each output the kinds
it declares in `wants`; whatever else an output's protocol needs around those (MIDI note-offs,
MIDI clock ticks) it adds itself in plan(), and only it receives them. A new output is a new
Sink here or beside it: no scheduler change.
"""
from __future__ import annotations

import functools
import socket
import struct
import threading
from dataclasses import dataclass
from typing import Callable, Iterable

from pythonosc.parsing.ntp import system_time_to_ntp

from .events import BarEvent, ClockEvent, Event, HitEvent, NoteEvent
from .osc_wire import BUNDLE_HEADER, encode_message

Address = tuple[str, int]
MAX_TARGETS = 16


@dataclass(frozen=True)
class RenderedBar:
    """One bar as the scheduler committed it: what Sink.plan() sees."""

    bar: int
    downbeat_t_s: float  # clock time base
    bpm: float
    bar_length_s: float
    step_length_s: float
    beats_per_bar: int
    event: BarEvent  # the /groove/bar summary, sent a lookahead before the downbeat
    hits: tuple[HitEvent, ...]  # in the order the model gave them, not by time
    notes: tuple[NoteEvent, ...] = ()  # the harmonizer's pitched notes starting in this bar


class Sink:
    """An output. On the clock thread: plan() when a bar is committed, prepare() for each event
    it will get, emit() at the event's time.

    `wants`: the scheduler's event kinds this output receives: HitEvent and BarEvent (the
    music), ClockEvent (transport: "start" on the first downbeat after a start or a sync,
    "stop" at once on a stop). plan() returns the output's own extra events for a bar:
    they move with their bar when a sync moves the bar line; when a sync cuts their bar short,
    the ones of a kind in `fixed_on_sync` still go out at their time (a note-off must end a
    note that already started) and the rest are dropped with the bar.
    prepare() runs at commit time, so emit() only sends. emit() must not block; trouble a
    user causes (an unreachable target) is counted in send_errors, not raised. What an output
    raises is the scheduler's to report: that send is skipped, and an output that fails again
    and again is dropped (scheduler.SINK_FAILURE_LIMIT).
    """

    name = "sink"
    wants: frozenset[type] = frozenset({HitEvent, BarEvent})
    fixed_on_sync: tuple[type, ...] = ()
    send_errors = 0  # sends the OS refused; reported as /groove/info send_errors

    def plan(self, bar: RenderedBar) -> Iterable[Event]:
        return ()

    def prepare(self, event: Event) -> None:
        pass

    def emit(self, event: Event) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return self.name


# --- the two messages, written straight into bytes ---------------------------------------
# A bar's datagrams are built at commit time on the clock thread, so building must be cheap:
# python-osc's builder parsed every message it built back again (1-2 ms a bar). These write
# the fixed layouts of /groove/hit and /groove/bar with one struct call per hit, and fall back
# to osc_wire's general encoder for a value outside int32 / float32, which picks a wider type.
@functools.lru_cache(maxsize=512)  # voice names and tag strings: a handful, over and over
def _osc_string(text: str) -> bytes:
    raw = text.encode("utf-8")
    if b"\x00" in raw:
        raise ValueError("OSC strings cannot hold NUL characters")
    return raw + b"\x00" * (4 - len(raw) % 4)


_HIT_HEAD = _osc_string("/groove/hit") + _osc_string(",sifii")
_HIT_ARGS = struct.Struct(">ifii")  # pitch, velocity, bar, step after the voice
_BAR_ADDRESS = _osc_string("/groove/bar")
_BAR_ARGS = struct.Struct(">if")  # bar, bpm
_BAR_HIT_ARGS = struct.Struct(">ifif")  # pitch, velocity, step, t_s after each voice


def hit_message(voice: str, pitch: int, velocity: float, bar: int, step: int) -> bytes:
    """/groove/hit voice pitch velocity bar step."""
    try:
        return (_HIT_HEAD + _osc_string(voice)
                + _HIT_ARGS.pack(int(pitch), float(velocity), int(bar), int(step)))
    except (struct.error, OverflowError):
        return encode_message("/groove/hit", (voice, int(pitch), float(velocity), int(bar),
                                              int(step)))


_NOTE_HEAD = _osc_string("/groove/note") + _osc_string(",siffiii")
_NOTE_ARGS = struct.Struct(">iffiii")  # pitch, velocity, duration_s, bar, step, voice_index


def note_message(voice: str, pitch: int, velocity: float, duration_s: float, bar: int,
                 step: int, voice_index: int) -> bytes:
    """/groove/note voice pitch velocity duration_s bar step voice_index."""
    try:
        return _NOTE_HEAD + _osc_string(voice) + _NOTE_ARGS.pack(
            int(pitch), float(velocity), float(duration_s), int(bar), int(step),
            int(voice_index))
    except (struct.error, OverflowError):
        return encode_message("/groove/note", (voice, int(pitch), float(velocity),
                                               float(duration_s), int(bar), int(step),
                                               int(voice_index)))


def bar_message(bar: int, bpm: float,
                hits: Iterable[tuple[str, int, float, int, float]]) -> bytes:
    """/groove/bar bar bpm, then voice pitch velocity step t_s per hit."""
    hits = tuple(hits)
    try:
        body = [_BAR_ARGS.pack(int(bar), float(bpm))]
        for voice, pitch, velocity, step, t_s in hits:
            body.append(_osc_string(voice))
            body.append(_BAR_HIT_ARGS.pack(int(pitch), float(velocity), int(step), float(t_s)))
        return _BAR_ADDRESS + _osc_string(",if" + "sifif" * len(hits)) + b"".join(body)
    except (struct.error, OverflowError):
        args: list = [int(bar), float(bpm)]
        for voice, pitch, velocity, step, t_s in hits:
            args += [voice, int(pitch), float(velocity), int(step), float(t_s)]
        return encode_message("/groove/bar", args)


class OscSink(Sink):
    """`/groove/hit` per hit and `/groove/bar` per bar to every target, and `/groove/note` per
    note of the harmonizer (serve --harmonizer).

    With `bundles`, each message goes in a bundle time-tagged with its intended time plus
    `latency_s`, for receivers that honour time tags (sclang forwarding to scsynth).
    Sends from the server's own socket, so replies and hits share one source port.
    """

    name = "osc"
    wants = frozenset({HitEvent, BarEvent, NoteEvent})

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
            msg = hit_message(event.voice, event.pitch, event.velocity, event.bar, event.step)
        elif isinstance(event, BarEvent):
            msg = bar_message(event.bar, event.bpm, event.hits)
        elif isinstance(event, NoteEvent):
            msg = note_message(event.voice, event.pitch, event.velocity, event.duration_s,
                               event.bar, event.step, event.voice_index)
        else:
            return None
        if not self.bundles:
            return msg
        time_tag = system_time_to_ntp(self._wall_s(event.t_s) + self.latency_s)
        return BUNDLE_HEADER + time_tag + struct.pack(">i", len(msg)) + msg

    def prepare(self, event: Event) -> None:
        if isinstance(event, (HitEvent, BarEvent, NoteEvent)):
            event.payload[self.name] = self._encode(event)

    def emit(self, event: Event) -> None:
        if not isinstance(event, (HitEvent, BarEvent, NoteEvent)):
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
    """Keeps every event with the clock time it was emitted at; tests wait on it. It wants
    the music and the transport unless told otherwise."""

    name = "recording"

    def __init__(self, now: Callable[[], float],
                 wants: Iterable[type] = (HitEvent, BarEvent, ClockEvent, NoteEvent)) -> None:
        self._now = now
        self.wants = frozenset(wants)
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

    def notes(self) -> list[NoteEvent]:
        return self.events(NoteEvent)

    def wait_for(self, predicate: Callable[["RecordingSink"], bool], timeout_s: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout_s)

