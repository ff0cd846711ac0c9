"""The live server: one UDP socket, three threads (OSC, decode worker, clock), sinks out.

`Server` wires the parts and implements the controls the OSC API calls; `serve()` is what the
`groove-live serve` command runs. Each thread has one job: the OSC thread validates and
enqueues, the worker decodes ahead of time, the clock thread only sends.
"""
from __future__ import annotations

import errno
import gc
import logging
import signal
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

from .clock import Clock, FakeClock, MonotonicClock
from .osc_api import OscApi
from .planner import QUANTIZE_MODES, Restart, SetQuantize, SetTemperature, StartWalk
from .scheduler import HELPER_PRIORITY, Scheduler, realtime_priority
from .sinks import Address, OscSink, Sink
from .stats import TimingStats
from .timeline import Timeline
from .worker import EngineLike, InterpolateRequest, SampleRequest, Worker

MAX_DATAGRAM = 65536
RECV_POLL_S = 0.2  # how often the OSC thread looks at the stop flag
# The clock thread must get the GIL back quickly when its wait ends; the default 5 ms switch
# interval would let the OSC or worker thread hold it for a whole 5 ms.
SWITCH_INTERVAL_S = 0.0002


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
    temperature: float = 1.0
    seed: int | None = None  # first groove and walk targets; None: a new one each run
    quantize: str = "bar"
    autostart: bool = True
    ahead_bars: int = 2  # how far the worker decodes past the bar the clock took last


def parse_address(text: str) -> Address:
    """'HOST:PORT' or 'PORT' (meaning 127.0.0.1) -> (host, port)."""
    host, _, port = text.rpartition(":")
    host = host or "127.0.0.1"
    if host == "localhost":
        host = "127.0.0.1"
    try:
        port_number = int(port)
    except ValueError:
        raise ServeError(f"bad address {text!r}: expected HOST:PORT") from None
    if not 1 <= port_number <= 65535:
        raise ServeError(f"bad address {text!r}: port must be 1..65535")
    return host, port_number


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
                 sock: socket.socket | None = None) -> None:
        self.engine = engine
        self.spec = engine.spec
        self.config = config
        self.clock = clock or MonotonicClock()
        if sock is None and config.port is not None:
            sock = bind_udp(config.host, config.port)
        self.sock = sock
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
                                   config.bar_lookahead_s, self.stats)
        self.worker = Worker(engine, self.timeline, self.clock.now, config.temperature,
                             config.seed, config.ahead_bars, config.quantize)
        self.worker.quiet_s = lambda: self.scheduler.quiet_s(self.clock.now())
        self.api = OscApi(self)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._switch_interval_s: float | None = None
        self.internal_errors = 0
        self.started_t_s = self.clock.now()

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
        self._switch_interval_s = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL_S)
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
        realtime_priority(HELPER_PRIORITY)
        self.worker.run(stop)

    # --- the OSC thread -------------------------------------------------------------------
    def _serve_osc(self, stop: threading.Event) -> None:
        realtime_priority(HELPER_PRIORITY)
        while not stop.is_set():
            try:
                datagram, sender = self.sock.recvfrom(MAX_DATAGRAM)
            except socket.timeout:
                continue
            except OSError:
                if stop.is_set() or self.sock.fileno() < 0:
                    return
                continue  # e.g. an ICMP error reported on the socket; keep listening
            quiet_s = self.scheduler.quiet_s(self.clock.now())
            if quiet_s > 0:
                time.sleep(quiet_s)  # let the clock thread send first (see Scheduler.quiet_s)
            for reply in self.handle_datagram(datagram, sender):
                try:
                    self.sock.sendto(reply, sender)
                except OSError:
                    pass

    def handle_datagram(self, datagram: bytes, sender: Address | None) -> list[bytes]:
        try:
            return self.api.handle(datagram, sender)
        except Exception:  # an internal bug: say so loudly, but keep the music going
            self.internal_errors += 1
            traceback.print_exc()
            return [self.api._error("", "internal error (see the server's log)")]

    # --- controls: called on the OSC thread; each only hands work over --------------------
    def sample(self, temperature: float | None, seed: int | None) -> None:
        self.worker.submit(SampleRequest(temperature, seed))

    def walk(self, step: float, every_bars: int) -> None:
        self.worker.submit(StartWalk(step, every_bars))

    def interpolate(self, bars: int, temperature: float | None) -> None:
        self.worker.submit(InterpolateRequest(bars, temperature))

    def set_temperature(self, temperature: float) -> None:
        self.worker.submit(SetTemperature(temperature))

    def set_quantize(self, mode: str) -> None:
        assert mode in QUANTIZE_MODES
        self.worker.submit(SetQuantize(mode))

    def set_tempo(self, bpm: float) -> None:
        self.scheduler.set_tempo(bpm)

    def start_playing(self) -> None:
        self.scheduler.start()

    def stop_playing(self) -> None:
        self.scheduler.stop()

    def sync(self) -> None:
        self.scheduler.sync()

    def set_velocity_amount(self, amount: float) -> None:
        self.scheduler.set_mix(velocity_amount=amount)

    def set_timing_amount(self, amount: float) -> None:
        self.scheduler.set_mix(timing_amount=amount)

    def set_muted(self, drums: list[int], muted: bool) -> None:
        self.scheduler.set_muted(drums, muted)

    def set_bar_lookahead(self, lookahead_s: float) -> None:
        self.scheduler.set_bar_lookahead(lookahead_s)

    def add_target(self, host: str, port: int) -> bool:
        return self.osc_sink is not None and self.osc_sink.add_target((host, port))

    def remove_target(self, host: str, port: int) -> bool:
        return self.osc_sink is not None and self.osc_sink.remove_target((host, port))

    def info(self) -> list[tuple[str, Any]]:
        spec, sched = self.spec, self.scheduler
        mix = sched.mix
        now = self.clock.now()
        status = self.worker.status
        targets = self.osc_sink.targets if self.osc_sink else ()
        items: list[tuple[str, Any]] = [
            ("model", spec.model_name),
            ("steps_per_bar", spec.steps_per_bar),
            ("bars", spec.bars),
            ("beats_per_bar", spec.beats_per_bar),
            ("z_size", spec.z_size),
            ("voices", ",".join(spec.drum_names)),
            ("pitches", ",".join(map(str, spec.out_pitches))),
            ("playing", int(sched.playing)),
            ("bpm", float(sched.bpm)),
            ("bar", int(sched.current_bar(now)) if sched.playing else -1),
            ("temperature", status.get("temperature", self.config.temperature)),
            ("walk_step", status.get("walk_step", 0.0)),
            ("walk_every_bars", status.get("walk_every_bars", 0)),
            ("interpolating", status.get("interpolating", 0)),
            ("quantize", status.get("quantize", self.config.quantize)),
            ("velocity_amount", float(mix.velocity_amount)),
            ("timing_amount", float(mix.timing_amount)),
            ("muted", ",".join(spec.drum_names[i] for i in sorted(mix.muted))),
            ("bar_lookahead_ms", round(sched.bar_lookahead_s * 1000, 3)),
            ("latency_ms", round(self.config.latency_s * 1000, 3)),
            ("bundles", int(self.config.bundles)),
            ("targets", ",".join(f"{h}:{p}" for h, p in targets)),
            ("outputs", " | ".join(s.describe() for s in self.sinks)),
            ("realtime", int(sched.realtime)),
            ("decodes", status.get("decodes", 0)),
            ("decode_max_ms", status.get("decode_max_ms", 0.0)),
            ("decode_errors", status.get("decode_errors", 0)),
        ]
        items += list(self.stats.summary().items())
        return items


def describe(server: Server) -> list[str]:
    """What the banner prints: where we listen and what we send to."""
    lines = []
    spec = server.spec
    lines.append(f"model {spec.model_name}: {spec.n_drums} voices, {spec.bars} bars of "
                 f"{spec.steps_per_bar} steps, latent {spec.z_size}")
    if server.listening:
        host, port = server.listening
        lines.append(f"listening for OSC on udp {host}:{port}")
    for sink in server.sinks:
        lines.append(f"sending {sink.describe()}")
    if server.scheduler.realtime:
        lines.append("clock thread: real-time scheduling (SCHED_FIFO)")
    else:
        lines.append("clock thread: normal priority (no real-time permission; timing can "
                     "slip by milliseconds on a busy machine, see docs/osc.md)")
    return lines


def serve(config: ServeConfig, engine_factory: Callable[[], EngineLike],
          extra_sinks_factory: Callable[[ServeConfig], list[Sink]] | None = None,
          out=print, started_t_s: float | None = None) -> int:
    """Run the server until SIGINT/SIGTERM. Raises ServeError for things the user can fix."""
    t0 = time.monotonic() if started_t_s is None else started_t_s
    # python-osc logs a warning for every odd type tag it meets; a client sending garbage
    # gets /groove/error replies instead, and must not flood this console.
    logging.getLogger().addFilter(lambda record: "pythonosc" not in record.pathname)
    # Bind and open ports before loading the model: a taken port is reported at once.
    sock = bind_udp(config.host, config.port) if config.port is not None else None
    sinks: list[Sink] = []
    try:
        sinks = extra_sinks_factory(config) if extra_sinks_factory else []
        server = Server(engine_factory(), config, sinks=sinks, sock=sock)
    except BaseException:
        for sink in sinks:
            sink.close()
        if sock is not None:
            sock.close()
        raise
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    # A full garbage collection walks every object the imports and the model left behind
    # (~25k): 4-7 ms holding the GIL on a busy 2-core box, long enough to make the clock thread
    # late. Freezing them once here leaves later collections only the little the music creates.
    gc.collect()
    gc.freeze()
    try:
        server.start()
        for line in describe(server):
            out(f"groove-live: {line}")
        state = "playing" if config.autostart else "stopped (send /groove/start)"
        out(f"groove-live: ready in {time.monotonic() - t0:.2f} s, {config.bpm:g} BPM, {state}")
        while not stop.wait(0.5):
            pass
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        server.close()
    out("groove-live: stopped")
    return 0
