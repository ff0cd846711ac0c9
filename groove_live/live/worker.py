"""The decode worker: turns requests into planned bars and decodes them ahead of the clock.

The only thread that runs inference. It keeps the timeline filled `ahead_bars` past the bar
the clock took last, applies requests from the next free bar (or phrase) on, and keeps one
spare sample decoded so a plain /groove/sample costs no inference when it arrives.
"""
from __future__ import annotations

import queue
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from ..limits import DEFAULT_TEMPERATURE, SEED_LIMIT
from ..latent import random_latents
from ..pattern import Patterns
from ..spec import ModelSpec
from .events import BarContent, Hit
from .planner import (BarState, Command, Interpolate, Planner, PlayPhrase, Restart, Sample,
                      SetQuantize, SetTemperature, StartWalk, latent_unit_bars)
from .steering import steered_latent
from .timeline import Timeline

CACHE_SIZE = 16  # decoded phrases kept: the bars in flight, re-plans and the spare; a loop needs one
# Keys the humanize pass's seed apart from the phrase's noise seed it is derived from.
HUMANIZE_SEED_KEY = 1


class EngineLike(Protocol):
    spec: ModelSpec

    def decode(self, z: np.ndarray, temperature: float = DEFAULT_TEMPERATURE,
               seed: int | None = None) -> Patterns: ...


# Requests as they come from OSC; the worker resolves them to planner commands.
@dataclass(frozen=True)
class SampleRequest:
    temperature: float | None = None
    seed: int | None = None


@dataclass(frozen=True)
class InterpolateRequest:
    bars: int
    temperature: float | None = None
    seed: int | None = None  # of the groove to morph to (seed_latent); None: a random one


@dataclass(frozen=True, eq=False)
class PlayRequest:
    """A finished phrase to make on the worker thread (a task model's inference) and then loop
    from the next phrase start. render() returns per-bar hit tuples; when it raises,
    on_error(reason) is told (one line) and the music goes on unchanged."""

    render: Callable[[], tuple]
    source: str
    on_error: Callable[[str], None] | None = None


@dataclass(frozen=True, eq=False)
class CallRequest:
    """Work that touches files or the encoder (the --library folder), run on the worker thread:
    make() returns the planner command to apply (or None for none). When it raises,
    on_error(reason) is told (one line) and the music goes on unchanged."""

    make: Callable[[], "Command | None"]
    source: str
    on_error: Callable[[str], None] | None = None


Request = (SampleRequest | InterpolateRequest | StartWalk | SetTemperature | Restart | SetQuantize
           | PlayRequest | CallRequest)


def phrase_bars(patterns: Patterns, spec: ModelSpec) -> tuple[tuple[Hit, ...], ...]:
    """One decoded pattern as per-bar hit lists, each in playing order."""
    p = patterns.cleaned()
    bars = []
    for bar in range(spec.bars):
        lo = bar * spec.steps_per_bar
        steps, drums = np.nonzero(p.hits[0, lo:lo + spec.steps_per_bar])
        hits = [Hit(int(s), int(d), float(p.velocities[0, lo + s, d]), float(p.offsets[0, lo + s, d]))
                for s, d in zip(steps, drums)]
        hits.sort(key=lambda h: (h.step + h.offset, h.drum))
        bars.append(tuple(hits))
    return tuple(bars)


class Worker:
    def __init__(self, engine: EngineLike, timeline: Timeline, now,
                 temperature: float = DEFAULT_TEMPERATURE,
                 seed: int | None = None, ahead_bars: int = 2, quantize: str = "bar",
                 humanizer=None) -> None:
        self.engine = engine
        self.spec = engine.spec
        # A humanize model (serve --humanize) that plays every decoded phrase before it is
        # heard: a quantized MusicVAE phrase becomes a played groove. The caller has checked
        # that it fits the phrase (tasks.check_humanizer).
        self.humanizer = humanizer
        self._groove = None
        if humanizer is not None:
            from ..tasks import groove_patterns  # onnxruntime's side of the package
            self._groove = groove_patterns
        self.timeline = timeline
        self._now = now
        self.ahead_bars = ahead_bars
        self.rng = np.random.default_rng(seed)
        # Seeds of new grooves, drawn on the OSC thread too (so its ack can name the seed):
        # their own generator under a lock, apart from the planner's.
        self._seed_rng = np.random.default_rng(int(self.rng.integers(SEED_LIMIT)))
        self._seed_lock = threading.Lock()
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._cache: OrderedDict = OrderedDict()
        self.initial_temperature = temperature
        self._quantize = quantize
        self._spare_seed = self.new_seed()
        self.planner: Planner | None = None
        # Read by other threads (/groove/info): replaced whole, never mutated.
        self.status: dict = {}
        self.decodes = 0
        self.decode_errors = 0
        self.last_error = ""
        self.decode_max_s = 0.0  # a phrase's decode and its humanize pass together
        self.humanize_max_s = 0.0  # the humanize pass alone
        # Returns how long to hold off Python work so the clock thread can send (Server sets it).
        self.quiet_s: Callable[[], float] | None = None
        # Called at the start of every round on this thread; each may submit() what has come
        # due (a tap take whose last bar has passed), so time-driven work needs no thread.
        self.pollers: list[Callable[[], None]] = []

    # --- any thread ----------------------------------------------------------------------
    def submit(self, request: Request) -> None:
        self._requests.put(request)
        self.timeline.wake()

    def new_seed(self) -> int:
        """A fresh random seed for a new groove (any thread)."""
        with self._seed_lock:
            return int(self._seed_rng.integers(SEED_LIMIT))

    def take_seed(self) -> int:
        """The seed of the spare groove, decoded ahead, for a /groove/sample without a seed
        (any thread); the next spare gets a fresh one. Every random groove is a seed, so the
        ack can name it and the same seed plays it again."""
        with self._seed_lock:
            seed = self._spare_seed
            self._spare_seed = int(self._seed_rng.integers(SEED_LIMIT))
            return seed

    def seed_latent(self, seed: int) -> np.ndarray:
        """The latent a seed stands for: (z_size,) from the prior N(0, I)."""
        return random_latents(1, self.spec.z_size, np.random.default_rng(seed))[0]

    # --- the worker's own thread (or the test's) ------------------------------------------

    def _decode(self, z: np.ndarray, temperature: float, noise_seed: int):
        key = (np.asarray(z, np.float32).tobytes(), round(float(temperature), 6), noise_seed)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        t0 = time.perf_counter()
        patterns = self.engine.decode(np.asarray(z, np.float32)[None], temperature=temperature,
                                      seed=noise_seed)
        if self._groove is not None:
            t1 = time.perf_counter()
            # Seeded from the phrase's own noise seed: a recalled groove plays the same way.
            seed = int(np.random.default_rng([noise_seed, HUMANIZE_SEED_KEY])
                       .integers(SEED_LIMIT))
            patterns = self._groove(self.humanizer, patterns, temperature, seed)
            self.humanize_max_s = max(self.humanize_max_s, time.perf_counter() - t1)
        self.decode_max_s = max(self.decode_max_s, time.perf_counter() - t0)
        self.decodes += 1
        bars = phrase_bars(patterns, self.spec)
        self._cache[key] = bars
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return bars

    def _keep_off_the_clock(self) -> None:
        if self.quiet_s is not None:
            wait_s = self.quiet_s()
            if wait_s > 0:
                time.sleep(wait_s)

    def _content(self, bar: int, state: BarState, requested: bool) -> BarContent:
        fill = self.planner.fills.get(bar)  # steering.Fill: this bar plays a fill
        notes = self.planner.harmony_notes(bar)  # the harmonizer's, over any drums
        if state.fixed is not None and fill is None:  # a finished phrase: it loops as is
            phrase_bar = (bar - state.phrase_start_bar) % len(state.fixed)
            return BarContent(state.fixed[phrase_bar], state.z, phrase_bar, state.source,
                              ready_t_s=self._now(), requested=requested, notes=notes)
        self._keep_off_the_clock()
        phrase_bar = (bar - state.phrase_start_bar) % self.spec.bars
        bars = self._decode(steered_latent(state.z, state.offset, fill), state.temperature,
                            state.noise_seed)
        if fill is not None:  # a fill is the last bar of its decoded phrase
            return BarContent(bars[-1], state.z, phrase_bar, "fill", ready_t_s=self._now(),
                              requested=requested, notes=notes)
        return BarContent(bars[phrase_bar], state.z, phrase_bar, state.source,
                          ready_t_s=self._now(), requested=requested, notes=notes)

    def playing_phrase(self) -> tuple:
        """Per-bar hits of the phrase the clock took last (worker thread): what plays now."""
        planner = self.planner
        bar = min(max(self.timeline.taken_bar, min(planner.states)), planner.last_bar)
        state = planner.states[bar]
        if state.fixed is not None:
            return state.fixed
        return self._decode(steered_latent(state.z, state.offset), state.temperature,
                            state.noise_seed)

    def _failed(self, source: str, e: Exception, on_error) -> None:
        self.last_error = f"{type(e).__name__}: {e}"
        print(f"groove-live: {source} failed ({self.last_error}); playing on", file=sys.stderr)
        if on_error is not None:
            on_error(f"{source} failed: {e}")

    def _resolve(self, request: Request) -> Command | None:
        if isinstance(request, CallRequest):
            self._keep_off_the_clock()
            try:
                return request.make()
            except Exception as e:  # a bad file must not stop the music (counted by its owner)
                self._failed(request.source, e, request.on_error)
                return None
        if isinstance(request, PlayRequest):
            self._keep_off_the_clock()
            t0 = time.perf_counter()
            try:
                bars = request.render()
            except Exception as e:  # a failing task model must not stop the music
                self.decode_errors += 1
                self._failed(request.source, e, request.on_error)
                return None
            self.decode_max_s = max(self.decode_max_s, time.perf_counter() - t0)
            self.decodes += 1
            return PlayPhrase(tuple(bars), request.source)
        if isinstance(request, SampleRequest):
            seed = self.take_seed() if request.seed is None else request.seed
            return Sample(self.seed_latent(seed), seed, request.temperature)
        if isinstance(request, InterpolateRequest):
            seed = self.new_seed() if request.seed is None else request.seed
            return Interpolate(self.seed_latent(seed), request.bars, request.temperature)
        return request

    def prime(self, first_bar: int = 0, seed: int | None = None) -> None:
        """Plan and decode the first bars before playback starts (this also warms the model)."""
        seed = self.take_seed() if seed is None else seed
        first = BarState(z=self.seed_latent(seed), temperature=self.initial_temperature,
                         noise_seed=seed,
                         phrase_start_bar=first_bar, source="sample")
        self.planner = Planner(first, first_bar, self.rng, self.spec.bars, self._quantize,
                               unit_bars=latent_unit_bars(self.spec))
        horizon = first_bar + self.ahead_bars
        # The first bar is decoded on demand, like a request's; the ones after are planned ahead.
        contents = {b: self._content(b, self.planner.state(b), requested=(b == first_bar))
                    for b in range(first_bar, horizon + 1)}
        self.timeline.publish(first_bar, contents, strict=False)
        self._refresh_status()
        self._decode_spare()

    def _drain(self) -> list[Request]:
        requests = []
        while True:
            try:
                requests.append(self._requests.get_nowait())
            except queue.Empty:
                return requests

    def step(self) -> bool:
        """One round: apply waiting requests, then keep the timeline `ahead_bars` ahead.

        Returns True when it published anything.
        """
        for poll in self.pollers:  # first: what they submit is applied in this round
            try:
                poll()
            except Exception as e:  # a poller's bug must not stop the music already planned
                self.last_error = f"{type(e).__name__}: {e}"
                print(f"groove-live: {self.last_error}; playing on", file=sys.stderr)
        requests = self._drain()
        commands = [c for c in map(self._resolve, requests) if c is not None]
        published = False
        try:
            if commands:
                published = self._apply(commands)
            published = self._extend() or published
        except Exception as e:  # a failing decode must not stop the music already planned
            self.decode_errors += 1
            self.last_error = f"{type(e).__name__}: {e}"
            print(f"groove-live: decoding failed ({self.last_error}); playing on", file=sys.stderr)
        self._refresh_status()
        return published

    def _apply(self, commands: list[Command]) -> bool:
        planner = self.planner
        saved_states, saved_quantize = dict(planner.states), planner.quantize
        saved_harmony = dict(planner.harmony)
        try:
            return self._apply_planned(commands, saved_states, saved_quantize, saved_harmony)
        except Exception:
            # A request whose decode fails is dropped whole: the plan goes back to what was
            # playing, so later bars are not planned from a groove that cannot be decoded.
            planner.states, planner.quantize = saved_states, saved_quantize
            planner.harmony = saved_harmony
            raise

    def _apply_planned(self, commands: list[Command], saved_states: dict,
                       saved_quantize: str, saved_harmony: dict) -> bool:
        planner = self.planner
        for _attempt in range(4):
            planner.states, planner.quantize = dict(saved_states), saved_quantize
            planner.harmony = dict(saved_harmony)
            first_free = self.timeline.first_free_bar()
            starts = [s for s in (planner.apply(c, first_free) for c in commands) if s is not None]
            if not starts:
                return False
            from_bar = min(starts)
            # The bar the request lands on first, alone: it is the one in a hurry.
            first = {from_bar: self._content(from_bar, planner.state(from_bar), requested=True)}
            if not self.timeline.publish(from_bar, first, strict=True):
                continue  # the clock took from_bar while we decoded: plan for the bar after
            planner.prune_before(first_free - 1)
            # The plan behind it changed too; these count as requested (not planned ahead).
            horizon = max(first_free + self.ahead_bars, from_bar)
            rest = {b: self._content(b, planner.state(b), requested=True)
                    for b in range(from_bar + 1, horizon + 1)}
            self.timeline.publish(from_bar + 1, rest, strict=False)
            return True
        return False

    def _extend(self) -> bool:
        first_free = self.timeline.first_free_bar()
        horizon = first_free + self.ahead_bars
        from_bar = max(self.timeline.published_through() + 1, first_free)
        if from_bar > horizon:
            return False
        self.planner.prune_before(first_free - 1)
        contents = {b: self._content(b, self.planner.state(b), False)
                    for b in range(from_bar, horizon + 1)}
        return self.timeline.publish(from_bar, contents, strict=False)

    def _decode_spare(self) -> None:
        """Idle work: decode the spare sample at the current temperature and steering."""
        if self.planner is None:
            return
        newest = self.planner.states[self.planner.last_bar]
        temperature = newest.temperature
        with self._seed_lock:
            seed = self._spare_seed
        try:
            self._decode(steered_latent(self.seed_latent(seed), newest.offset), temperature,
                         seed)
        except Exception as e:
            self.decode_errors += 1
            self.last_error = f"{type(e).__name__}: {e}"

    def _refresh_status(self) -> None:
        planner = self.planner
        if planner is None:
            return
        bar = min(max(self.timeline.taken_bar, min(planner.states)), planner.last_bar)
        state = planner.states[bar]
        # What plays now, and (_pending) what the newest planned bar will play: a request
        # lands on the next bar or phrase, so the two differ until the clock gets there.
        pending = planner.states[planner.last_bar]
        harmony, harmony_bar = planner.harmony_at(bar)
        newest_harmony = planner.harmony[max(planner.harmony)] if planner.harmony else None
        self.status = {
            "harmony": int(harmony is not None),
            "harmony_since_bar": harmony_bar if harmony is not None else -1,
            "harmony_pending": int(newest_harmony is not None),
            "temperature": float(state.temperature),
            "temperature_pending": float(pending.temperature),
            "walk_step": float(state.walk.step) if state.walk else 0.0,
            "walk_step_pending": float(pending.walk.step) if pending.walk else 0.0,
            "walk_every_bars": int(state.walk.every_bars) if state.walk else 0,
            "interpolating": int(state.morph is not None),
            "quantize": planner.quantize,
            "source": state.source,
            "source_pending": pending.source,
            "seed": int(state.noise_seed),
            "decodes": self.decodes,
            "decode_errors": self.decode_errors,
            "decode_max_ms": round(self.decode_max_s * 1000, 3),
            "humanize_max_ms": round(self.humanize_max_s * 1000, 3),
        }

    def run(self, stop: threading.Event) -> None:
        """Thread body: work whenever a request arrives or the clock takes a bar."""
        while not stop.is_set():
            seen = self.timeline.changes
            self.step()
            self._decode_spare()
            self.timeline.wait_for_take(seen, timeout_s=0.5)
