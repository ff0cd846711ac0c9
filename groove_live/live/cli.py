"""`groove-live serve`: parse options, then run groove_live.live.server.serve()."""
from __future__ import annotations

import time

import click

from .guard import AddressRefused, parse_network
from .server import ServeConfig, ServeError, resolve_address, serve as run_server


def _echo(line: str) -> None:
    click.echo(line)  # click flushes, so a supervising process sees "ready" at once


def _fail(message: str) -> None:
    click.echo(f"groove-live: error: {message}", err=True)
    raise SystemExit(1)


def _engine_factory(model: str | None):
    def load():
        try:
            from ..engine import Engine, EngineError
        except ImportError as e:
            raise ServeError(f"the model engine is not available ({e})") from None
        try:
            return Engine.load(model)
        except EngineError as e:
            raise ServeError(str(e)) from None
    return load


def _midi_sinks(config: ServeConfig):
    from .midi_sink import MidiError, MidiSink, open_existing, open_virtual

    try:
        if config.midi_virtual:
            port, api = open_virtual(config.midi_virtual)
            return [MidiSink(port, f"virtual port {config.midi_virtual!r} ({api})",
                             clock=config.midi_clock)]
        if config.midi_out:
            port, name = open_existing(config.midi_out)
            return [MidiSink(port, f"port {name!r}", clock=config.midi_clock)]
    except MidiError as e:
        raise ServeError(str(e)) from None
    return []


@click.command("serve")
@click.option("--port", default=57120, show_default=True, type=click.IntRange(0, 65535),
              help="UDP port for OSC requests (57120 is also sclang's: sclang then moves to 57121).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Loopback only unless you say otherwise "
                   "(and only loopback senders are answered without --allow).")
@click.option("--allow", "allows", multiple=True, metavar="NETWORK",
              help="Also take requests from, and send to, this IPv4 network or address, e.g. "
                   "192.168.1.0/24 (repeatable; broadcast and multicast addresses only when "
                   "named; see docs/osc.md, Security).")
@click.option("--bpm", default=120.0, show_default=True, type=click.FloatRange(20, 400))
@click.option("--send", "sends", multiple=True, metavar="HOST:PORT",
              help="Send /groove/hit and /groove/bar here (repeatable; Sonic Pi: 127.0.0.1:4560). "
                   "A host name is resolved once, at start.")
@click.option("--midi-virtual", metavar="NAME",
              help="Open a virtual MIDI port NAME (Ableton path; JACK on Linux without ALSA).")
@click.option("--midi-out", metavar="PORT", help="Send MIDI to an existing port (name or prefix).")
@click.option("--midi-clock", is_flag=True, help="Also send MIDI beat clock and start/stop.")
@click.option("--model", type=click.Path(dir_okay=False), default=None,
              help="An exported .onnx groove model (default: the bundled one).")
@click.option("--latency-ms", default=0.0, show_default=True, type=click.FloatRange(0, 5000),
              help="Added to bundle time tags (--bundles).")
@click.option("--bundles", is_flag=True,
              help="Send OSC bundles time-tagged with the intended time + --latency-ms.")
@click.option("--bar-lookahead-ms", default=500.0, show_default=True,
              type=click.FloatRange(0, 2000),
              help="Send /groove/bar this long before its downbeat (Sonic Pi's sched_ahead_time).")
@click.option("--temperature", default=1.0, show_default=True, type=click.FloatRange(0, 5),
              help="Sampling temperature; 0 plays the most likely hits (greedy).")
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=None,
              help="Seed of the first groove and of walk targets.")
@click.option("--quantize", type=click.Choice(["bar", "phrase"]), default="bar", show_default=True,
              help="Where changes land: the next bar or the next phrase start.")
@click.option("--stopped", is_flag=True, help="Wait for /groove/start instead of playing at once.")
def serve(port, host, allows, bpm, sends, midi_virtual, midi_out, midi_clock, model, latency_ms,
          bundles, bar_lookahead_ms, temperature, seed, quantize, stopped) -> None:
    """Play grooves live: OSC control in, OSC hits / bars and MIDI notes out."""
    t0 = time.monotonic()
    if midi_virtual and midi_out:
        _fail("choose one of --midi-virtual and --midi-out")
    try:
        allow = tuple(parse_network(a) for a in allows)
    except AddressRefused as e:
        _fail(f"bad --allow: {e}")
    try:
        config = ServeConfig(
            host=host, port=port, bpm=bpm, sends=tuple(resolve_address(s) for s in sends),
            allow=allow,
            bundles=bundles, latency_s=latency_ms / 1000.0,
            bar_lookahead_s=bar_lookahead_ms / 1000.0, midi_virtual=midi_virtual,
            midi_out=midi_out, midi_clock=midi_clock, temperature=temperature, seed=seed,
            quantize=quantize, autostart=not stopped)
        run_server(config, _engine_factory(model), _midi_sinks, out=_echo, started_t_s=t0)
    except ServeError as e:
        _fail(str(e))
