"""Taps from a MIDI input (`serve --midi-in PORT`): every note-on, any pitch or channel, is a
tap with its velocity, e.g. from a pad controller.

The port is an existing input matched by name (exact, else a unique prefix, else a unique
part: JACK names ports "client:port"); with none matching, a virtual input named PORT is
opened for a controller or DAW to connect to. The system MIDI API first, JACK on Linux when
there is no ALSA sequencer, as for the MIDI output. Taps are taken on rtmidi's thread at the
moment the note arrives; the tap latency setting covers the controller's own delay.
"""
from __future__ import annotations

import sys
import threading

from .midi_sink import JACK, RTMIDI, MidiError, _backend, _quiet_stderr
from .tasks_live import TaskError


class MidiInError(Exception):
    """A MIDI input that cannot be opened (one clear line)."""


def _match(names: list[str], name: str) -> list[str]:
    return ([n for n in names if n == name] or [n for n in names if n.startswith(name)]
            or [n for n in names if name in n])


class MidiTaps:
    def __init__(self, port, description: str, tasks) -> None:
        self._port = port
        self._description = description
        self.tasks = tasks
        self.taps = 0
        self.refused = 0
        self._last_reason = ""
        self._lock = threading.Lock()
        port.callback = self._on_message  # set last: messages may arrive at once

    def describe(self) -> str:
        return self._description

    def _on_message(self, message) -> None:
        if message.type != "note_on" or message.velocity == 0:  # velocity 0 is a note-off
            return
        try:
            self.tasks.tap(message.velocity / 127.0, sender=None)
            self.taps += 1
        except TaskError as e:
            with self._lock:
                self.refused += 1
                repeat = str(e) == self._last_reason
                self._last_reason = str(e)
            if not repeat:  # a pad played while stopped must not print a line per hit
                print(f"groove-live: MIDI tap: {e}", file=sys.stderr)

    def close(self) -> None:
        try:
            self._port.close()
        except Exception:  # closing at shutdown must not raise
            pass


def open_taps(name: str, tasks) -> MidiTaps:
    errors = []
    apis = [RTMIDI, JACK] if sys.platform.startswith("linux") else [RTMIDI]
    for api in apis:
        label = "JACK" if api == JACK else "system MIDI"
        try:
            with _quiet_stderr():
                backend = _backend(api)
                names = backend.get_input_names()
        except MidiError as e:
            raise MidiInError(str(e)) from None
        except (SystemError, OSError, RuntimeError, NotImplementedError) as e:
            errors.append(f"{label}: {e}")
            continue
        matches = _match(names, name)
        if len(matches) > 1:
            raise MidiInError(f"MIDI input {name!r} is ambiguous: {', '.join(matches)}")
        try:
            with _quiet_stderr():
                if matches:
                    return MidiTaps(backend.open_input(matches[0]), f"input {matches[0]!r} "
                                    f"({label})", tasks)
                port = backend.open_input(name, virtual=True, client_name=name)
                return MidiTaps(port, f"virtual input {name!r} ({label})", tasks)
        except (SystemError, OSError, RuntimeError, NotImplementedError) as e:
            errors.append(f"{label}: {e}")
    raise MidiInError(f"cannot open MIDI input {name!r}: {'; '.join(errors)}")
