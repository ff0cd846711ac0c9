"""Print the notes groove-live sends to a MIDI port: check the port works before opening a DAW.

    groove-live serve --midi-virtual groove-live        # terminal 1
    python midi_monitor.py --port groove-live           # terminal 2: notes scroll by

On Linux without an ALSA sequencer (containers, headless boxes) add --jack, with a JACK
server running (groove-live picks JACK by itself there). Needs mido and python-rtmidi,
which groove-live already installs.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

import mido

# GM drum pitches groove-live plays (see docs/osc.md); anything else is printed as its number.
NAMES = {36: "kick", 38: "snare", 42: "closed_hihat", 46: "open_hihat", 43: "low_tom",
         47: "mid_tom", 50: "high_tom", 49: "crash", 51: "ride"}


def find_input(backend, name: str, timeout_s: float) -> str:
    """The first input whose name contains `name`, waiting for it to appear."""
    deadline = time.monotonic() + timeout_s
    while True:
        names = backend.get_input_names()
        matches = [n for n in names if name in n]
        if matches:
            return matches[0]
        if time.monotonic() > deadline:
            sys.exit(f"midi_monitor: no MIDI input matching {name!r} (have: {', '.join(names) or 'none'})")
        time.sleep(0.1)  # the port appears when groove-live starts; nothing to wait on but polling


@contextlib.contextmanager
def quiet_c_stderr():
    """ALSA and JACK print their own multi-line complaints on fd 2 when they are missing; we
    say what went wrong in one line instead."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", default="groove-live", help="part of the port's name")
    ap.add_argument("--jack", action="store_true", help="use JACK MIDI (Linux without ALSA)")
    ap.add_argument("--count", type=int, default=0, help="exit after this many note-ons (0: run on)")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the port")
    args = ap.parse_args()
    backend = mido.Backend("mido.backends.rtmidi/UNIX_JACK" if args.jack else "mido.backends.rtmidi")
    try:
        with quiet_c_stderr():
            name = find_input(backend, args.port, args.timeout)
            # No client_name here: mido would take it as "make a virtual port" and connect nothing.
            port = backend.open_input(name)
    except (OSError, RuntimeError, ImportError) as e:
        # rtmidi raises SystemError/RuntimeError subclasses with C-level detail when there is
        # no ALSA sequencer or no JACK server: one line saying what to try instead.
        hint = ("is a JACK server running (jackd -d dummy)?" if args.jack else
                "no ALSA sequencer here? try --jack with a JACK server running")
        sys.exit(f"midi_monitor: cannot open MIDI ({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}); {hint}")
    n = 0
    with port:
        print(f"listening on {name}", flush=True)
        for msg in port:
            if msg.type == "note_on" and msg.velocity > 0:
                n += 1
                print(f"note_on ch{msg.channel + 1} {msg.note} {NAMES.get(msg.note, '?')} "
                      f"vel {msg.velocity} t {time.monotonic():.6f}", flush=True)
                if args.count and n >= args.count:
                    return 0
            elif msg.type in ("start", "stop"):
                print(msg.type, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
