"""The live server: one UDP socket, three threads (OSC, decode worker, clock), sinks out.

`Server` wires the parts and implements the controls the OSC API calls; `serve()` is what the
`groove-live serve` command runs. Each thread has one job: the OSC thread validates and
enqueues, the worker decodes ahead of time, the clock thread only sends.
"""
from __future__ import annotations

import errno
import select
import signal
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from ipaddress import IPv4Network
from typing import Any, Callable

from ..limits import DEFAULT_TEMPERATURE
from ..spec import ModelSpec
from .clock import Clock, FakeClock, MonotonicClock
from .controls import LiveControls
from .guard import AddressRefused, Guard, Limits, parse_host
from .harmony import LiveHarmony
from .library import Library
from .osc_api import OscApi
from .planner import Restart, latent_unit_bars
from .realtime import RealtimePolicy
from .scheduler import DECODE_WORK_S, Scheduler
from .sinks import Address, OscSink, Sink
from .stats import TimingStats
from .tap import MAX_TAP_BARS
from .steering import LiveSteering
from .tasks_live import LiveTasks
from .timeline import Timeline
from .worker import EngineLike, Worker

MAX_DATAGRAM = 65536
RECV_POLL_S = 0.2  # how often the OSC thread looks at the stop flag


class ServeError(Exception):
    """Something the user can fix (port taken, bad address): one line, exit status 1."""


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"  # loopback unless the user says otherwise
    port: int | None = 57120  # None: no socket (in-process tests drive the API directly)
    bpm: float = 120.0
    sends: tuple[Address, ...] = ()
    bundles: bool = False
    latency_s: float = 0.0  # added to bundle time tags
    bar_lookahead_s: float = 0.5  # /groove/bar goes out this early; Sonic Pi's sched_ahead_time
    midi_virtual: str | None = None
    midi_out: str | None = None
    midi_clock: bool = False
    temperature: float = DEFAULT_TEMPERATURE
    seed: int | None = None  # first groove and walk targets; None: a new one each run
    quantize: str = "bar"
    autostart: bool = True
    ahead_bars: int = 2  # how far the worker decodes past the bar the clock took last
    allow: tuple[IPv4Network, ...] = ()  # networks beyond loopback that may talk and be targets
    limits: Limits = Limits()  # rate limits and target lifetime for senders beyond loopback
    # GrooVAE's tasks: where each model comes from (None: the bundled one; "none": off)
    task_models: tuple[tuple[str, str | None], ...] = ()
    tap_latency_s: float = 0.0  # subtracted from a tap's arrival time before it is placed
    tap_bars: int = MAX_TAP_BARS  # bars of taps in a take
    midi_in: str | None = None  # a MIDI input port whose note-ons are taps
    library: str | None = None  # a folder of MIDI grooves for /groove/load, morph and save
    # serve --humanize: a humanize model's NAME|PATH that plays every decoded phrase (None or
    # "none": off)
    humanize: str | None = None
    # serve --harmonizer: a pitched model's NAME|PATH for /groove/accompany (None: off)
    harmonizer: str | None = None


def parse_address(text: str) -> tuple[str, int]:
    """'HOST:PORT' or 'PORT' (meaning 127.0.0.1) -> (host as written, port)."""
    host, _, port = text.rpartition(":")
    host = host or "127.0.0.1"
    # int() takes non-ASCII digits and names may be IDNs: ASCII only, so what is checked here
    # is what the resolver sees.
    if not text.isascii() or not port.isdigit():
        raise ServeError(f"bad address {text!r}: expected HOST:PORT")
    port_number = int(port)
    if not 1 <= port_number <= 65535:
        raise ServeError(f"bad address {text!r}: port must be 1..65535")
    return host, port_number


def _lookup_ipv4(host: str) -> str:
    return socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_DGRAM)[0][4][0]


def resolve_address(text: str, lookup: Callable[[str], str] = _lookup_ipv4) -> Address:
    """A --send address, numeric: a host name is looked up here, once, before the music
    starts, so no send ever waits for a resolver (on the clock thread, it would make bars
    late, or stop the music while the resolver hangs)."""
    host, port = parse_address(text)
    try:
        return parse_host(host), port
    except AddressRefused as e:
        if "IPv6" in str(e) or not host.strip("0123456789."):  # a malformed number, not a name
            raise ServeError(f"bad address {text!r}: {e}") from None
    try:
        return parse_host(lookup(host)), port
    except (OSError, UnicodeError, AddressRefused) as e:
        raise ServeError(f"cannot resolve {host!r} in --send {text}: "
                         f"{getattr(e, 'strerror', None) or e}") from None


def check_harmonizer_grid(harmonizer: ModelSpec, playing: ModelSpec) -> None:
    """The harmonizer's notes are placed on the playing model's bar grid: refuse one whose
    bar is cut differently (its notes would land on the wrong steps)."""
    grid = (harmonizer.steps_per_bar, harmonizer.beats_per_bar)
    if grid != (playing.steps_per_bar, playing.beats_per_bar):
        raise ServeError(f"--harmonizer: model {harmonizer.model_name} plays bars of {grid[1]} "
                         f"beats in {grid[0]} steps; the playing model {playing.model_name} has "
                         f"{playing.beats_per_bar} beats in {playing.steps_per_bar} steps")


def bind_udp(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            hint = " (sclang's default port: is SuperCollider running?)" if port == 57120 else ""
            raise ServeError(f"UDP port {port} on {host} is already in use{hint}; "
                             f"choose another with --port") from None
        raise ServeError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.settimeout(RECV_POLL_S)
    return sock


class Server:
    def __init__(self, engine: EngineLike, config: ServeConfig = ServeConfig(),
                 clock: Clock | None = None, sinks: list[Sink] | None = None,
                 sock: socket.socket | None = None,
                 realtime_policy: RealtimePolicy | None = None,
                 task_engines: dict[str, Any] | None = None, humanizer: Any = None,
                 harmonizer: Any = None, harmonize: Callable | None = None) -> None:
        self.engine = engine
        self.spec = engine.spec
        self.config = config
        if harmonizer is not None:  # first: nothing is open yet to close again
            check_harmonizer_grid(harmonizer.spec, self.spec)
        self.clock = clock or MonotonicClock()
        own_sock = sock is None and config.port is not None
        if own_sock:
            sock = bind_udp(config.host, config.port)
        self.sock = sock
        self.guard = Guard(config.allow, sock.getsockname() if sock is not None else None,
                           config.limits)
        if sock is not None:
            try:
                self._check_sends(sock)
            except ServeError:
                if own_sock:  # a socket passed in is its owner's to close
                    sock.close()
                raise
        self.osc_sink: OscSink | None = None
        all_sinks = list(sinks or [])
        if self.sock is not None:
            self.osc_sink = OscSink(self.sock, list(config.sends), bundles=config.bundles,
                                    latency_s=config.latency_s, wall_s=self.clock.wall_s)
            all_sinks.insert(0, self.osc_sink)
        self.sinks = all_sinks
        self.timeline = Timeline()
        self.stats = TimingStats()
        self.scheduler = Scheduler(self.clock, self.timeline, all_sinks, self.spec, config.bpm,
                                   config.bar_lookahead_s, self.stats, realtime_policy)
        self.humanizer = humanizer  # see Worker: plays every decoded phrase (None: off)
        self.worker = Worker(engine, self.timeline, self.clock.now, config.temperature,
                             config.seed, config.ahead_bars, config.quantize, humanizer)
        self.worker.quiet_s = lambda: self.scheduler.quiet_s(self.clock.now(), DECODE_WORK_S)
        # task_engines: task -> engine, or the one-line reason that task is off
        self.tasks = LiveTasks(self.spec, task_engines or {}, self.worker, self.scheduler,
                               self.clock.now, config.seed, config.tap_latency_s,
                               config.tap_bars, send=self._send_later)
        self.library = Library(config.library, engine, self.worker,
                               lambda: self.scheduler.bpm, send=self._send_later)
        self.controls = LiveControls(self.spec, self.worker, self.scheduler, self.osc_sink,
                                     self.guard, self.clock, self.info, self.tasks,
                                     self.library)
        # Attribute vectors of the model (None: the steering routes say how to add them).
        self.steering = LiveSteering(getattr(engine, "attributes", None), self.worker)
        self.controls.steering = self.steering  # OscApi drives it, as it does tasks
        # The harmonizer (--harmonizer): a pitched engine, or None; harmonize is the function
        # that fits a melody to it (tests pass their own; None: groove_live.accompany's).
        self.harmony = LiveHarmony(harmonizer, self.worker, config.seed, harmonize,
                                   send=self._send_later)
        self.controls.harmony = self.harmony
        self.api = OscApi(self.controls)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._switch_interval_s: float | None = None
        self.replies = 0  # replies handed back to send, and their bytes
        self.reply_bytes = 0
        self.started_t_s = self.clock.now()

    def _check_sends(self, sock: socket.socket) -> None:
        """Refuse --send addresses that cannot work; let the socket broadcast where the user
        asked for it by name (the kernel refuses broadcast sends otherwise)."""
        broadcast = False
        for host, port in self.config.sends:
            try:  # numeric only (resolve_address did any lookup): sends never look anything up
                broadcast |= self.guard.check_send(parse_host(host), port) == "broadcast"
            except AddressRefused as e:
                raise ServeError(f"--send {host}:{port}: {e}") from None
        for network in self.config.allow:
            if network.prefixlen == 32:
                broadcast |= self.guard.route_kind(str(network.network_address)) == "broadcast"
        if broadcast:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)

    @property
    def listening(self) -> Address | None:
        return self.sock.getsockname() if self.sock is not None else None

    # --- lifecycle ------------------------------------------------------------------------
    def start(self, threaded: bool = True) -> None:
        """Decode the first bars (warms the model), then start playing and listening."""
        self.worker.prime(first_bar=0, seed=self.config.seed)
        if self.config.autostart:
            self.scheduler.start(notify=False)  # the phrase was just primed at bar 0
        self.scheduler.on_transport = self._on_transport
        if not threaded:
            return
        self._switch_interval_s = self.scheduler.realtime_policy.shorten_switch_interval()
        bodies = [("groove-clock", self.scheduler.run), ("groove-worker", self._run_worker)]
        if self.sock is not None:
            bodies.append(("groove-osc", self._serve_osc))
        for name, target in bodies:
            self._threads.append(threading.Thread(target=target, args=(self._stop,), name=name,
                                                  daemon=True))
        for t in self._threads:
            t.start()
        self.scheduler.running.wait(timeout=1.0)

    def close(self) -> None:
        self._stop.set()
        self.timeline.wake()
        self.scheduler.post(lambda now: None)  # wake the clock thread
        for t in self._threads:
            t.join(timeout=2.0)
        if self._switch_interval_s is not None:
            sys.setswitchinterval(self._switch_interval_s)
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:  # closing must reach every sink and the socket
                pass
        if self.sock is not None:
            self.sock.close()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def run_until(self, t_s: float) -> None:
        """Offline mode for tests: jump a FakeClock from event to event up to `t_s`, with the
        worker running in between (an infinitely fast worker)."""
        if not isinstance(self.clock, FakeClock):
            raise TypeError("run_until needs a FakeClock")
        while True:
            self.worker.step()
            self.scheduler.process(self.clock.now())
            t_next = self.scheduler.next_t_s()
            if t_next > t_s:
                break
            self.clock.advance_to(max(t_next, self.clock.now()))
        self.clock.advance_to(max(t_s, self.clock.now()))
        self.worker.step()
        self.scheduler.process(self.clock.now())

    def _on_transport(self, kind: str) -> None:
        if kind == "start":
            self.worker.submit(Restart())

    def _run_worker(self, stop: threading.Event) -> None:
        self.scheduler.realtime_policy.helper_thread()
        self.worker.run(stop)

    # --- the OSC thread -------------------------------------------------------------------
    def _serve_osc(self, stop: threading.Event) -> None:
        self.scheduler.realtime_policy.helper_thread()
        while not stop.is_set():
            try:
                datagram, sender = self.sock.recvfrom(MAX_DATAGRAM)
            except socket.timeout:
                continue
            except OSError:
                if stop.is_set() or self.sock.fileno() < 0:
                    return
                continue  # e.g. an ICMP error reported on the socket; keep listening
            self.scheduler.wait_quiet()  # let the clock thread send first
            for reply in self.handle_datagram(datagram, sender):
                try:
                    self.sock.sendto(reply, sender)
                except OSError:
                    pass

    def handle_datagram(self, datagram: bytes, sender: Address | None) -> list[bytes]:
        """The replies to send back to `sender`: none when the guard drops the datagram (a
        sender outside loopback and --allow, our own address, over its rate limit)."""
        now_s = self.clock.now()
        if sender is not None:
            why = self.guard.source_refused(sender, now_s)
            if why is not None:
                self.guard.drops[why] += 1
                return []
            if self.osc_sink is not None:  # a sign of life from a target set from the network
                self.osc_sink.renew(sender, self.guard.limits.target_ttl_s + now_s)
        replies = []
        for item in self.api.parse(datagram):
            if sender is not None and not self.guard.take_message(sender, now_s):
                continue
            try:
                reply = self.api.answer(item, sender)
            except Exception as e:  # an internal bug: say so loudly, but keep the music going
                if self.stats.errors.record("internal", f"internal error answering a request "
                                            f"({type(e).__name__}: {e})", now_s):
                    traceback.print_exc()
                reply = self.api._error("", "internal error (see the server's log)")
            if reply is None:
                continue
            if sender is not None:
                self.guard.charge_reply(sender, len(reply), now_s)
            replies.append(reply)
            self.reply_bytes += len(reply)
        self.replies += len(replies)
        return replies

    def _send_later(self, reply: bytes, sender: Address) -> None:
        """A reply made off the OSC thread (a tap take's outcome), under the same rules."""
        if self.sock is None or self.guard.source_refused(sender) is not None:
            return
        try:  # at most one per take: not metered (the guard's buckets belong to the OSC thread)
            self.sock.sendto(reply, sender)
        except OSError:
            pass

    def pump_osc(self) -> int:
        """Offline mode for tests: handle every datagram waiting on the socket as the OSC
        thread would (without its thread); returns how many there were."""
        n = 0
        while select.select([self.sock], [], [], 0)[0]:
            datagram, sender = self.sock.recvfrom(MAX_DATAGRAM)
            n += 1
            for reply in self.handle_datagram(datagram, sender):
                try:
                    self.sock.sendto(reply, sender)
                except OSError:
                    pass
        return n

    def info(self) -> list[tuple[str, Any]]:
        spec, sched = self.spec, self.scheduler
        mix = sched.mix
        now = self.clock.now()
        status = self.worker.status
        if self.osc_sink is not None:
            self.osc_sink.prune(now)
        targets = self.osc_sink.targets if self.osc_sink else ()
        items: list[tuple[str, Any]] = [
            ("model", spec.model_name),
            ("kind", spec.kind),
            ("steps_per_bar", spec.steps_per_bar),
            ("bars", spec.bars),
            # Bars one decode plays: requests of a MusicVAE drum model (categorical,
            # hierarchical) move its latent once a phrase (planner.latent_unit_bars).
            ("phrase_bars", spec.bars),
            ("latent_every_bars", latent_unit_bars(spec)),
            ("humanize_model", self.humanizer.spec.model_name if self.humanizer else ""),
            ("beats_per_bar", spec.beats_per_bar),
            ("z_size", spec.z_size),
            ("voices", ",".join(spec.drum_names)),
            ("pitches", ",".join(map(str, spec.out_pitches))),
            ("playing", int(sched.playing)),
            # X is what plays now, X_pending what was asked for and lands on a coming bar.
            ("bpm", float(sched.bpm)),
            ("bpm_pending", float(sched.bpm_pending)),
            ("bar", int(sched.current_bar(now)) if sched.playing else -1),
            ("temperature", status.get("temperature", self.config.temperature)),
            ("temperature_pending", float(self.controls.temperature)),
            ("seed", status.get("seed", -1)),
            ("walk_step", status.get("walk_step", 0.0)),
            ("walk_step_pending", status.get("walk_step_pending", 0.0)),
            ("walk_every_bars", status.get("walk_every_bars", 0)),
            ("interpolating", status.get("interpolating", 0)),
            ("quantize", status.get("quantize", self.config.quantize)),
            ("source", status.get("source", "sample")),  # what plays: sample, walk, humanize...
            ("source_pending", status.get("source_pending", "sample")),
            ("velocity_amount", float(mix.velocity_amount)),
            ("timing_amount", float(mix.timing_amount)),
            ("muted", ",".join(spec.drum_names[i] for i in sorted(mix.muted))),
            ("bar_lookahead_ms", round(sched.lookahead_s * 1000, 3)),  # in use: under a bar
            ("latency_ms", round(self.config.latency_s * 1000, 3)),
            ("bundles", int(self.config.bundles)),
            ("targets", ",".join(f"{h}:{p}" for h, p in targets)),
            ("outputs", " | ".join(s.describe() for s in self.scheduler.sinks)),
            ("realtime", int(sched.realtime)),
            ("decodes", status.get("decodes", 0)),
            ("decode_max_ms", status.get("decode_max_ms", 0.0)),  # humanize pass included
            ("humanize_max_ms", status.get("humanize_max_ms", 0.0)),
            ("decode_errors", status.get("decode_errors", 0)),
            ("allow", self.guard.describe()),
            ("ignored", self.api.ignored),
            ("refused", self.api.errors),
            ("replies", self.replies),
            ("reply_bytes", self.reply_bytes),
            *((f"dropped_{why}", self.guard.drops[why])
              for why in ("not_allowed", "self", "bad_source", "rate_limited")),
        ]
        items += self.tasks.info()
        items += self.harmony.info()
        items += self.library.info()
        items += self.steering.info()
        items += list(self.stats.summary().items())
        return items


def describe(server: Server) -> list[str]:
    """What the banner prints: where we listen and what we send to."""
    lines = []
    spec = server.spec
    lines.append(f"model {spec.model_name} ({spec.kind}): {spec.n_drums} voices, {spec.bars} "
                 f"bars of {spec.steps_per_bar} steps, latent {spec.z_size}")
    if latent_unit_bars(spec) > 1:
        lines.append(f"walks and morphs move the latent once a phrase ({spec.bars} bars)")
    if server.humanizer is not None:
        hs = server.humanizer.spec
        lines.append(f"--humanize: every phrase played by model {hs.model_name} "
                     f"({hs.bars}-bar windows) before it is heard")
    for task, engine in server.tasks.engines.items():
        lines.append(f"{task}: {engine}" if isinstance(engine, str) else
                     f"{task}: model {engine.spec.model_name}, {engine.spec.bars} bars (repeats "
                     f"in the {spec.bars}-bar phrase)")
    if server.harmony.engine is not None:
        hs = server.harmony.engine.spec
        lines.append(f"--harmonizer: model {hs.model_name} writes "
                     f"{', '.join(v.name for v in hs.voices)} under /groove/accompany melodies "
                     f"({hs.bars} bars), sent as /groove/note")
    if server.listening:
        host, port = server.listening
        lines.append(f"listening for OSC on udp {host}:{port}, answering {server.guard.describe()}")
    for sink in server.sinks:
        lines.append(f"sending {sink.describe()}")
    if server.scheduler.realtime:
        lines.append("clock thread: real-time scheduling (SCHED_FIFO)")
    elif server.scheduler.realtime_policy.clock_slice:
        lines.append("clock thread: normal priority (no real-time permission) with a short "
                     "time slice, so it preempts other work when it wakes; timing can still "
                     "slip on a busy machine, see docs/osc.md")
    else:
        lines.append("clock thread: normal priority (no real-time permission; timing can "
                     "slip by milliseconds on a busy machine, see docs/osc.md)")
    return lines


def serve(config: ServeConfig, engine_factory: Callable[[], EngineLike],
          extra_sinks_factory: Callable[[ServeConfig], list[Sink]] | None = None,
          out=print, started_t_s: float | None = None,
          task_engines_factory: Callable[[EngineLike], dict[str, Any]] | None = None,
          midi_in_factory: Callable[["Server"], Any] | None = None,
          humanizer_factory: Callable[[EngineLike], Any] | None = None,
          harmonizer_factory: Callable[[], Any] | None = None) -> int:
    """Run the server until SIGINT/SIGTERM. Raises ServeError for things the user can fix."""
    t0 = time.monotonic() if started_t_s is None else started_t_s
    # Bind and open ports before loading the model: a taken port is reported at once.
    sock = bind_udp(config.host, config.port) if config.port is not None else None
    sinks: list[Sink] = []
    try:
        sinks = extra_sinks_factory(config) if extra_sinks_factory else []
        engine = engine_factory()
        task_engines = task_engines_factory(engine) if task_engines_factory else {}
        humanizer = humanizer_factory(engine) if humanizer_factory else None
        harmonizer = harmonizer_factory() if harmonizer_factory else None
        server = Server(engine, config, sinks=sinks, sock=sock, task_engines=task_engines,
                        humanizer=humanizer, harmonizer=harmonizer)
    except BaseException:
        for sink in sinks:
            sink.close()
        if sock is not None:
            sock.close()
        raise
    midi_in = None
    if midi_in_factory is not None:
        try:
            midi_in = midi_in_factory(server)
        except BaseException:
            server.close()
            raise
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    server.scheduler.realtime_policy.freeze_heap()  # why: RealtimePolicy.freeze_heap
    try:
        server.start()
        for line in describe(server):
            out(f"groove-live: {line}")
        if midi_in is not None:
            out(f"groove-live: taps from MIDI {midi_in.describe()}")
        state = "playing" if config.autostart else "stopped (send /groove/start)"
        out(f"groove-live: ready in {time.monotonic() - t0:.2f} s, {config.bpm:g} BPM, {state}")
        while not stop.wait(0.5):
            pass
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if midi_in is not None:
            midi_in.close()
        server.close()
    out("groove-live: stopped")
    return 0
