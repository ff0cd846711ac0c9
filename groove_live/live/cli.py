"""`groove-live serve`: parse options, then run groove_live.live.server.serve()."""
from __future__ import annotations

import time
from pathlib import Path
from typing import NoReturn

import click

from ..cli_errors import fail
from ..limits import (DEFAULT_TEMPERATURE, MAX_BAR_LOOKAHEAD_MS, MAX_BPM, MAX_TEMPERATURE,
                      MIN_BPM, MIN_TEMPERATURE, QUANTIZE_MODES, SEED_LIMIT)
from .guard import AddressRefused, parse_network
from .server import ServeConfig, ServeError, resolve_address, serve as run_server


def _echo(line: str) -> None:
    click.echo(line)  # click flushes, so a supervising process sees "ready" at once


def _fail(message: str) -> NoReturn:
    fail("groove-live", message)


def _engine_factory(model: str | None):
    def load():
        try:
            from ..bundled import resolve_model
            from ..engine import Engine, EngineError
        except ImportError as e:
            raise ServeError(f"the model engine is not available ({e})") from None
        try:
            return Engine.load(resolve_model(model))
        except EngineError as e:
            raise ServeError(str(e)) from None
    return load


def _task_engines_factory(config: ServeConfig):
    """The task models next to the playing one; each that cannot be used is off, with its
    reason (see tasks_live.load_task_engines)."""
    def load(engine):
        from ..bundled import resolve_model
        from ..engine import Engine
        from .tasks_live import load_task_engines

        def load_one(task: str, source: str | None):
            return Engine.load(resolve_model(source, default=task))
        return load_task_engines(engine.spec, dict(config.task_models), load_one)
    return load


def _humanizer_factory(config: ServeConfig):
    """serve --humanize: the humanize model that plays every decoded phrase, checked against
    the playing model; one that cannot do that stops serve with its one-line reason."""
    if config.humanize in (None, "none"):
        return None

    def load(engine):
        from ..bundled import resolve_model
        from ..engine import Engine, EngineError
        from ..offline import OfflineError
        from ..spec import SpecError
        from ..tasks import check_humanizer

        try:
            humanizer = Engine.load(resolve_model(config.humanize, default="humanize"))
            check_humanizer(humanizer, engine.spec, f"{engine.spec.model_name}'s phrase")
        except (EngineError, SpecError, OfflineError) as e:
            raise ServeError(f"--humanize: {e}") from None
        return humanizer
    return load


def _harmonizer_factory(config: ServeConfig):
    """serve --harmonizer: the pitched model behind /groove/accompany; a file that is not one
    stops serve with one line."""
    if config.harmonizer in (None, "none"):
        return None

    def load():
        from ..bundled import resolve_model
        from ..engine import Engine, EngineError

        try:
            engine = Engine.load(resolve_model(config.harmonizer))
        except EngineError as e:
            raise ServeError(f"--harmonizer: {e}") from None
        if engine.spec.kind != "pitched":
            raise ServeError(f"--harmonizer {config.harmonizer}: model "
                             f"{engine.spec.model_name} is a {engine.spec.kind} model, not a "
                             f"harmonizer (kind pitched)")
        return engine
    return load


def _midi_in_factory(config: ServeConfig):
    if not config.midi_in:
        return None

    def start(server):
        from .midi_in import MidiInError, open_taps

        try:
            return open_taps(config.midi_in, server.tasks)
        except MidiInError as e:
            raise ServeError(str(e)) from None
    return start


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
@click.option("--bpm", default=120.0, show_default=True, type=click.FloatRange(MIN_BPM, MAX_BPM))
@click.option("--send", "sends", multiple=True, metavar="HOST:PORT",
              help="Send /groove/hit and /groove/bar here (repeatable; Sonic Pi: 127.0.0.1:4560). "
                   "A host name is resolved once, at start.")
@click.option("--midi-virtual", metavar="NAME",
              help="Open a virtual MIDI port NAME (Ableton path; JACK on Linux without ALSA).")
@click.option("--midi-out", metavar="PORT", help="Send MIDI to an existing port (name or prefix).")
@click.option("--midi-clock", is_flag=True, help="Also send MIDI beat clock and start/stop.")
@click.option("--model", metavar="NAME|PATH", default=None,
              help="A bundled model by name (see groove-live info) or an .onnx file; default: "
                   "groovae.")
@click.option("--latency-ms", default=0.0, show_default=True, type=click.FloatRange(0, 5000),
              help="Added to bundle time tags (--bundles).")
@click.option("--bundles", is_flag=True,
              help="Send OSC bundles time-tagged with the intended time + --latency-ms.")
@click.option("--bar-lookahead-ms", default=500.0, show_default=True,
              type=click.FloatRange(0, MAX_BAR_LOOKAHEAD_MS),
              help="Send /groove/bar this long before its downbeat (Sonic Pi's sched_ahead_time).")
@click.option("--temperature", default=DEFAULT_TEMPERATURE, show_default=True,
              type=click.FloatRange(MIN_TEMPERATURE, MAX_TEMPERATURE),
              help="Sampling temperature: scales hits, velocity and timing noise; 0 plays "
                   "the most likely pattern.")
@click.option("--seed", type=click.IntRange(0, SEED_LIMIT - 1), default=None,
              help="Seed of the first groove and of walk targets.")
@click.option("--quantize", type=click.Choice(list(QUANTIZE_MODES)), default="bar", show_default=True,
              help="Where changes land: the next bar or the next phrase start.")
@click.option("--stopped", is_flag=True, help="Wait for /groove/start instead of playing at once.")
@click.option("--humanize-model", metavar="NAME|PATH",
              help="Model for /groove/humanize: a bundled NAME, an .onnx PATH, or none "
                   "(default: the bundled humanize).")
@click.option("--humanize", "humanize", metavar="[NAME|PATH|none]", is_flag=False,
              flag_value="humanize", default=None,
              help="Play every decoded phrase through a humanize model before it is heard "
                   "(alone: the bundled humanize; none: off, the default): quantized MusicVAE "
                   "drums (cat_drums_2bar, hierdec_drums_16bar) become a played groove.")
@click.option("--drumify-model", metavar="NAME|PATH",
              help="Model for /groove/tap and --midi-in (default: the bundled drumify).")
@click.option("--infill-model", metavar="NAME|PATH",
              help="Model for /groove/infill (default: the bundled infill).")
@click.option("--tap-latency-ms", default=0.0, show_default=True, type=click.FloatRange(0, 1000),
              help="How long a tap takes to reach the server; taken off each tap's arrival time "
                   "(also /groove/tap/latency).")
@click.option("--tap-bars", default=2, show_default=True, type=click.IntRange(1, 2),
              help="Bars of taps in a take (also /groove/tap/bars).")
@click.option("--midi-in", metavar="PORT",
              help="Taps from this MIDI input (name or prefix; JACK when there is no ALSA): "
                   "every note-on is a tap with its velocity.")
@click.option("--harmonizer", metavar="NAME|PATH",
              help="A harmonizer model (kind pitched, e.g. chorale_harmonizer): /groove/accompany "
                   "takes a 2-bar melody and plays it with alto, tenor and bass as /groove/note "
                   "and on MIDI channels 1-4 (see docs/osc.md).")
@click.option("--library", metavar="DIR",
              help="A folder of MIDI grooves: /groove/load NAME and /groove/morph NAME play "
                   "DIR/NAME.mid, /groove/save NAME writes the playing phrase there.")
def serve(port, host, allows, bpm, sends, midi_virtual, midi_out, midi_clock, model, latency_ms,
          bundles, bar_lookahead_ms, temperature, seed, quantize, stopped, humanize_model,
          humanize, drumify_model, infill_model, tap_latency_ms, tap_bars, midi_in,
          harmonizer, library) -> None:
    """Play grooves live: OSC control in, OSC hits / bars and MIDI notes out."""
    t0 = time.monotonic()
    if midi_virtual and midi_out:
        _fail("choose one of --midi-virtual and --midi-out")
    if library is not None and not Path(library).is_dir():
        _fail(f"--library {library}: no such folder")
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
            quantize=quantize, autostart=not stopped,
            task_models=(("humanize", humanize_model), ("drumify", drumify_model),
                         ("infill", infill_model)),
            tap_latency_s=tap_latency_ms / 1000.0, tap_bars=tap_bars, midi_in=midi_in,
            library=library, humanize=humanize, harmonizer=harmonizer)
        run_server(config, _engine_factory(model), _midi_sinks, out=_echo, started_t_s=t0,
                   task_engines_factory=_task_engines_factory(config),
                   midi_in_factory=_midi_in_factory(config),
                   humanizer_factory=_humanizer_factory(config),
                   harmonizer_factory=_harmonizer_factory(config))
    except ServeError as e:
        _fail(str(e))
