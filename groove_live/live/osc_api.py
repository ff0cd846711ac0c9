"""The OSC API: datagram bytes in, validated calls on the server, ack/error replies out.

Knows nothing about sockets or address policy (tests feed it bytes; the server's guard
decides whom to answer). Every message addressed to groove-live gets exactly one reply:
`/groove/ack <address> ...` or `/groove/error <address> <reason>`, small enough for one
datagram. Messages that are replies or outputs themselves, or meant for another program,
get none: answering them is how reply loops start. Handlers only validate and hand over
(enqueue for the worker or the clock thread); they never decode or sleep.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from ..limits import (MAX_BAR_LOOKAHEAD_MS, MAX_BPM, MAX_TEMPERATURE, MIN_BPM, QUANTIZE_MODES,
                      SEED_LIMIT)
from ..spec import ModelSpec
from .guard import AddressRefused, parse_host
from .harmony import HarmonyError
from .library import LibraryError
from .osc_wire import IMPULSE, Message, WireError, decode_packet, encode_message
from .planner import latent_unit_bars, whole_units
from .tap import MAX_LATENCY_MS, MAX_TAP_BARS
from .steering import NO_STYLE, SteeringError
from .tasks_live import TaskError

MAX_BARS = 64  # longest interpolation / walk period
MAX_ECHO_CHARS = 200  # echoed addresses and strings are cut to this
MAX_REASON_CHARS = 300
MAX_REPLY_BYTES = 8192  # well inside one UDP datagram; /groove/info is the largest (~1.5 KB)
INFO_ADDRESS, PING_ADDRESS = "/groove/info", "/groove/ping"
# How old a /groove/info reply may be when reused (see OscApi._info_snapshot): far below what
# a client polling it can tell, and it caps info's building at 200 a second under a flood.
INFO_MAX_AGE_S = 0.005
NAMESPACE = "/groove"
# Our own outputs and replies: a groove-live (or this one) pointed at another must not answer.
OUTPUT_ADDRESSES = frozenset({"/groove/ack", "/groove/error", "/groove/hit", "/groove/bar",
                              "/groove/note"})
# How OSC programs commonly name replies and notifications (scsynth's /done, /fail, /synced,
# /status.reply; generic /ack, /error, /reply): never answered, even under /groove/.
REPLY_WORDS = frozenset({"ack", "error", "reply", "done", "fail", "failed", "synced",
                         "response", "pong", "hit", "bar"})


class ApiError(ValueError):
    """A request we refuse; the message is the <reason> of /groove/error."""


class Controls(Protocol):
    """What the API drives: controls.LiveControls (or a fake in tests)."""

    spec: ModelSpec

    def sample(self, temperature: float | None, seed: int | None) -> tuple[float, int]: ...
    def walk(self, step: float, every_bars: int, seed: int | None) -> int: ...
    def interpolate(self, bars: int, temperature: float | None,
                    seed: int | None) -> tuple[float, int]: ...
    def set_tempo(self, bpm: float, bars: int) -> None: ...
    def start_playing(self) -> None: ...
    def stop_playing(self) -> None: ...
    def set_temperature(self, temperature: float) -> None: ...
    def sync(self) -> None: ...
    def add_target(self, host: str, port: int, requested_by: tuple[str, int] | None) -> bool: ...
    def remove_target(self, host: str, port: int) -> bool: ...
    def set_velocity_amount(self, amount: float) -> None: ...
    def set_timing_amount(self, amount: float) -> None: ...
    def set_muted(self, drums: list[int], muted: bool) -> None: ...
    def set_quantize(self, mode: str) -> None: ...
    def set_bar_lookahead(self, lookahead_s: float) -> float: ...
    def info(self) -> list[tuple[str, Any]]: ...


# --- argument checks: each returns the clean value or raises ApiError -----------------------
def _number(value: Any, name: str) -> float:
    # bool is an int in Python, but an OSC T/F is not a number a user meant.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ApiError(f"{name} must be a number, got {_osc_type(value)}")
    if not math.isfinite(value):
        raise ApiError(f"{name} must be finite, got {value}")
    return float(value)


def _float(value: Any, name: str, lo: float, hi: float, lo_open: bool = False) -> float:
    x = _number(value, name)
    if x < lo or x > hi or (lo_open and x == lo):
        bound = "(" if lo_open else "["
        raise ApiError(f"{name} must be in {bound}{lo:g}, {hi:g}], got {x:g}")
    return x


def _int(value: Any, name: str, lo: int, hi: int) -> int:
    x = _number(value, name)
    if x != int(x):
        raise ApiError(f"{name} must be a whole number, got {x:g}")
    if not lo <= x <= hi:
        raise ApiError(f"{name} must be in [{lo}, {hi}], got {x:g}")
    return int(x)


def _str(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise ApiError(f"{name} must be a string, got {_osc_type(value)}")
    return value


def _on_off(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("on", "off", "true", "false"):
        return value.lower() in ("on", "true")
    return bool(_int(value, name, 0, 1))


def _osc_type(value: Any) -> str:
    if value is IMPULSE:
        return "an impulse"
    return {bool: "a boolean", int: "an int", float: "a float", str: "a string",
            bytes: "a blob", type(None): "nil"}.get(type(value), type(value).__name__)


def _host(value: Any) -> str:
    """A numeric IPv4 address (or localhost), canonical: nothing is ever looked up later."""
    try:
        return parse_host(_str(value, "host"))
    except AddressRefused as e:
        raise ApiError(str(e)) from None


def _clip(text: str, limit: int = MAX_ECHO_CHARS) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def is_for_us(address: str) -> bool:
    """Whether a message with this address may be answered (see REPLY_WORDS)."""
    if address in OUTPUT_ADDRESSES:
        return False
    if address != NAMESPACE and not address.startswith(NAMESPACE + "/"):
        return False  # another program's message (or its reply to one of ours)
    last = address.rsplit("/", 1)[-1].lower()
    return last not in REPLY_WORDS and not last.endswith((".reply", "_reply"))


@dataclass(frozen=True)
class Route:
    handler: Callable[..., list]
    max_args: int
    usage: str


class OscApi:
    def __init__(self, controls: Controls,
                 monotonic_s: Callable[[], float] = time.monotonic) -> None:
        self.controls = controls
        self._monotonic_s = monotonic_s
        self._info_reply: tuple[bytes, float] | None = None  # (reply, when built)
        self.spec = controls.spec
        self.latent_unit_bars = latent_unit_bars(self.spec)
        self.routes: dict[str, Route] = {
            "/groove/sample": Route(self._sample, 2, "[temperature f] [seed i]"),
            "/groove/walk": Route(self._walk, 3, "[step f 0..1] [every_bars i] [seed i]"),
            "/groove/interpolate": Route(self._interpolate, 3,
                                         "<bars i> [temperature f] [seed i]"),
            "/groove/tempo": Route(self._tempo, 2, "<bpm f> [bars i]"),
            "/groove/start": Route(self._start, 0, ""),
            "/groove/stop": Route(self._stop, 0, ""),
            "/groove/temperature": Route(self._temperature, 1, "<temperature f>"),
            "/groove/sync": Route(self._sync, 0, ""),
            "/groove/target": Route(self._target, 2, "[host s] [port i]"),
            "/groove/untarget": Route(self._untarget, 2, "[host s] [port i]"),
            "/groove/info": Route(self._info, 0, ""),
            "/groove/velocity": Route(self._velocity, 1, "<amount f 0..1>"),
            "/groove/timing": Route(self._timing, 1, "<amount f 0..1>"),
            "/groove/mute": Route(self._mute, 2, "<voice s|pitch i|all> [on 0/1]"),
            "/groove/quantize": Route(self._quantize, 1, "<bar|phrase>"),
            "/groove/lookahead": Route(self._lookahead, 1, "<ms f>"),
            "/groove/ping": Route(self._ping, 8, "[anything]"),
            # The --library folder (library.Library): files are read and written on the worker.
            "/groove/load": Route(self._load, 1, "<name s>"),
            "/groove/morph": Route(self._morph, 2, "<name s> <bars i>"),
            "/groove/save": Route(self._save, 1, "<name s>"),
            # GrooVAE's tasks (tasks_live.LiveTasks); a server without them answers an error.
            "/groove/humanize": Route(self._humanize, 1 + 2 * self.spec.n_drums,
                                      "[temperature f] <voice s> <steps s> ..."),
            "/groove/infill": Route(self._infill, 1 + 2 * self.spec.n_drums,
                                    "[temperature f] <voice s> <steps s> ... (no hi-hats)"),
            "/groove/tap": Route(self._tap, 1, "[velocity f 0..1]"),
            "/groove/tap/end": Route(self._tap_end, 0, ""),
            "/groove/tap/bars": Route(self._tap_bars, 1, f"<bars i 1..{MAX_TAP_BARS}>"),
            "/groove/tap/latency": Route(self._tap_latency, 1, "<ms f>"),
            # Attribute steering (steering.LiveSteering): the model's latent vectors.
            "/groove/style": Route(self._style, 2, f"<name s|{NO_STYLE}> [amount f 0..3]"),
            "/groove/density": Route(self._density, 1, "<x f -1..1>"),
            "/groove/syncopation": Route(self._syncopation, 1, "<x f -1..1>"),
            "/groove/fill": Route(self._fill, 0, ""),
            # The harmonizer (harmony.LiveHarmony): a melody in, four voices as /groove/note.
            "/groove/accompany": Route(self._accompany, 32,
                                       "<32 notes i (0 = rest) | 16 notes i | melody s>"),
            "/groove/accompany/stop": Route(self._accompany_stop, 0, ""),
        }
        tasks = getattr(controls, "tasks", None)  # a LiveTasks; controls without one: no tasks
        self.tasks = tasks if hasattr(tasks, "parse") else None
        steering = getattr(controls, "steering", None)  # a LiveSteering, or no steering
        self.steering = steering if hasattr(steering, "set_style") else None
        harmony = getattr(controls, "harmony", None)  # a LiveHarmony, or no harmonizer at all
        self.harmony = harmony if hasattr(harmony, "request") else None
        self.errors = 0  # requests refused
        self.ignored = 0  # messages not answered: replies, outputs, other programs'

    # --- entry point ---------------------------------------------------------------------
    def handle(self, datagram: bytes, sender: tuple[str, int] | None) -> list[bytes]:
        """All replies for one datagram (a bundle gets one reply per message for us)."""
        replies = (self.answer(item, sender) for item in self.parse(datagram))
        return [r for r in replies if r is not None]

    def parse(self, datagram: bytes) -> list[Message | WireError]:
        """The messages in a datagram, or the one reason it cannot be read. Separate from
        answer() so the server can meter a bundle message by message."""
        try:
            return list(decode_packet(datagram))
        except WireError as e:
            return [e]

    def answer(self, item: Message | WireError, sender: tuple[str, int] | None) -> bytes | None:
        """The reply to one message, or None when it must not be answered."""
        if isinstance(item, WireError):
            if item.address and not is_for_us(item.address):
                self.ignored += 1
                return None
            self.errors += 1
            return self._error(item.address, f"malformed OSC packet ({item})")
        if not is_for_us(item.address):
            self.ignored += 1
            return None
        return self._handle_message(item, sender)

    def _handle_message(self, message: Message, sender) -> bytes:
        address = message.address
        if address == INFO_ADDRESS and not message.args:
            return self._info_snapshot(message, sender)
        if address != PING_ADDRESS:
            self._info_reply = None  # anything else may change what info says
        return self._reply(message, sender)

    def _info_snapshot(self, message: Message, sender) -> bytes:
        """/groove/info's reply, rebuilt at most every INFO_MAX_AGE_S: it is by far the dearest
        reply to build (~50 keys), and a flood of info requests would otherwise keep the OSC
        thread, and the GIL, busy building it. Any other request clears it, so a reply
        never misses a change made by an earlier message of the client's own."""
        now_s = self._monotonic_s()
        if self._info_reply is not None and 0 <= now_s - self._info_reply[1] < INFO_MAX_AGE_S:
            return self._info_reply[0]
        reply = self._reply(message, sender)
        self._info_reply = (reply, now_s)
        return reply

    def _reply(self, message: Message, sender) -> bytes:
        address = message.address
        route = self.routes.get(address)
        if route is None:
            self.errors += 1
            return self._error(address, "unknown address (see /groove/info or docs/osc.md)")
        args = list(message.args)
        try:
            if len(args) > route.max_args:
                raise ApiError(f"takes at most {route.max_args} arguments ({route.usage}), "
                               f"got {len(args)}")
            ack_args = route.handler(args, sender)
        except ApiError as e:
            self.errors += 1
            return self._error(address, str(e))
        reply = encode_message("/groove/ack", [_clip(address), *ack_args])
        if len(reply) > MAX_REPLY_BYTES:  # a handler's bug: every ack is bounded by design
            raise AssertionError(f"ack to {address} is {len(reply)} bytes")
        return reply

    @staticmethod
    def _error(address: str, reason: str) -> bytes:
        return encode_message("/groove/error", [_clip(address),
                                                _clip(reason.replace("\n", " "), MAX_REASON_CHARS)])

    # --- handlers: validate, hand over, say what was accepted -----------------------------
    def _sample(self, args, sender) -> list:
        temperature = _float(args[0], "temperature", 0.0, MAX_TEMPERATURE) if args else None
        seed = _int(args[1], "seed", 0, SEED_LIMIT - 1) if len(args) > 1 else None
        # The ack names the temperature and seed in use: sent back, they recall this groove.
        return list(self.controls.sample(temperature, seed))

    def _walk(self, args, sender) -> list:
        step = _float(args[0], "step", 0.0, 1.0) if args else 0.1
        every_bars = _int(args[1], "every_bars", 1, MAX_BARS) if len(args) > 1 else 1
        seed = _int(args[2], "seed", 0, SEED_LIMIT - 1) if len(args) > 2 else None
        # The ack says what the planner does: a MusicVAE drum model moves once a phrase.
        return [step, whole_units(every_bars, self.latent_unit_bars),
                self.controls.walk(step, every_bars, seed)]

    def _interpolate(self, args, sender) -> list:
        if not args:
            raise ApiError("needs <bars i> [temperature f] [seed i]")
        bars = _int(args[0], "bars", 1, MAX_BARS)
        temperature = _float(args[1], "temperature", 0.0, MAX_TEMPERATURE) if len(args) > 1 else None
        seed = _int(args[2], "seed", 0, SEED_LIMIT - 1) if len(args) > 2 else None
        return [whole_units(bars, self.latent_unit_bars),
                *self.controls.interpolate(bars, temperature, seed)]

    def _tempo(self, args, sender) -> list:
        if not args:
            raise ApiError("needs <bpm f> [bars i]")
        bpm = _float(args[0], "bpm", MIN_BPM, MAX_BPM)
        bars = _int(args[1], "bars", 0, MAX_BARS) if len(args) > 1 else 0
        self.controls.set_tempo(bpm, bars)
        return [bpm, bars]

    def _start(self, args, sender) -> list:
        self.controls.start_playing()
        return []

    def _stop(self, args, sender) -> list:
        self.controls.stop_playing()
        return []

    def _temperature(self, args, sender) -> list:
        if not args:
            raise ApiError("needs <temperature f>")
        t = _float(args[0], "temperature", 0.0, MAX_TEMPERATURE)
        self.controls.set_temperature(t)
        return [t]

    def _sync(self, args, sender) -> list:
        self.controls.sync()
        return []

    def _address(self, args, sender) -> tuple[str, int]:
        """(host, port) from the arguments; missing parts come from the sender."""
        if len(args) == 1 and not isinstance(args[0], str):  # just a port: the sender's host
            args = [sender[0] if sender else "127.0.0.1", args[0]]
        if not args and sender is None:
            raise ApiError("needs <host s> <port i> (no sender address to use)")
        host = _host(args[0]) if args else sender[0]
        if len(args) > 1:
            port = _int(args[1], "port", 1, 65535)
        elif sender is not None:
            port = sender[1]
        else:
            raise ApiError("needs <port i>")
        return host, port

    def _target(self, args, sender) -> list:
        host, port = self._address(args, sender)
        try:
            added = self.controls.add_target(host, port, sender)
        except AddressRefused as e:
            raise ApiError(str(e)) from None
        if not added:
            raise ApiError("too many targets (remove one with /groove/untarget)")
        return [host, port]

    def _untarget(self, args, sender) -> list:
        host, port = self._address(args, sender)
        if not self.controls.remove_target(host, port):
            raise ApiError(f"{host}:{port} is not a target")
        return [host, port]

    def _info(self, args, sender) -> list:
        flat: list = []
        for key, value in self.controls.info():
            if isinstance(value, float) and not math.isfinite(value):
                value = -1.0
            flat += [key, value]
        return flat

    def _velocity(self, args, sender) -> list:
        if not args:
            raise ApiError("needs <amount f 0..1>")
        amount = _float(args[0], "amount", 0.0, 1.0)
        self.controls.set_velocity_amount(amount)
        return [amount]

    def _timing(self, args, sender) -> list:
        if not args:
            raise ApiError("needs <amount f 0..1>")
        amount = _float(args[0], "amount", 0.0, 1.0)
        self.controls.set_timing_amount(amount)
        return [amount]

    def _mute(self, args, sender) -> list:
        if not args:
            raise ApiError("needs <voice s|pitch i|all> [on 0/1]")
        drums = self._voices(args[0])
        on = _on_off(args[1], "on") if len(args) > 1 else True
        self.controls.set_muted(drums, on)
        return [_clip(args[0]) if isinstance(args[0], str) else args[0], int(on)]

    def _voices(self, value) -> list[int]:
        if isinstance(value, str):
            if value == "all":
                return list(range(self.spec.n_drums))
            if value in self.spec.drum_names:
                return [self.spec.drum_names.index(value)]
            raise ApiError(f"unknown voice {value!r}; voices: {', '.join(self.spec.drum_names)}, all")
        pitch = _int(value, "pitch", 0, 127)
        drums = [i for i, p in enumerate(self.spec.out_pitches) if p == pitch]
        if not drums:
            raise ApiError(f"no voice plays pitch {pitch}; pitches: "
                           f"{', '.join(map(str, self.spec.out_pitches))}")
        return drums

    def _quantize(self, args, sender) -> list:
        if not args:
            raise ApiError("needs <bar|phrase>")
        mode = _str(args[0], "quantize")
        if mode not in QUANTIZE_MODES:
            raise ApiError(f"quantize must be bar or phrase, got {mode!r}")
        self.controls.set_quantize(mode)
        return [mode]

    def _lookahead(self, args, sender) -> list:
        if not args:
            raise ApiError("needs <ms f>")
        ms = _float(args[0], "lookahead_ms", 0.0, MAX_BAR_LOOKAHEAD_MS)
        used_s = self.controls.set_bar_lookahead(ms / 1000.0)
        return [round(used_s * 1000.0, 3)]  # clamped under a bar: what is actually used

    # --- the --library folder: the name is checked here, the file touched on the worker ----
    def _library(self, args, usage: str):
        library = getattr(self.controls, "library", None)
        if not hasattr(library, "path"):  # controls without a Library (tests' fakes)
            raise ApiError("no library folder: start serve with --library DIR")
        if not args:
            raise ApiError(f"needs {usage}")
        return library, _str(args[0], "name")

    def _library_call(self, call: Callable[[], None]) -> None:
        try:
            call()
        except LibraryError as e:
            raise ApiError(str(e)) from None

    def _load(self, args, sender) -> list:
        library, name = self._library(args, "<name s>")
        self._library_call(lambda: library.load(name, sender))
        return [_clip(name)]

    def _morph(self, args, sender) -> list:
        library, name = self._library(args, "<name s> <bars i>")
        if len(args) < 2:
            raise ApiError("needs <name s> <bars i>")
        bars = _int(args[1], "bars", 1, MAX_BARS)
        self._library_call(lambda: library.morph(name, bars, sender))
        return [_clip(name), whole_units(bars, self.latent_unit_bars)]

    def _save(self, args, sender) -> list:
        library, name = self._library(args, "<name s>")
        self._library_call(lambda: library.save(name, sender))
        return [_clip(name)]

    def _ping(self, args, sender) -> list:
        return [_clip(a) if isinstance(a, str) else a for a in args
                if isinstance(a, (int, float, str)) and not isinstance(a, bool)]

    # --- GrooVAE's tasks: validated here and in LiveTasks, run on the worker ---------------
    def _live_tasks(self):
        if self.tasks is None:
            raise ApiError("this server has no task models")
        return self.tasks

    def _pattern_task(self, task: str, args: list, sender) -> list:
        tasks = self._live_tasks()
        try:
            temperature, pattern = tasks.parse(task, args)
            tasks.request(task, pattern, temperature, sender)
        except TaskError as e:
            raise ApiError(str(e)) from None
        return [int(pattern.hits.sum())] + ([temperature] if temperature is not None else [])

    def _humanize(self, args, sender) -> list:
        return self._pattern_task("humanize", args, sender)

    def _infill(self, args, sender) -> list:
        return self._pattern_task("infill", args, sender)

    def _tap(self, args, sender) -> list:
        velocity = _float(args[0], "velocity", 0.0, 1.0, lo_open=True) if args else 0.8
        try:
            tap = self._live_tasks().tap(velocity, sender)
        except TaskError as e:
            raise ApiError(str(e)) from None
        return [tap.bar, tap.step, round(tap.offset, 4)]

    def _tap_end(self, args, sender) -> list:
        try:
            return [self._live_tasks().end_take(sender)]
        except TaskError as e:
            raise ApiError(str(e)) from None

    def _tap_bars(self, args, sender) -> list:
        if not args:
            raise ApiError(f"needs <bars i 1..{MAX_TAP_BARS}>")
        bars = _int(args[0], "bars", 1, MAX_TAP_BARS)
        self._live_tasks().set_tap_bars(bars)
        return [bars]

    def _tap_latency(self, args, sender) -> list:
        if not args:
            raise ApiError("needs <ms f>")
        ms = _float(args[0], "latency_ms", 0.0, MAX_LATENCY_MS)
        self._live_tasks().set_tap_latency(ms / 1000.0)
        return [ms]

    # --- attribute steering: validated here and in LiveSteering, applied by the worker ------
    def _steer(self, call):
        """call(steering)'s result, or the one-line reason it was refused."""
        if self.steering is None:
            raise ApiError("this server has no attribute steering")
        try:
            return call(self.steering)
        except SteeringError as e:
            raise ApiError(str(e)) from None

    def _style(self, args, sender) -> list:
        if not args:
            raise ApiError(f"needs <name s|{NO_STYLE}> [amount f 0..3]")
        name = _clip(_str(args[0], "style"), 40)
        amount = _float(args[1], "amount", 0.0, 3.0) if len(args) > 1 else 1.0
        return list(self._steer(lambda s: s.set_style(name, amount)))

    def _scaled(self, name: str, args) -> list:
        if not args:
            raise ApiError("needs <x f -1..1>")
        x = _float(args[0], name, -1.0, 1.0)
        return [self._steer(lambda s: s.set_scaled(name, x))]

    def _density(self, args, sender) -> list:
        return self._scaled("density", args)

    def _syncopation(self, args, sender) -> list:
        return self._scaled("syncopation", args)

    def _fill(self, args, sender) -> list:
        self._steer(lambda s: s.fill())
        return []

    # --- the harmonizer: the melody checked here, the model run on the worker -------------
    def _live_harmony(self):
        if self.harmony is None:
            raise ApiError("no harmonizer: start serve with --harmonizer NAME|PATH")
        return self.harmony

    def _accompany(self, args, sender) -> list:
        harmony = self._live_harmony()
        try:
            melody = harmony.parse(args)
            harmony.request(melody, sender)
        except HarmonyError as e:
            raise ApiError(str(e)) from None
        # The ack says what will play: the melody's steps and how many of them sound.
        return [len(melody), int((melody >= 0).sum())]

    def _accompany_stop(self, args, sender) -> list:
        try:
            self._live_harmony().stop()
        except HarmonyError as e:
            raise ApiError(str(e)) from None
        return []
