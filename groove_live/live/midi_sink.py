"""MIDI output: GM drum notes on channel 10 to a virtual or existing port, optional MIDI clock;
the harmonizer's voices (serve --harmonizer) on their own channels (melody 1, alto 2, ...)."""
from __future__ import annotations

import contextlib
import os
import sys

from ..limits import DRUM_CHANNEL, NOTE_LENGTH_STEPS
from . import tempo
from .events import ClockEvent, Event, HitEvent, NoteEvent, NoteOffEvent
from .sinks import RenderedBar, Sink
RTMIDI = "mido.backends.rtmidi"
JACK = "mido.backends.rtmidi/UNIX_JACK"


class MidiError(Exception):
    """A MIDI port that cannot be opened (one clear line for the user)."""


@contextlib.contextmanager
def _quiet_stderr():
    """Silence what ALSA/JACK's C libraries print while a port is tried.

    Their failures also come back as exceptions, which we turn into one clear line; the C
    noise would bury it. Only used at start-up, before any other thread writes to stderr.
    """
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # pytest capture and the like
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


def _backend(name: str):
    import mido  # heavy-ish and only needed when MIDI is asked for

    try:
        backend = mido.Backend(name, load=True)
    except ImportError as e:
        raise MidiError(f"MIDI backend {name} is not available ({e}); "
                        f"install python-rtmidi") from None
    return backend


def open_virtual(name: str):
    """A virtual output port other apps (Ableton, a DAW) can open by `name`.

    The system API first (CoreMIDI on macOS, ALSA on Linux desktops); on Linux without an
    ALSA sequencer (containers, headless boxes) JACK, which must be running.
    """
    errors = []
    apis = [RTMIDI, JACK] if sys.platform.startswith("linux") else [RTMIDI]
    for api in apis:
        try:
            with _quiet_stderr():
                port = _backend(api).open_output(name, virtual=True, client_name=name)
            return port, ("JACK" if api == JACK else "system MIDI")
        except MidiError:
            raise
        except (SystemError, OSError, RuntimeError, NotImplementedError) as e:
            errors.append(f"{'JACK' if api == JACK else 'system API'}: {e}")
    hint = " (start a JACK server, e.g. `jackd -d dummy`)" if len(apis) > 1 else ""
    if sys.platform == "win32":
        hint = " (Windows has no virtual ports: create one with loopMIDI and use --midi-out)"
    raise MidiError(f"cannot open virtual MIDI port {name!r}: {'; '.join(errors)}{hint}")


def open_existing(name: str):
    """An existing output port, by exact name or unique prefix."""
    last_error = None
    for api in ([RTMIDI, JACK] if sys.platform.startswith("linux") else [RTMIDI]):
        try:
            with _quiet_stderr():
                backend = _backend(api)
                names = backend.get_output_names()
        except MidiError:
            raise
        except (SystemError, OSError, RuntimeError) as e:
            last_error = e
            continue
        matches = [n for n in names if n == name] or [n for n in names if n.startswith(name)]
        if len(matches) == 1:
            with _quiet_stderr():
                return backend.open_output(matches[0]), matches[0]
        if len(matches) > 1:
            raise MidiError(f"MIDI port {name!r} is ambiguous: {', '.join(matches)}")
        if names:
            raise MidiError(f"no MIDI output port {name!r}; available: {', '.join(names)}")
    why = f" ({last_error})" if last_error else ""
    raise MidiError(f"no MIDI output port {name!r}: no MIDI output ports found{why}")


class MidiSink(Sink):
    """Notes on channel 10; with `clock`, MIDI beat clock and start/stop for a DAW to follow.

    MIDI needs more than the music: each note-on a note-off, and with `clock` 24 ticks a beat.
    plan() adds those to every bar; no other output ever sees them.
    """

    name = "midi"
    OWN_OFF = "midi_own_off"  # payload key: the note-off plan() made for this hit or note
    wants = frozenset({HitEvent, NoteEvent, ClockEvent})  # the hits and notes, and start/stop
    fixed_on_sync = (NoteOffEvent,)  # a bar cut short must not leave a started note sounding

    def __init__(self, port, description: str, clock: bool = False) -> None:
        import mido

        self._mido = mido
        self._port = port
        self._description = description
        self.clock = clock
        # (channel, pitch) -> the note-off planned for the note sounding there (None: one this
        # sink did not plan, which any note-off of that key ends)
        self._sounding: dict[tuple[int, int], NoteOffEvent | None] = {}
        self.send_errors = 0
        # Prebuilt, so the clock thread does not build messages 96 times a bar.
        self._tick = mido.Message("clock")
        self._start = mido.Message("start")
        self._stop = mido.Message("stop")

    def plan(self, bar: RenderedBar) -> list[Event]:
        note_length_s = NOTE_LENGTH_STEPS * bar.step_length_s
        events: list[Event] = []
        for h in bar.hits:
            off = NoteOffEvent(h.t_s + note_length_s, h.bar, h.voice, h.pitch)
            h.payload[self.OWN_OFF] = off  # emit() ends a note with its own note-off only
            events.append(off)
        # A harmonizer note ends when it is held to; planned before the next bar's notes, so a
        # note that ends where the same pitch starts again is off before it is on again.
        for n in bar.notes:
            off = NoteOffEvent(n.t_s + n.duration_s, n.bar, n.voice, n.pitch, channel=n.channel)
            n.payload[self.OWN_OFF] = off
            events.append(off)
        if self.clock:
            events += [ClockEvent(t_s, bar.bar, "tick") for t_s in
                       tempo.midi_clock_times_s(bar.downbeat_t_s, bar.bar_length_s,
                                                bar.beats_per_bar)]
        return events

    @staticmethod
    def _channel(event: Event) -> int:
        channel = getattr(event, "channel", None)
        return DRUM_CHANNEL if channel is None else channel

    def prepare(self, event: Event) -> None:
        if isinstance(event, (HitEvent, NoteEvent)):
            midi_velocity = min(127, max(1, round(event.velocity * 127)))
            event.payload[self.name] = self._mido.Message(
                "note_on", channel=self._channel(event), note=event.pitch, velocity=midi_velocity)
        elif isinstance(event, NoteOffEvent):
            event.payload[self.name] = self._mido.Message(
                "note_off", channel=self._channel(event), note=event.pitch, velocity=0)

    def emit(self, event: Event) -> None:
        if isinstance(event, ClockEvent):
            if event.kind == "stop":  # playback stopped: no note may hang
                self.all_notes_off()
            if not self.clock:
                return
            msg = {"tick": self._tick, "start": self._start, "stop": self._stop}[event.kind]
        elif isinstance(event, (HitEvent, NoteEvent, NoteOffEvent)):
            msg = event.payload.get(self.name)
            if msg is None:
                self.prepare(event)
                msg = event.payload[self.name]
            key = (self._channel(event), event.pitch)
            if isinstance(event, NoteOffEvent):
                if key not in self._sounding:
                    return
                owner = self._sounding[key]
                if owner is not None and owner is not event:
                    return  # a later note of this pitch sounds now; its own note-off ends it
                del self._sounding[key]
            else:
                if key in self._sounding:  # retrigger: end the previous note first
                    self._send(self._mido.Message("note_off", channel=key[0], note=key[1],
                                                  velocity=0))
                self._sounding[key] = event.payload.get(self.OWN_OFF)
        else:
            return
        self._send(msg)

    def _send(self, msg) -> None:
        try:
            self._port.send(msg)
        except (OSError, SystemError, RuntimeError):
            self.send_errors += 1

    def all_notes_off(self) -> None:
        for channel, pitch in sorted(self._sounding):
            self._send(self._mido.Message("note_off", channel=channel, note=pitch, velocity=0))
        self._sounding.clear()

    def close(self) -> None:
        self.all_notes_off()
        try:
            self._port.close()
        except Exception:  # closing a port of a dead JACK server must not mask the exit
            pass

    def describe(self) -> str:
        clock = " + MIDI clock" if self.clock else ""
        return f"MIDI ch10 -> {self._description}{clock}"
