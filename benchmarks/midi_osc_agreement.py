"""Do the MIDI and OSC outputs play the same notes? `serve --midi-virtual` on a private JACK
dummy server, read by examples/ableton/midi_monitor.py, beside an OSC receiver.

Every note the monitor prints should have an OSC hit of the same drum up to 100 ms before it
(the monitor stamps a note when it prints it, so it can only be late), and every OSC hit a MIDI
note up to 100 ms after it; notes in the first and last 200 ms are left out (the two streams
start and stop at different moments). Prints the unmatched notes of each side and how late the
MIDI notes came after their OSC hits. Needs jackd and jack_wait on PATH (.ci/install_clients.sh).

    python benchmarks/midi_osc_agreement.py --notes 600 --runs 3
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.live.osc_client: the test suite's OSC receiver

from tests.live.osc_client import OscClient  # noqa: E402
from tests.live.procs import free_udp_port  # noqa: E402

NOTE_RE = re.compile(r"note_on ch\d+ (\d+) \w+ vel \d+ t ([\d.]+)")
WINDOW_S = 0.1  # how late the monitor may print a note
EDGE_S = 0.2


def _groove_live() -> str:
    return shutil.which("groove-live") or str(Path(sys.executable).with_name("groove-live"))


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def one_run(notes: int, bpm: float, period: int) -> dict:
    name = f"agree-{uuid.uuid4().hex[:6]}"
    env = dict(os.environ, JACK_DEFAULT_SERVER=name)
    procs = []
    listener = OscClient(("127.0.0.1", 9))
    try:
        jackd = subprocess.Popen(["jackd", "-n", name, "--no-realtime", "-d", "dummy", "-r",
                                  "48000", "-p", str(period)], env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        procs.append(jackd)
        subprocess.run(["jack_wait", "-s", name, "-w", "-t", "15"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        server = subprocess.Popen([_groove_live(), "serve", "--port", str(free_udp_port()),
                                   "--bpm", str(bpm), "--midi-virtual", f"gl-{name}", "--send",
                                   f"127.0.0.1:{listener.port}"], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs.append(server)
        for line in server.stdout:
            if "ready in" in line:
                break
        else:
            raise SystemExit(f"serve did not start (exit {server.wait()})")
        monitor = subprocess.run([sys.executable, str(REPO / "examples/ableton/midi_monitor.py"),
                                  "--port", f"gl-{name}", "--jack", "--count", str(notes)],
                                 env=env,
                                 capture_output=True, text=True, timeout=600)
        midi = [(int(p), float(t)) for p, t in NOTE_RE.findall(monitor.stdout)]
        if not midi:
            raise SystemExit(f"the MIDI monitor read no notes: {monitor.stderr.strip()}")
        last = max(t for _, t in midi)
        listener.wait_for(lambda c: any(m.arrival_s > last + 0.2
                                        for m in c.messages("/groove/hit")), 5.0)
        osc = [(int(m.params[1]), m.arrival_s) for m in listener.messages("/groove/hit")]
    finally:
        for proc in reversed(procs):
            _stop(proc)
        listener.close()
    lo, hi = midi[0][1] + EDGE_S, midi[-1][1] - EDGE_S

    def near(stream, pitch, a, b):
        return [t for p, t in stream if p == pitch and a <= t <= b]
    midi_alone = [(p, t) for p, t in midi if lo <= t <= hi and not near(osc, p, t - WINDOW_S, t)]
    osc_alone = [(p, t) for p, t in osc if lo <= t <= hi and not near(midi, p, t, t + WINDOW_S)]
    lags = sorted(min(t - o for o in near(osc, p, t - WINDOW_S, t))
                  for p, t in midi if lo <= t <= hi and near(osc, p, t - WINDOW_S, t))
    return {"midi": len(midi), "midi_alone": midi_alone, "osc_alone": osc_alone, "lags": lags}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--notes", type=int, default=600, help="MIDI notes per run")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--bpm", type=float, default=240.0)
    ap.add_argument("--period", type=int, default=64,
                    help="JACK period in frames (the tests use 64; a JACK MIDI port holds "
                         "about one period's worth of bytes per cycle)")
    args = ap.parse_args()
    for tool in ("jackd", "jack_wait"):
        if shutil.which(tool) is None:
            raise SystemExit(f"midi_osc_agreement: {tool} not found (.ci/install_clients.sh)")
    print(f"# {args.runs} runs of {args.notes} MIDI notes at {args.bpm:g} BPM, JACK period "
          f"{args.period} frames at 48 kHz")
    print("| run | MIDI notes | MIDI without OSC | OSC without MIDI | MIDI after OSC p50 / p99 / max (ms) |")
    print("|---|---:|---:|---:|---|")
    for run in range(1, args.runs + 1):
        r = one_run(args.notes, args.bpm, args.period)
        lags = r["lags"]
        stats = (f"{lags[len(lags) // 2] * 1000:.1f} / {lags[int(len(lags) * 0.99)] * 1000:.1f}"
                 f" / {lags[-1] * 1000:.1f}" if lags else "-")
        print(f"| {run} | {r['midi']} | {len(r['midi_alone'])} | {len(r['osc_alone'])} | "
              f"{stats} |", flush=True)
        for side in ("midi_alone", "osc_alone"):
            if r[side]:
                print(f"#   {side}: " + ", ".join(f"{p}@{t:.3f}" for p, t in r[side][:8]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
