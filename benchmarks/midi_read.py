"""Time and peak memory of reading hostile MIDI files (a 24 MB note flood, huge delta times).

Each read runs in a fresh child process so its peak RSS is its own:

    .venv/bin/python benchmarks/midi_read.py            # default limits
    .venv/bin/python benchmarks/midi_read.py --no-size-cap   # lift the file-size cap only

Prints one line per case: seconds, peak RSS in MiB, and what the reader said.
"""
from __future__ import annotations

import argparse
import resource
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLOOD_BYTES = 24 * 1024 * 1024


def _vlq(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def _smf(tracks: list[bytes], ticks_per_beat: int = 480) -> bytes:
    head = b"MThd" + struct.pack(">IHHH", 6, 1, len(tracks), ticks_per_beat)
    return head + b"".join(b"MTrk" + struct.pack(">I", len(t)) + t for t in tracks)


def note_flood(n_bytes: int) -> bytes:
    """Kick drums an eighth note apart (5 bytes each: 2-byte delta, status, pitch, velocity)."""
    event = _vlq(240) + bytes([0x99, 36, 100])
    return _smf([event * (n_bytes // len(event))])


def huge_deltas() -> bytes:
    """About 90 bytes: 1/64 bars of one tick each, and notes after the largest delta time a
    file can hold."""
    meter = bytes([0, 0xFF, 0x58, 4, 1, 6, 24, 8])
    event = _vlq(0x0FFFFFFF) + bytes([0x99, 36, 100])
    return _smf([meter + event * 10], ticks_per_beat=1)


def at_the_limits() -> bytes:
    """Just under the default message and bar limits: 199,990 kicks over 1,980 bars."""
    event = _vlq(19) + bytes([0x99, 36, 100])
    return _smf([event * 199_990])


def gmd_like() -> bytes:
    """Five minutes of 16th-note hats at 120 bpm: the size of the longest real performances."""
    event = _vlq(120) + bytes([0x99, 42, 80])
    return _smf([event * 16 * 150])


def _child(path: str, no_size_cap: bool) -> None:
    from groove_live.midi_io import MidiReadError, read_performance
    from groove_live.spec import DEFAULT_SPEC

    kwargs = {}
    if no_size_cap:
        from groove_live.midi_io import ReadLimits
        kwargs["limits"] = ReadLimits(max_file_bytes=1 << 40)
    t0 = time.perf_counter()
    try:
        perf = read_performance(path, DEFAULT_SPEC, **kwargs)
        said = f"read: {perf.steps} steps, {perf.n_notes} notes"
    except MidiReadError as e:
        said = f"refused: {str(e).split(': ', 1)[-1]}"
    seconds = time.perf_counter() - t0
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{seconds:8.2f} s  {peak_mib:8.1f} MiB  {said}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-size-cap", action="store_true", help="Lift the file-size cap.")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--build", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args.child, args.no_size_cap)
        return
    if args.build:
        cases = {"24_MB_note_flood": note_flood(FLOOD_BYTES), "huge_delta_times": huge_deltas(),
                 "at_the_limits": at_the_limits(), "5-minute_performance": gmd_like()}
        for i, (name, data) in enumerate(cases.items()):
            (Path(args.build) / f"{i}_{name}.mid").write_bytes(data)
        return
    with tempfile.TemporaryDirectory() as tmp:
        # Built in a child too: peak RSS survives exec, so a big parent would inflate every case.
        subprocess.run([sys.executable, __file__, "--build", tmp], check=True)
        for path in sorted(Path(tmp).glob("*.mid")):
            name = path.stem.split("_", 1)[1].replace("_", " ")
            print(f"{name} ({path.stat().st_size:,} bytes):", end=" ", flush=True)
            cmd = [sys.executable, __file__, "--child", str(path)]
            if args.no_size_cap:
                cmd.append("--no-size-cap")
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            print(r.stdout.strip() or f"crashed: {r.stderr.strip().splitlines()[-1]}")

if __name__ == "__main__":
    main()
