"""The clock thread: bars on an absolute grid, each committed just before it plays, then sent.

Bar n starts at anchor_t_s + (n - anchor_bar) * bar_s; the anchor moves only when the tempo
changes (at a bar boundary) or a client syncs, so the grid never drifts. A bar is committed
(its content taken from the timeline and turned into timed events) `commit_ahead_s` before
its downbeat: early enough for the /groove/bar lookahead and for hits the model plays early.
Other threads never touch this state: they post() closures that run on the clock thread.

What a bar sounds like is render_bar(), a pure function; what each output sends for it is the
output's business (sinks.Sink: `wants`, plan()). A failure on this thread is reported (stderr,
rate-limited, and counted for /groove/info) and skipped: the music goes on.
"""
from __future__ import annotations

import heapq
import itertools
import math
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from ..limits import MAX_BPM, MIN_BPM
from ..spec import ModelSpec
from . import tempo
from .clock import Clock
from .events import BarContent, BarEvent, ClockEvent, Event, HitEvent, NoteEvent
from .realtime import RealtimePolicy
from .sinks import RenderedBar, Sink
from .stats import TimingStats
from .timeline import Timeline

COMMIT_MARGIN_S = 0.02  # commit this much before the earliest thing a bar must send
# A commit is 1-2 ms of Python here (more on a busy machine). One due less than COMMIT_CLEAR_S
# before a send waits until that send is out, up to COMMIT_SLACK_S of the margin above, so
# sends of the bar playing never wait for the commit of the next.
COMMIT_CLEAR_S = 0.005
COMMIT_SLACK_S = 0.01
START_DELAY_S = 0.05  # after /groove/start, time for the worker to restart the phrase
FLAT_VELOCITY = 0.75  # what every hit plays at with velocity amount 0
IDLE_WAIT_S = 0.5
MAX_LOOKAHEAD_BARS = 0.9  # 500 ms (Sonic Pi's) fits under this up to 400 BPM
# Other threads keep off the GIL from QUIET_BEFORE_S before each send until QUIET_AFTER_S after
# it: a thread preempted while holding the GIL would otherwise make the send wait for it.
QUIET_BEFORE_S = 0.0015
QUIET_AFTER_S = 0.0003
# ...or longer, while the clock thread is still at work on that time (committing a bar), polled
# every QUIET_POLL_S and at most QUIET_BUSY_MAX_S past it, so a stalled clock stalls nobody.
QUIET_POLL_S = 0.0002
QUIET_BUSY_MAX_S = 0.01
# The worker starts a decode only if it ends before that window: a decode releases the GIL,
# but the Python after it (turning patterns into bars) would otherwise run into a send. The
# bundled model decodes in ~2 ms; this leaves room for a busy machine.
DECODE_WORK_S = 0.006
# An output that raises this many times in a row (no send in between went through) is dropped:
# a bar's worth of failures, so one bad moment does not cost an output, a broken one does.
SINK_FAILURE_LIMIT = 16
# After an unexpected error on the clock thread, pause this long before going on, so an error
# that repeats at once cannot spin a core; far below what a listener hears.
ERROR_PAUSE_S = 0.001


@dataclass(frozen=True)
class Mix:
    """How decoded bars are played, applied at commit: changes land on the next bar."""

    velocity_amount: float = 1.0  # 1 = the model's dynamics, 0 = every hit at FLAT_VELOCITY
    timing_amount: float = 1.0  # 1 = the model's micro-timing, 0 = straight on the grid
    muted: frozenset[int] = field(default_factory=frozenset)  # drum indices

    def velocity(self, velocity: float) -> float:
        return FLAT_VELOCITY + self.velocity_amount * (velocity - FLAT_VELOCITY)


def render_bar(content: BarContent, bar: int, downbeat_t_s: float, bpm: float,
               spec: ModelSpec, mix: Mix, lookahead_s: float) -> RenderedBar:
    """The events one bar plays: its hits at their micro-timed times with the mix applied, and
    the /groove/bar summary `lookahead_s` before the downbeat. Pure: no clock, no outputs."""
    bar_length_s = tempo.bar_s(bpm, spec.beats_per_bar)
    step_length_s = bar_length_s / spec.steps_per_bar
    hits, summary = [], []
    for h in content.hits:
        if h.drum in mix.muted:
            continue
        t_s = tempo.hit_t_s(downbeat_t_s, h.step, h.offset, step_length_s, mix.timing_amount)
        velocity = mix.velocity(h.velocity)
        drum = spec.drums[h.drum]
        hits.append(HitEvent(t_s, bar, h.step, drum.name, drum.out_pitch, velocity))
        summary.append((drum.name, drum.out_pitch, velocity, h.step, t_s - downbeat_t_s))
    event = BarEvent(downbeat_t_s - lookahead_s, downbeat_t_s, bar, bpm, tuple(summary))
    # The harmonizer's notes sit on the grid (no micro-timing, no drum mix). A note held past
    # the bar line keeps this bar's step length: a tempo change there stretches it slightly.
    notes = tuple(NoteEvent(downbeat_t_s + n.step * step_length_s, bar, n.step, n.voice,
                            n.voice_index, n.channel, n.pitch, n.velocity,
                            n.steps * step_length_s) for n in content.notes)
    return RenderedBar(bar, downbeat_t_s, bpm, bar_length_s, step_length_s, spec.beats_per_bar,
                       event, tuple(hits), notes)


class _Entry:
    """One event waiting in the clock thread's heap, with the outputs it goes to."""

    __slots__ = ("event", "sinks", "fixed")

    def __init__(self, event: Event, sinks: tuple[Sink, ...], fixed: bool) -> None:
        self.event = event
        self.sinks = sinks
        self.fixed = fixed  # still sent when a sync cuts its bar short (Sink.fixed_on_sync)


class Scheduler:
    def __init__(self, clock: Clock, timeline: Timeline, sinks: list[Sink], spec: ModelSpec,
                 bpm: float = 120.0, bar_lookahead_s: float = 0.5,
                 stats: TimingStats | None = None,
                 realtime_policy: RealtimePolicy | None = None) -> None:
        if not (math.isfinite(bpm) and MIN_BPM <= bpm <= MAX_BPM):
            raise ValueError(f"bpm {bpm} outside {MIN_BPM:g}..{MAX_BPM:g}")
        self.clock = clock
        self.timeline = timeline
        self.sinks = list(sinks)
        self.spec = spec
        self.bpm = float(bpm)
        self.bar_lookahead_s = bar_lookahead_s
        self.stats = stats or TimingStats()
        self.realtime_policy = realtime_policy or RealtimePolicy()
        self.mix = Mix()
        self.playing = False
        self.next_bar = 0  # the next bar to commit
        self._pending_bpm: float | None = None  # the tempo from the next downbeat on
        # A tempo ramp under way: (from bpm, to bpm, bars, bars done). Each bar has one tempo,
        # set on its downbeat, so bar lines stay exact sums of bar lengths.
        self._ramp: tuple[float, float, int, int] | None = None
        self._anchor_bar = 0
        self._anchor_t_s = 0.0
        self._heap: list[tuple[float, int, _Entry]] = []
        self._seq = itertools.count()
        self._controls: queue.SimpleQueue = queue.SimpleQueue()
        self._wake = threading.Event()
        self._idle = threading.Event()  # set while the clock thread waits (see wait_quiet)
        self._recent: dict[int, BarContent] = {}  # for repeating when a bar is missed
        # (bar, downbeat t_s, bpm, content) of the last bars committed: for /groove/info and tests.
        self.committed: deque[tuple[int, float, float, BarContent]] = deque(maxlen=64)
        self._clock_start_due = False
        self._all_sinks = tuple(self.sinks)  # with dropped ones: their send_errors still count
        self._failures = {id(s): 0 for s in self.sinks}  # failures in a row; dropped: absent
        self._by_kind: dict[type, tuple[Sink, ...]] = {}  # who wants an event kind
        self.errors = self.stats.errors
        self.errors.watch("send_errors", lambda: sum(s.send_errors for s in self._all_sinks))
        self.realtime = False  # whether the clock thread got real-time scheduling
        self.running = threading.Event()  # set once the clock thread runs (realtime is known)
        self.next_due_t_s = math.inf  # when the clock thread next sends (read by other threads)
        self.on_transport: Callable[[str], None] | None = None  # "start": the worker restarts

    # --- any thread: post work to the clock thread ----------------------------------------
    def post(self, fn: Callable[[float], None]) -> None:
        self._controls.put(fn)
        self._wake.set()

    def start(self, notify: bool = True) -> None:
        """Play from the next bar; `notify` tells on_transport (the worker restarts the phrase)."""
        self.post(lambda now: self._start(now, notify))

    def stop(self) -> None:
        self.post(self._stop)

    def sync(self) -> None:
        self.post(self._sync)

    def set_tempo(self, bpm: float, bars: int = 0) -> None:
        """From the next downbeat; over `bars` bars (a linear ramp, one tempo per bar) when
        playing and bars > 0."""
        self.post(lambda now: self._set_tempo(bpm, bars))

    @property
    def bpm_pending(self) -> float:
        """The tempo asked for: the ramp's target, the next bar's tempo, or the current one."""
        if self._ramp is not None:
            return self._ramp[1]
        return self.bpm if self._pending_bpm is None else self._pending_bpm

    def set_mix(self, **changes) -> None:
        def apply(now: float) -> None:
            current = self.mix.__dict__ | changes
            self.mix = Mix(**current)
        self.post(apply)

    def set_muted(self, drums: list[int], muted: bool) -> None:
        def apply(now: float) -> None:
            m = set(self.mix.muted)
            m = m | set(drums) if muted else m - set(drums)
            self.mix = Mix(self.mix.velocity_amount, self.mix.timing_amount, frozenset(m))
        self.post(apply)

    def set_bar_lookahead(self, lookahead_s: float) -> None:
        def apply(now: float) -> None:
            self.bar_lookahead_s = lookahead_s
        self.post(apply)

    # --- grid arithmetic -------------------------------------------------------------------
    @property
    def bar_length_s(self) -> float:
        return tempo.bar_s(self.bpm, self.spec.beats_per_bar)

    def bar_t_s(self, bar: int) -> float:
        return tempo.bar_start_s(self._anchor_t_s, self._anchor_bar, bar, self.bar_length_s)

    @property
    def lookahead_s(self) -> float:
        """The /groove/bar lookahead in use: as asked, but under a bar, so a bar is never
        committed more than a bar early (the worker plans two bars ahead)."""
        return self.clamped_lookahead_s(self.bar_lookahead_s)

    def clamped_lookahead_s(self, lookahead_s: float) -> float:
        """The lookahead used for one asked for, at the current tempo."""
        return min(lookahead_s, MAX_LOOKAHEAD_BARS * self.bar_length_s)

    def commit_ahead_s(self) -> float:
        bpms = [self.bpm] if self._pending_bpm is None else [self.bpm, self._pending_bpm]
        half_step_s = max(0.5 * tempo.step_s(b, self.spec.beats_per_bar, self.spec.steps_per_bar)
                          for b in bpms)
        return max(self.lookahead_s, half_step_s) + COMMIT_MARGIN_S

    def next_commit_t_s(self) -> float:
        if not self.playing:
            return math.inf
        return self.bar_t_s(self.next_bar) - self.commit_ahead_s()

    def commit_at_s(self) -> float:
        """When the clock thread commits the next bar: when due, or, if a send falls due within
        COMMIT_CLEAR_S after that, just after the send, as long as COMMIT_SLACK_S allows. A
        commit is a millisecond or more of Python; a send must not wait for it."""
        t_s = self.next_commit_t_s()
        if self._heap and t_s <= self._heap[0][0] < t_s + COMMIT_CLEAR_S:
            return min(self._heap[0][0], t_s + COMMIT_SLACK_S)
        return t_s

    def next_t_s(self) -> float:
        t_s = self._heap[0][0] if self._heap else math.inf
        return min(t_s, self.commit_at_s())

    def current_bar(self, now: float) -> int:
        """The bar whose downbeat passed last on the current grid."""
        return self._anchor_bar + math.floor((now - self._anchor_t_s) / self.bar_length_s)

    # --- the clock thread ----------------------------------------------------------------
    def process(self, now: float) -> bool:
        """Apply posted controls, commit bars that are due, send events that are due. Never
        raises: a failure is reported and counted (False), and the next call goes on from
        there (whatever failed was already taken off the queue, the heap or the bar count)."""
        try:
            self._process(now)
            return True
        except Exception as e:  # a bug of ours: say so, keep time
            self.errors.record("clock", f"error on the clock thread ({type(e).__name__}: "
                               f"{e}); going on", self.clock.now())
            return False

    def _process(self, now: float) -> None:
        while True:
            try:
                fn = self._controls.get_nowait()
            except queue.Empty:
                break
            fn(now)
        while True:
            if self._heap and self._heap[0][0] <= now:  # sends first: they are on the clock
                _, _, entry = heapq.heappop(self._heap)
                self._emit(entry)
            elif self.commit_at_s() <= now:
                self._commit(self.clock.now())
            else:
                return

    def run(self, stop: threading.Event) -> None:
        """Thread body: sleep until the next event, send it; nothing else (no inference)."""
        self.realtime = self.realtime_policy.clock_thread()
        self.running.set()
        while not stop.is_set():
            self._wake.clear()
            if self.process(self.clock.now()):
                t_s = self.next_t_s()
            else:
                t_s = self.clock.now() + ERROR_PAUSE_S
            if not math.isfinite(t_s):
                t_s = self.clock.now() + IDLE_WAIT_S
            self.next_due_t_s = t_s
            self._idle.set()
            self.clock.wait_until(t_s, self._wake)
            self._idle.clear()

    def wait_quiet(self) -> None:
        """Block the calling thread (not the clock thread) until it may run Python code: over
        the quiet window of the next send, then, if the clock thread is still busy with it, until
        it goes back to waiting. One wake-up, where polling would take the GIL from the clock
        thread at every poll, and hand it to a thread of lower priority that may not run soon."""
        quiet_s = self.quiet_s(self.clock.now())
        if quiet_s > 0:
            time.sleep(quiet_s)
        if self.next_due_t_s <= self.clock.now():
            self._idle.wait(QUIET_BUSY_MAX_S)

    def quiet_s(self, now: float, work_s: float = 0.0) -> float:
        """How long another thread should wait before running `work_s` of work, so that it does
        not hold the GIL when the clock thread wakes to send (0: go ahead). Past the due time it
        answers with a short poll for as long as the clock thread is still busy with it (it
        moves next_due_t_s on when done): a bar's commit is a millisecond or two of Python."""
        until_s = self.next_due_t_s - now
        if until_s >= QUIET_BEFORE_S + work_s or until_s <= -QUIET_BUSY_MAX_S:
            return 0.0
        if until_s > -QUIET_AFTER_S:
            return until_s + QUIET_AFTER_S
        return QUIET_POLL_S

    def _emit(self, entry: _Entry) -> None:
        event = entry.event
        for sink in entry.sinks:
            key = id(sink)
            if key not in self._failures:  # dropped while the event waited
                continue
            try:
                sink.emit(event)
            except Exception as e:  # one broken output must not silence the others
                self._sink_failed(sink, "send", e)
            else:
                if self._failures[key]:
                    self._failures[key] = 0
        if isinstance(event, (HitEvent, BarEvent)):
            self.stats.record_send(event.bar, event.t_s, self.clock.now())

    def _sink_failed(self, sink: Sink, doing: str, e: Exception) -> None:
        now = self.clock.now()
        why = f"{type(e).__name__}: {e}"
        self.errors.record("sink", f"the {sink.name} output failed to {doing} ({why})", now)
        key = id(sink)
        if key not in self._failures:  # dropped already
            return
        self._failures[key] += 1
        if self._failures[key] >= SINK_FAILURE_LIMIT:
            self._drop(sink, f"it failed {SINK_FAILURE_LIMIT} times in a row (last: {why})")

    def _drop(self, sink: Sink, why: str) -> None:
        """Stop using an output for good (the server still closes it on exit)."""
        self._failures.pop(id(sink), None)
        self.sinks = [s for s in self.sinks if s is not sink]
        self._by_kind.clear()
        self.errors.record_dropped(f"stopped sending to the {sink.name} output: {why}")

    def _wanting(self, kind: type) -> tuple[Sink, ...]:
        sinks = self._by_kind.get(kind)
        if sinks is None:
            sinks = self._by_kind[kind] = tuple(s for s in self.sinks if kind in s.wants)
        return sinks

    def _push(self, event: Event, sinks: tuple[Sink, ...] | None = None,
              fixed: bool = False) -> None:
        """Plan `event` for `sinks` (default: every output that wants its kind)."""
        if sinks is None:
            sinks = self._wanting(type(event))
        self._prepare(event, sinks)
        heapq.heappush(self._heap, (event.t_s, next(self._seq), _Entry(event, sinks, fixed)))

    def _prepare(self, event: Event, sinks: tuple[Sink, ...]) -> None:
        for sink in sinks:
            if id(sink) not in self._failures:  # dropped
                continue
            try:
                sink.prepare(event)
            except Exception as e:  # emit() encodes what prepare() could not
                self._sink_failed(sink, "prepare a send", e)

    def _fallback(self, bar: int) -> BarContent:
        """The worker missed this bar: repeat the bar a phrase ago rather than fall silent."""
        old = self._recent.get(bar - self.spec.bars)
        if old is None:
            return BarContent((), None, 0, "silence")
        return BarContent(old.hits, old.z, old.phrase_bar, "repeat", notes=old.notes)

    def _commit(self, now: float) -> None:
        bar = self.next_bar
        self.next_bar = bar + 1  # first: a bar that fails below is skipped, never retried
        if self._pending_bpm is not None:  # a tempo change lands exactly on this downbeat
            self._anchor_t_s, self._anchor_bar = self.bar_t_s(bar), bar
            self.bpm, self._pending_bpm = self._pending_bpm, None
            self._ramp_on()
        bar_t_s = self.bar_t_s(bar)
        content = self.timeline.take(bar)
        needed_t_s = bar_t_s - self.commit_ahead_s()
        if content is None:
            self.stats.record_commit(None, self.bar_length_s, False)
            content = self._fallback(bar)
        else:
            self.stats.record_commit(needed_t_s - content.ready_t_s, self.bar_length_s,
                                     content.requested)
        self._recent[bar] = content
        self.committed.append((bar, bar_t_s, self.bpm, content))
        self._recent.pop(bar - 2 * self.spec.bars, None)
        try:
            rendered = render_bar(content, bar, bar_t_s, self.bpm, self.spec, self.mix,
                                  self.lookahead_s)
        except Exception as e:  # e.g. a hit naming a drum the model does not have
            self.errors.record("render", f"bar {bar} could not be played "
                               f"({type(e).__name__}: {e}); skipped it", now)
            return
        self._push(rendered.event)
        if self._clock_start_due:
            self._push(ClockEvent(bar_t_s, bar, "start"))
            self._clock_start_due = False
        for sink in self.sinks:
            try:
                own = list(sink.plan(rendered))
            except Exception as e:
                self._sink_failed(sink, "plan a bar", e)
                continue
            for event in own:
                self._push(event, (sink,), isinstance(event, sink.fixed_on_sync))
        for hit in rendered.hits:
            self._push(hit)
        for note in rendered.notes:
            self._push(note)

    # --- controls (run on the clock thread) -----------------------------------------------
    def _start(self, now: float, notify: bool = True) -> None:
        if self.playing:
            return
        self.playing = True
        self._clock_start_due = True
        if self._ramp is not None:  # stopped mid-ramp: start at its target
            self._pending_bpm, self._ramp = self._ramp[1], None
        if self._pending_bpm is not None:
            self.bpm, self._pending_bpm = self._pending_bpm, None
        self._anchor_bar = self.next_bar
        self._anchor_t_s = now + self.commit_ahead_s() + START_DELAY_S
        if notify and self.on_transport is not None:
            self.on_transport("start")

    def _stop(self, now: float) -> None:
        if not self.playing:
            return
        self.playing = False
        # Everything planned is dropped; sinks end the notes still sounding on "stop".
        self._heap = []
        self._push(ClockEvent(now, self.next_bar, "stop"))  # outputs end what still sounds

    def _set_tempo(self, bpm: float, bars: int = 0) -> None:
        self._ramp = None  # a new tempo replaces a ramp under way, from where it got to
        if not self.playing:
            self.bpm, self._pending_bpm = float(bpm), None
        elif bars > 0:
            self._ramp = (self.bpm, float(bpm), int(bars), 0)
            self._ramp_on()
        else:
            self._pending_bpm = float(bpm)

    def _ramp_on(self) -> None:
        """Set the next bar's tempo from the ramp: bar k of n plays from + (to - from) * k / n."""
        if self._ramp is None:
            return
        start, target, bars, done = self._ramp
        done += 1
        self._pending_bpm = start + (target - start) * done / bars
        self._ramp = (start, target, bars, done) if done < bars else None

    def _sync(self, now: float) -> None:
        """The bar line is now: snap the nearest boundary to this moment."""
        if not self.playing:
            self.playing = True
            self._clock_start_due = True
            self._anchor_bar, self._anchor_t_s = self.next_bar, now
            if self.on_transport is not None:
                self.on_transport("start")
            return
        current = self.current_bar(now)
        nearest = current + tempo.nearest_boundary(now, self.bar_t_s(current), self.bar_length_s)
        nearest = min(nearest, self.next_bar)  # never skip a bar nobody has committed yet
        delta_s = now - self.bar_t_s(nearest)
        self._anchor_bar, self._anchor_t_s = nearest, now
        kept = []
        for t_s, seq, entry in self._heap:
            event = entry.event
            if event.bar >= nearest:  # a bar that now starts earlier or later: move it
                event.t_s += delta_s
                if isinstance(event, BarEvent):
                    event.downbeat_t_s += delta_s
                event.payload.clear()
                self._prepare(event, entry.sinks)
                kept.append((event.t_s, seq, entry))
            elif entry.fixed:  # e.g. the note-off of a note the cut bar already started
                kept.append((t_s, seq, entry))
            # else: the rest of a bar the new downbeat cuts short
        self._heap = kept
        heapq.heapify(self._heap)
