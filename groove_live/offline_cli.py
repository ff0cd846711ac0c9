"""`groove-live sample | interpolate | info`: offline commands (thin, over groove_live.offline)."""
from __future__ import annotations

import json
import sys
from typing import NoReturn

import click

MODEL_HELP = "ONNX model (NAME.onnx with NAME.encoder.onnx beside it); default: the bundled one."


def _fail(message: str) -> NoReturn:
    """The offline commands' one convention for what the user can fix: one line, exit 2."""
    click.echo(f"groove-live: {message}", err=True)
    sys.exit(2)


def _engine(model):
    from .engine import Engine, EngineError
    from .spec import SpecError

    try:
        return Engine.load(model)
    except (EngineError, SpecError) as e:
        _fail(str(e))


def _run(fn, *args, **kwargs):
    """Call a library function; what the user can fix becomes one line and exit 2."""
    from .engine import EngineError
    from .midi_io import MidiReadError
    from .offline import OfflineError
    from .spec import SpecError

    try:
        return fn(*args, **kwargs)
    except (EngineError, MidiReadError, OfflineError, SpecError) as e:
        _fail(str(e))


@click.command()
@click.option("-n", "--num", "n", default=8, show_default=True, type=click.IntRange(min=1),
              help="How many patterns.")
@click.option("--temperature", default=0.5, show_default=True, type=click.FloatRange(min=0.0),
              help="Hit sampling temperature (0 = most likely hits, higher = wilder).")
@click.option("--bpm", default=120.0, show_default=True, type=click.FloatRange(1.0, 1000.0))
@click.option("--out", "out_dir", default=".", show_default=True,
              type=click.Path(file_okay=False), help="Folder for the MIDI files.")
@click.option("--seed", type=int, help="Same seed, same patterns.")
@click.option("--model", type=click.Path(dir_okay=False), help=MODEL_HELP)
@click.option("--png", is_flag=True, help="Also write a piano-roll PNG per file (matplotlib).")
def sample(n, temperature, bpm, out_dir, seed, model, png):
    """Sample grooves from the prior and write them as MIDI files."""
    from .offline import sample_files

    engine = _engine(model)
    for path in _run(sample_files, engine, n, out_dir, temperature=temperature, bpm=bpm,
                     seed=seed, png=png):
        click.echo(str(path))


@click.command()
@click.argument("start", type=click.Path(dir_okay=False))
@click.argument("end", type=click.Path(dir_okay=False))
@click.option("--steps", default=8, show_default=True, type=click.IntRange(min=2),
              help="Patterns from START to END inclusive.")
@click.option("--temperature", default=0.5, show_default=True, type=click.FloatRange(min=0.0))
@click.option("--bpm", type=click.FloatRange(1.0, 1000.0), help="Default: START's tempo.")
@click.option("--out", "out_dir", default=".", show_default=True, type=click.Path(file_okay=False))
@click.option("--seed", type=int, help="Fixes the sampling noise (shared by all steps).")
@click.option("--bar", type=click.IntRange(min=0),
              help="Bar of each file where its window starts, counting from 0 (default: "
                   "the first bar with a drum note).")
@click.option("--model", type=click.Path(dir_okay=False), help=MODEL_HELP)
@click.option("--png", is_flag=True, help="Also write a piano-roll PNG per file (matplotlib).")
def interpolate(start, end, steps, temperature, bpm, out_dir, seed, bar, model, png):
    """Morph from one drum MIDI file to another (a window of the model's length from each)
    through the latent space."""
    from .offline import interpolate_files

    engine = _engine(model)
    for path in _run(interpolate_files, engine, start, end, steps, out_dir,
                     temperature=temperature, bpm=bpm, seed=seed, png=png, bar=bar):
        click.echo(str(path))


@click.command()
@click.option("--model", type=click.Path(dir_okay=False), help=MODEL_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the spec JSON only.")
def info(model, as_json):
    """Print the model's spec: pattern shape, drums and pitches, z size, tensors, provenance."""
    engine = _engine(model)
    click.echo(json.dumps(engine.spec.to_dict(), indent=1, sort_keys=True) if as_json
               else engine.describe())
