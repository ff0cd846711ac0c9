"""What each /groove/... control does to the live server, apart from the server itself.

OscApi validates a request and calls one method here; each method only hands the work over — a
decode to the worker thread, a change of time or mix to the scheduler, a target to the OSC
output — so the OSC thread never waits on a model or the clock thread. The server builds one
LiveControls from its parts; tests drive the same object directly.
"""
from __future__ import annotations

from typing import Any, Callable

from ..limits import QUANTIZE_MODES
from ..spec import ModelSpec
from .clock import Clock
from .guard import Guard
from .planner import SetQuantize, SetTemperature, StartWalk
from .scheduler import Scheduler
from .sinks import Address, OscSink
from .worker import InterpolateRequest, SampleRequest, Worker


class LiveControls:
    def __init__(self, spec: ModelSpec, worker: Worker, scheduler: Scheduler,
                 osc_sink: OscSink | None, guard: Guard, clock: Clock,
                 info: Callable[[], list[tuple[str, Any]]], tasks: Any = None,
                 library: Any = None):
        self.spec = spec
        self.worker = worker
        self.scheduler = scheduler
        self.osc_sink = osc_sink
        self.guard = guard
        self.clock = clock
        self.info = info  # the server's state, as /groove/info reports it
        self.tasks = tasks  # tasks_live.LiveTasks, which OscApi drives itself
        self.library = library  # library.Library (--library): files, read on the worker
        # The temperature as last requested (what a request without one will play at), so an
        # ack can name it; only the OSC thread calls these methods.
        self.temperature = float(worker.initial_temperature)

    # --- grooves: decoded on the worker thread ------------------------------------------
    def sample(self, temperature: float | None, seed: int | None) -> tuple[float, int]:
        """Returns (temperature, seed) of the groove asked for: sent back as
        `/groove/sample temperature seed`, they play it again."""
        if seed is None:
            seed = self.worker.take_seed()  # the spare one, decoded ahead
        if temperature is not None:
            self.temperature = temperature
        self.worker.submit(SampleRequest(temperature, seed))
        return self.temperature, seed

    def walk(self, step: float, every_bars: int, seed: int | None = None) -> int:
        """Returns the seed of the walk's targets (a new one when none was given): the same
        walk from the same groove takes the same path."""
        if seed is None:
            seed = self.worker.new_seed()
        self.worker.submit(StartWalk(step, every_bars, seed))
        return seed

    def interpolate(self, bars: int, temperature: float | None,
                    seed: int | None = None) -> tuple[float, int]:
        """Returns (temperature, seed): the seed of the groove the morph heads to."""
        if seed is None:
            seed = self.worker.new_seed()
        if temperature is not None:
            self.temperature = temperature
        self.worker.submit(InterpolateRequest(bars, temperature, seed))
        return self.temperature, seed

    def set_temperature(self, temperature: float) -> None:
        self.temperature = temperature
        self.worker.submit(SetTemperature(temperature))

    def set_quantize(self, mode: str) -> None:
        if mode not in QUANTIZE_MODES:
            raise ValueError(f"quantize mode {mode!r} is not one of {QUANTIZE_MODES}")
        self.worker.submit(SetQuantize(mode))

    # --- time and mix: the scheduler applies them on its own thread -----------------------
    def set_tempo(self, bpm: float, bars: int = 0) -> None:
        self.scheduler.set_tempo(bpm, bars)

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

    def set_bar_lookahead(self, lookahead_s: float) -> float:
        """Returns the lookahead in use: as asked, but under a bar at the current tempo."""
        self.scheduler.set_bar_lookahead(lookahead_s)
        return self.scheduler.clamped_lookahead_s(lookahead_s)

    # --- OSC targets -------------------------------------------------------------------------
    def add_target(self, host: str, port: int, requested_by: Address | None = None) -> bool:
        """Raises AddressRefused where the policy forbids it (see guard.Guard.check_target);
        a target set from beyond loopback expires unless renewed."""
        if self.osc_sink is None:
            return False
        self.guard.check_target(host, port)
        now_s = self.clock.now()
        self.osc_sink.prune(now_s)
        expires_t_s = self.guard.target_expiry_s(requested_by, now_s)
        return self.osc_sink.add_target((host, port), expires_t_s)

    def remove_target(self, host: str, port: int) -> bool:
        return self.osc_sink is not None and self.osc_sink.remove_target((host, port))
