"""The clock thread: bars on an absolute grid, each committed just before it plays, then sent.

Bar n starts at anchor_t_s + (n - anchor_bar) * bar_s; the anchor moves only when the tempo
changes (at a bar boundary) or a client syncs, so the grid never drifts. A bar is committed
(its content taken from the timeline and turned into timed events) `commit_ahead_s` before
its downbeat: early enough for the /groove/bar lookahead and for hits the model plays early.
Other threads never touch this state: they post() closures that run on the clock thread.
"""
from __future__ import annotations

import heapq
import itertools
import math
import queue
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from ..spec import ModelSpec
from . import tempo
from .clock import Clock
from .events import BarContent, BarEvent, ClockEvent, Event, HitEvent, NoteOffEvent
from .realtime import RealtimePolicy
from .sinks import Sink
from .stats import TimingStats
from .timeline import Timeline

COMMIT_MARGIN_S = 0.02  # commit this much before the earliest thing a bar must send
# A commit is 1-2 ms of Python here (more on a busy machine). One due less than COMMIT_CLEAR_S
# before a send waits until that send is out, up to COMMIT_SLACK_S of the margin above, so
# sends of the bar playing never wait for the commit of the next.
COMMIT_CLEAR_S = 0.005
COMMIT_SLACK_S = 0.01
START_DELAY_S = 0.05  # after /groove/start, time for the worker to restart the phrase
NOTE_LENGTH_STEPS = 0.5  # MIDI note length; drums only care about onsets
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


@dataclass(frozen=True)
class Mix:
    """How decoded bars are played, applied at commit: changes land on the next bar."""

    velocity_amount: float = 1.0  # 1 = the model's dynamics, 0 = every hit at FLAT_VELOCITY
    timing_amount: float = 1.0  # 1 = the model's micro-timing, 0 = straight on the grid
    muted: frozenset[int] = field(default_factory=frozenset)  # drum indices

    def velocity(self, velocity: float) -> float:
        return FLAT_VELOCITY + self.velocity_amount * (velocity - FLAT_VELOCITY)


class Scheduler:
    def __init__(self, clock: Clock, timeline: Timeline, sinks: list[Sink], spec: ModelSpec,
                 bpm: float = 120.0, bar_lookahead_s: float = 0.5,
                 stats: TimingStats | None = None,
                 realtime_policy: RealtimePolicy | None = None) -> None:
        if not tempo.valid_bpm(bpm):
            raise ValueError(f"bpm {bpm} outside {tempo.MIN_BPM:g}..{tempo.MAX_BPM:g}")
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
        self._pending_bpm: float | None = None
        self._anchor_bar = 0
        self._anchor_t_s = 0.0
        self._heap: list[tuple[float, int, Event]] = []
        self._seq = itertools.count()
        self._controls: queue.SimpleQueue = queue.SimpleQueue()
        self._wake = threading.Event()
        self._idle = threading.Event()  # set while the clock thread waits (see wait_quiet)
        self._recent: dict[int, BarContent] = {}  # for repeating when a bar is missed
        # (bar, downbeat t_s, bpm, content) of the last bars committed: for /groove/info and tests.
        self.committed: deque[tuple[int, float, float, BarContent]] = deque(maxlen=64)
        self._clock_start_due = False
        self.midi_clock = any(getattr(s, "clock", False) for s in self.sinks)
        self.sink_errors = 0
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

    def set_tempo(self, bpm: float) -> None:
        self.post(lambda now: self._set_tempo(bpm))

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
        return min(self.bar_lookahead_s, MAX_LOOKAHEAD_BARS * self.bar_length_s)

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
    def process(self, now: float) -> None:
        """Apply posted controls, commit bars that are due, send events that are due."""
        while True:
            try:
                fn = self._controls.get_nowait()
            except queue.Empty:
                break
            fn(now)
        while True:
            if self._heap and self._heap[0][0] <= now:  # sends first: they are on the clock
                _, _, event = heapq.heappop(self._heap)
                self._emit(event)
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
            self.process(self.clock.now())
            t_s = self.next_t_s()
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

    def _emit(self, event: Event) -> None:
        for sink in self.sinks:
            try:
                sink.emit(event)
            except Exception as e:  # one broken output must not silence the others
                self.sink_errors += 1
                if self.sink_errors == 1:
                    print(f"groove-live: {sink.name} output failed ({type(e).__name__}: {e})",
                          file=sys.stderr)
        if isinstance(event, (HitEvent, BarEvent)):
            self.stats.record_send(event.bar, event.t_s, self.clock.now())

    def _push(self, event: Event) -> None:
        for sink in self.sinks:
            try:
                sink.prepare(event)
            except Exception:
                self.sink_errors += 1
        heapq.heappush(self._heap, (event.t_s, next(self._seq), event))

    def _fallback(self, bar: int) -> BarContent:
        """The worker missed this bar: repeat the bar a phrase ago rather than fall silent."""
        old = self._recent.get(bar - self.spec.bars)
        if old is None:
            return BarContent((), None, 0, "silence")
        return BarContent(old.hits, old.z, old.phrase_bar, "repeat")

    def _commit(self, now: float) -> None:
        bar = self.next_bar
        if self._pending_bpm is not None:  # a tempo change lands exactly on this downbeat
            self._anchor_t_s, self._anchor_bar = self.bar_t_s(bar), bar
            self.bpm, self._pending_bpm = self._pending_bpm, None
        bar_t_s = self.bar_t_s(bar)
        bar_length_s = self.bar_length_s
        step_length_s = bar_length_s / self.spec.steps_per_bar
        content = self.timeline.take(bar)
        needed_t_s = bar_t_s - self.commit_ahead_s()
        if content is None:
            self.stats.record_commit(None, bar_length_s, False)
            content = self._fallback(bar)
        else:
            self.stats.record_commit(needed_t_s - content.ready_t_s, bar_length_s, content.requested)
        self._recent[bar] = content
        self.committed.append((bar, bar_t_s, self.bpm, content))
        self._recent.pop(bar - 2 * self.spec.bars, None)

        mix = self.mix
        drums = self.spec.drums
        hits, bar_hits = [], []
        for h in content.hits:
            if h.drum in mix.muted:
                continue
            t_s = tempo.hit_t_s(bar_t_s, h.step, h.offset, step_length_s, mix.timing_amount)
            velocity = mix.velocity(h.velocity)
            drum = drums[h.drum]
            hits.append(HitEvent(t_s, bar, h.step, drum.name, drum.out_pitch, velocity))
            bar_hits.append((drum.name, drum.out_pitch, velocity, h.step, t_s - bar_t_s))
        self._push(BarEvent(bar_t_s - self.lookahead_s, bar_t_s, bar, self.bpm,
                            tuple(bar_hits)))
        if self.midi_clock:
            if self._clock_start_due:
                self._push(ClockEvent(bar_t_s, bar, "start"))
                self._clock_start_due = False
            for t_s in tempo.midi_clock_times_s(bar_t_s, bar_length_s, self.spec.beats_per_bar):
                self._push(ClockEvent(t_s, bar, "tick"))
        for e in hits:
            self._push(e)
            self._push(NoteOffEvent(e.t_s + NOTE_LENGTH_STEPS * step_length_s, bar, e.voice, e.pitch))
        self.next_bar = bar + 1

    # --- controls (run on the clock thread) -----------------------------------------------
    def _start(self, now: float, notify: bool = True) -> None:
        if self.playing:
            return
        self.playing = True
        self._clock_start_due = True
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
        self._push(ClockEvent(now, self.next_bar, "stop"))

    def _set_tempo(self, bpm: float) -> None:
        if self.playing:
            self._pending_bpm = float(bpm)
        else:
            self.bpm = float(bpm)

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
        for t_s, seq, event in self._heap:
            if isinstance(event, NoteOffEvent):
                kept.append((t_s, seq, event))
            elif event.bar >= nearest:  # a bar that now starts earlier or later: move it
                event.t_s += delta_s
                if isinstance(event, BarEvent):
                    event.downbeat_t_s += delta_s
                event.payload.clear()
                for sink in self.sinks:
                    sink.prepare(event)
                kept.append((event.t_s, seq, event))
            # else: the rest of a bar the new downbeat cuts short
        self._heap = kept
        heapq.heapify(self._heap)
