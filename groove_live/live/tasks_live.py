"""GrooVAE's tasks in the live server: humanize and infill a typed pattern, drumify taps.

The OSC API calls this module directly. It validates on the caller's thread (OSC or MIDI
input) and hands the inference to the decode worker as a PlayRequest, so the task model runs
off the clock thread and its result loops from the next phrase start (planner.PlayPhrase),
never mid-phrase. A task model's phrase (2 bars) is shorter than the sampling model's: it
repeats inside the server's phrase. Tap takes end with time, not with a message, so the
worker polls for them (Worker.pollers) and their outcome is sent back to the tapper later.
"""
from __future__ import annotations

import sys
import threading
from typing import Any, Callable

import numpy as np

from ..limits import DEFAULT_TEMPERATURE, MAX_TEMPERATURE, SEED_LIMIT
from ..pattern import Patterns
from ..spec import ModelSpec
from ..step_pattern import STEP_VELOCITIES, StepPatternError, pairs_from_args, parse_step_pattern
from ..transforms import HIHAT_VOICES, TAP_VOICE
from .osc_wire import encode_message
from .tap import MAX_TAP_BARS, Take, TapError, TapRecorder, check_take, take_pattern
from .worker import PlayRequest, phrase_bars

TASKS = ("humanize", "drumify", "infill")
MIN_VELOCITY = 1 / 127  # the quietest note MIDI can play
# Accents and ghosts keep their order after humanize: the model's velocity moves a hit at most
# this fraction of the gap to the next written level (below one half, so levels never cross).
ACCENT_SPREAD = 0.49
TAP_LOUDNESS_RANGE = (0.25, 2.0)  # how far a tap's velocity may scale the kit's at its step


class TaskError(ValueError):
    """A task request we refuse (one line: the reason of /groove/error)."""


def unusable_reason(task: str, engine: Any, spec: ModelSpec) -> str | None:
    """Why this engine cannot serve `task` next to the playing model (None: it can)."""
    t = getattr(engine, "task", "")
    if t != task:
        kind = f"{'an' if t[:1] in tuple('aeiou') else 'a'} {t} model" if t else "a sampling model"
        return f"the {task} model is {kind}"
    es = engine.spec
    if tuple(es.drum_names) != tuple(spec.drum_names):
        return (f"the {task} model's voices ({', '.join(es.drum_names)}) differ from the "
                f"playing model's")
    if (es.steps_per_bar, es.beats_per_bar) != (spec.steps_per_bar, spec.beats_per_bar):
        return f"the {task} model's bar grid differs from the playing model's"
    return None


def load_task_engines(spec: ModelSpec, sources: dict[str, str | None],
                      load: Callable[[str, str | None], Any]) -> dict[str, Any]:
    """Each task's engine, or the one-line reason it is off: a missing or unusable model turns
    that task off, it never stops the server. sources: task -> NAME|PATH as the user gave it
    (None: the bundled model named after the task; "none": off); load(task, source) loads it."""
    engines: dict[str, Any] = {}
    for task in TASKS:
        source = sources.get(task)
        if source == "none":
            engines[task] = f"the {task} model is turned off (--{task}-model none)"
            continue
        try:
            engine = load(task, source)
        except Exception as e:  # EngineError and friends: the task is off, the music goes on
            engines[task] = f"no {task} model: {e}".replace("\n", " ")
            continue
        why = unusable_reason(task, engine, spec)
        engines[task] = why if why else engine
    return engines


def keep_accents(written: Patterns, played: Patterns) -> Patterns:
    """Humanize flattens the input's velocities (as the model was trained), so accents and
    ghost notes would be lost; this puts them back. In a voice that uses more than one level
    (o, x, X), each hit plays at its written level plus the model's deviation from that voice's
    mean, clipped so an accent stays louder than every plain hit of its voice. A voice written
    at one level keeps the model's dynamics."""
    velocities = played.velocities.copy()
    for d in range(written.n_drums):
        on = (written.hits[0, :, d] > 0) & (played.hits[0, :, d] > 0)
        levels = np.unique(written.velocities[0, on, d])
        if len(levels) < 2:
            continue
        spread = ACCENT_SPREAD * float(np.diff(levels).min())
        model = played.velocities[0, on, d]
        deviation = np.clip(model - model.mean(), -spread, spread)
        velocities[0, on, d] = np.clip(written.velocities[0, on, d] + deviation, MIN_VELOCITY, 1.0)
    return Patterns(played.hits, velocities * played.hits, played.offsets)


def follow_taps(taps: Patterns, kit: Patterns, tap_voice: int) -> Patterns:
    """Drumify's input has flat velocities and the model writes its own timing; the kit follows
    the hand where it tapped: hits on a tapped step take that tap's offset, and their velocity
    scales with how hard that tap was against the take's average."""
    tapped = taps.hits[0, :, tap_voice] > 0
    if not tapped.any():
        return kit
    tap_velocity = taps.velocities[0, :, tap_voice]
    scale = np.ones_like(tap_velocity)
    scale[tapped] = np.clip(tap_velocity[tapped] / tap_velocity[tapped].mean(), *TAP_LOUDNESS_RANGE)
    velocities = np.clip(kit.velocities * scale[None, :, None], MIN_VELOCITY, 1.0) * kit.hits
    offsets = np.where(tapped[None, :, None], taps.offsets[0, :, tap_voice][None, :, None],
                       kit.offsets) * kit.hits
    return Patterns(kit.hits, velocities, offsets)


class LiveTasks:
    """The three tasks as the live server offers them (one per server)."""

    def __init__(self, spec: ModelSpec, engines: dict[str, Any], worker, grid, now: Callable[[], float],
                 seed: int | None = None, tap_latency_s: float = 0.0, tap_bars: int = MAX_TAP_BARS,
                 send: Callable[[bytes, Any], None] | None = None) -> None:
        self.spec = spec
        self.engines = {t: engines.get(t, f"no {t} model loaded") for t in TASKS}
        self.worker = worker
        self.grid = grid  # the scheduler: its bar grid and whether it plays
        self.now = now
        self.rng = np.random.default_rng(seed)
        self.send = send  # (reply bytes, sender) for replies made later (a take's outcome)
        self.taps = TapRecorder(spec.steps_per_bar, tap_bars, tap_latency_s)
        self._tap_sender = None
        self._rng_lock = threading.Lock()
        self._lock = threading.Lock()  # taps come from the OSC thread and the MIDI input
        self.takes = 0
        self.take_errors = 0
        worker.pollers.append(self.poll)

    # --- patterns -------------------------------------------------------------------------
    def engine(self, task: str):
        engine = self.engines[task]
        if isinstance(engine, str):
            raise TaskError(engine)
        return engine

    def parse(self, task: str, args: list) -> tuple[float | None, Patterns]:
        """OSC arguments `[temperature] voice steps voice steps ...` -> (temperature, pattern
        of the task model's length)."""
        engine = self.engine(task)
        temperature = None
        if args and isinstance(args[0], (int, float)) and not isinstance(args[0], bool):
            temperature, args = float(args[0]), args[1:]
            if not 0.0 <= temperature <= MAX_TEMPERATURE:
                raise TaskError(f"temperature must be in [0, {MAX_TEMPERATURE:g}], got "
                                f"{temperature:g}")
        try:
            pattern = parse_step_pattern(pairs_from_args(args), engine.spec)
        except StepPatternError as e:
            raise TaskError(str(e)) from None
        if task == "infill":
            hats = [v for v in HIHAT_VOICES if pattern.hits[0, :, engine.spec.drum_names.index(v)].any()]
            if hats:
                raise TaskError(f"infill writes the hi-hats itself: leave out {', '.join(hats)}")
        if not pattern.hits.any():
            raise TaskError(f"the pattern has no hits (use {' '.join(STEP_VELOCITIES)} for hits)")
        return temperature, pattern

    def request(self, task: str, pattern: Patterns, temperature: float | None = None,
                sender=None) -> None:
        """Hand a task to the worker: it runs the model and the result loops from the next
        phrase start."""
        engine = self.engine(task)
        if temperature is None:
            temperature = float(self.worker.status.get("temperature", DEFAULT_TEMPERATURE))
        with self._rng_lock:  # requests come from the OSC thread and the worker (takes)
            seed = int(self.rng.integers(SEED_LIMIT))
        spec = engine.spec

        def render() -> tuple:
            out = engine.transform(pattern, temperature=temperature, seed=seed)
            if task == "humanize":
                out = keep_accents(pattern, out)
            elif task == "drumify":
                out = follow_taps(pattern, out, spec.drum_names.index(TAP_VOICE))
            return phrase_bars(out, spec)
        self.worker.submit(PlayRequest(render, task, lambda reason: self._later_error(
            f"/groove/{task}", reason, sender)))

    # --- taps -----------------------------------------------------------------------------
    def tap(self, velocity: float, sender=None, received_t_s: float | None = None):
        """One tap, heard now (less the tap latency). Returns the Tap; raises TaskError."""
        t_s = self.now() if received_t_s is None else received_t_s
        self.engine("drumify")
        with self._lock:
            try:
                tap, finished = self.taps.add(t_s, velocity, self.grid)
            except TapError as e:
                raise TaskError(str(e)) from None
            self._tap_sender = sender
        if finished is not None:
            self._finish(finished, sender)
        return tap

    def end_take(self, sender=None) -> int:
        """End the take now and drumify it; returns its tap count (raises for none)."""
        with self._lock:
            take = self.taps.end()
        try:
            check_take(take, self.spec.steps_per_bar)
        except TapError as e:
            raise TaskError(str(e)) from None
        self._finish(take, sender)
        return len(take.taps)

    def set_tap_bars(self, bars: int) -> None:
        with self._lock:
            self.taps.bars = bars  # from the next take on

    def set_tap_latency(self, latency_s: float) -> None:
        with self._lock:
            self.taps.latency_s = latency_s

    def poll(self) -> None:
        """Worker thread (Worker.pollers): drumify a take whose last bar has passed."""
        with self._lock:
            take = self.taps.due(self.now(), self.grid)
            sender = self._tap_sender
        if take is not None:
            self._finish(take, sender)

    def _finish(self, take: Take, sender) -> None:
        try:
            check_take(take, self.spec.steps_per_bar)
            engine = self.engine("drumify")
        except (TapError, TaskError) as e:
            self.take_errors += 1
            self._later_error("/groove/tap", str(e), sender)
            return
        self.takes += 1
        self.request("drumify", take_pattern(take, engine.spec), sender=sender)
        if sender is None:  # MIDI taps: nobody to answer, so say it where the user looks
            print(f"groove-live: drumifying {len(take.taps)} taps from bar {take.start_bar}",
                  file=sys.stderr)
        self._later(encode_message("/groove/ack", ["/groove/tap/take", len(take.taps),
                                                   take.start_bar, take.bars]), sender)

    def _later_error(self, address: str, reason: str, sender) -> None:
        reason = reason.replace("\n", " ")[:300]
        if sender is None:  # a MIDI tap: nobody to answer, so say it where the user looks
            print(f"groove-live: {address}: {reason}", file=sys.stderr)
        self._later(encode_message("/groove/error", [address, reason]), sender)

    def _later(self, reply: bytes, sender) -> None:
        if sender is not None and self.send is not None:
            self.send(reply, sender)

    def info(self) -> list[tuple[str, Any]]:
        on = [t for t in TASKS if not isinstance(self.engines[t], str)]
        return [("tasks", ",".join(on)), ("tap_bars", int(self.taps.bars)),
                ("tap_latency_ms", round(self.taps.latency_s * 1000, 3)),
                ("takes", self.takes), ("take_errors", self.take_errors)]
