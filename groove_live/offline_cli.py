"""`groove-live sample | interpolate | info | humanize | drumify | infill | accompany`: offline
commands (thin, over groove_live.offline, groove_live.tasks and groove_live.accompany)."""
from __future__ import annotations

import json
from typing import NoReturn

import click

from .cli_errors import fail
from .attributes import MAX_STYLE_AMOUNT
from .bundled import INTERPOLATE_MODEL
from .latent_fit import FIT_ROUNDS
from .limits import DEFAULT_TEMPERATURE, SEED_LIMIT

MODEL_METAVAR = "NAME|PATH"


def _model_help(default: str) -> str:
    return (f"A bundled model by name (listed by `groove-live info`) or the path of an .onnx "
            f"file (its NAME.encoder.onnx beside it); default: {default}.")


MODEL_HELP = _model_help("groovae")


def _fail(message: str) -> NoReturn:
    fail("groove-live", message)


def _engine(model, default: str = "groovae"):
    """The engine of a --model NAME|PATH (None: the bundled `default`)."""
    from .bundled import resolve_model
    from .engine import Engine, EngineError
    from .spec import SpecError

    try:
        return Engine.load(resolve_model(model, default))
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
@click.option("--temperature", default=DEFAULT_TEMPERATURE, show_default=True,
              type=click.FloatRange(min=0.0),
              help="Hit sampling temperature (0 = most likely hits, higher = wilder).")
@click.option("--bpm", default=120.0, show_default=True, type=click.FloatRange(1.0, 1000.0))
@click.option("--out", "out_dir", default=".", show_default=True,
              type=click.Path(file_okay=False), help="Folder for the MIDI files.")
@click.option("--seed", type=click.IntRange(0, SEED_LIMIT - 1), help="Same seed, same patterns.")
@click.option("--model", metavar=MODEL_METAVAR, help=MODEL_HELP)
@click.option("--png", is_flag=True, help="Also write a piano-roll PNG per file (matplotlib).")
@click.option("--style", metavar="NAME",
              help="Steer toward a Groove MIDI Dataset style (funk, jazz, ...; `groove-live "
                   "info` lists the model's). Needs attribute vectors, see docs/attributes.md.")
@click.option("--style-amount", default=1.0, show_default=True,
              type=click.FloatRange(0.0, MAX_STYLE_AMOUNT),
              help="How far toward --style (1: the whole style-vs-rest difference).")
@click.option("--density", default=0.0, show_default=True, type=click.FloatRange(-1.0, 1.0),
              help="Sparser (-1: the sparsest quarter of the data's grooves) to busier (+1: "
                   "the busiest quarter).")
@click.option("--syncopation", default=0.0, show_default=True,
              type=click.FloatRange(-1.0, 1.0),
              help="Kick and snare on the beat (-1) to off the beat (+1), by quartiles as "
                   "--density.")
@click.option("--fill", is_flag=True, help="Steer toward the dataset's fills.")
@click.option("--humanize", "humanize_model", metavar="[NAME|PATH]", is_flag=False,
              flag_value="humanize", default=None,
              help="Play each sample with a humanize model's velocity and timing (alone: the "
                   "bundled humanize): quantized MusicVAE drums (cat_drums_2bar, "
                   "hierdec_drums_16bar) become a played groove.")
def sample(n, temperature, bpm, out_dir, seed, model, png, style, style_amount, density,
           syncopation, fill, humanize_model):
    """Sample grooves from the prior and write them as MIDI files."""
    from .offline import Steer, sample_files

    engine = _engine(model)
    humanizer = _engine(humanize_model, default="humanize") if humanize_model else None
    steer = Steer(style, style_amount, density, syncopation, fill)
    for path in _run(sample_files, engine, n, out_dir, temperature=temperature, bpm=bpm,
                     seed=seed, png=png, steer=steer, humanizer=humanizer):
        click.echo(str(path))


@click.command()
@click.argument("start", type=click.Path(dir_okay=False))
@click.argument("end", type=click.Path(dir_okay=False))
@click.option("--steps", default=8, show_default=True, type=click.IntRange(min=2),
              help="Patterns from START to END inclusive.")
@click.option("--temperature", default=DEFAULT_TEMPERATURE, show_default=True,
              type=click.FloatRange(min=0.0))
@click.option("--bpm", type=click.FloatRange(1.0, 1000.0), help="Default: START's tempo.")
@click.option("--out", "out_dir", default=".", show_default=True, type=click.Path(file_okay=False))
@click.option("--seed", type=click.IntRange(0, SEED_LIMIT - 1),
              help="Fixes the sampling noise (shared by all steps).")
@click.option("--bar", type=click.IntRange(min=0),
              help="Bar of each file where its window starts, counting from 0 (default: "
                   "the first bar with a drum note).")
@click.option("--model", metavar=MODEL_METAVAR, help=_model_help(INTERPOLATE_MODEL))
@click.option("--fit-rounds", default=FIT_ROUNDS, show_default=True, type=click.IntRange(0, 32),
              help="Rounds of the search for the latents that decode to START and END "
                   "(0: the encoder's posterior means, unsearched).")
@click.option("--png", is_flag=True, help="Also write a piano-roll PNG per file (matplotlib).")
def interpolate(start, end, steps, temperature, bpm, out_dir, seed, bar, model, fit_rounds, png):
    """Morph from one drum MIDI file to another (a window of the model's length from each)
    through the latent space. The first and last patterns are the model's closest decodes of
    the two windows (at temperature 0); --temperature applies to the steps between."""
    from .offline import interpolate_files

    engine = _engine(model, INTERPOLATE_MODEL)
    for path in _run(interpolate_files, engine, start, end, steps, out_dir,
                     temperature=temperature, bpm=bpm, seed=seed, png=png, bar=bar,
                     fit_rounds=fit_rounds):
        click.echo(str(path))


@click.command()
@click.option("--model", metavar=MODEL_METAVAR, help=MODEL_HELP)
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON instead: {path, spec, bundled: [{name, kind, task, bars, ...}]}.")
def info(model, as_json):
    """List the bundled models, then print one model's spec: pattern shape, drums and pitches,
    z size, tensors, provenance."""
    from .bundled import bundled_info

    engine = _engine(model)
    bundled = bundled_info()
    if as_json:
        attributes = engine.attributes
        click.echo(json.dumps({"path": str(engine.path), "spec": engine.spec.to_dict(),
                               "bundled": [b.to_dict() for b in bundled],
                               "attributes": attributes.names() if attributes else None},
                              indent=1, sort_keys=True))
        return
    click.echo("bundled models (use with --model NAME):")
    width = max([len(item.name) for item in bundled], default=0)
    for item in bundled:
        click.echo(item.line(width))
    if not bundled:
        click.echo("  none")
    click.echo("")
    click.echo(engine.describe())
    click.echo(_describe_attributes(engine))


def _describe_attributes(engine) -> str:
    """The attribute vectors line of `groove-live info`."""
    from .attributes import HOW_TO_ADD

    a = engine.attributes
    if engine.spec.kind == "pitched":
        return "steering    none (a harmonizer is steered by its melody only)"
    if a is None:
        return ("steering    none" if engine.task else f"steering    none ({HOW_TO_ADD})")
    offered = sorted(a.scaled) + (["fill"] if a.fill is not None else [])
    return (f"steering    {', '.join(offered) or 'no scales'}; styles "
            f"{', '.join(a.style_names) or 'none'}")


def _task_command(task: str, what: str, input_help: str):
    """`groove-live <task> IN.mid --out DIR`: one thin command per task model."""
    @click.command(task, help=f"{what}\n\nReads the whole of {input_help}, writes "
                              f"IN.{task}.mid in --out at the input's length and tempo.")
    @click.argument("midi_in", metavar="IN.mid", type=click.Path(dir_okay=False))
    @click.option("--out", "out_dir", required=True, metavar="DIR", type=click.Path(),
                  help="Folder for the output (made if missing); the input is never replaced.")
    @click.option("--temperature", default=DEFAULT_TEMPERATURE, show_default=True,
                  type=click.FloatRange(min=0.0),
                  help="Randomness of the model's choices (0 = its most likely pattern).")
    @click.option("--seed", type=click.IntRange(0, SEED_LIMIT - 1), help="Same seed, same output.")
    @click.option("--model", metavar=MODEL_METAVAR, help=_model_help(task))
    @click.option("--png", is_flag=True,
                  help="Also write a piano roll of input and output (first bars; matplotlib).")
    def command(midi_in, out_dir, temperature, seed, model, png, amount=1.0, like=None):
        from .tasks import transform_file

        engine = _engine(model, default=task)
        path = _run(transform_file, engine, midi_in, out_dir, amount=amount,
                    temperature=temperature, seed=seed, png=png, task=task, like=like,
                    notice=lambda line: click.echo(f"groove-live: note: {line}", err=True))
        click.echo(str(path))

    if task == "humanize":
        command = click.option(
            "--amount", default=1.0, show_default=True, type=click.FloatRange(0.0, 1.0),
            help="How much of the model's groove to add: 0 gives the input back, 1 the "
                 "model's velocities and timing.")(command)
        command = click.option(
            "--like", metavar="REF.mid", type=click.Path(dir_okay=False),
            help="Play it with the feel of this recording (a drummer's take, any length): "
                 "its phrases' mean latent replaces a drummer drawn at random; --temperature "
                 "still scales the model's note-to-note variation (0: none).")(command)
    return command


humanize = _task_command(
    "humanize", "Play a drum part like a drummer: the same notes, with the model's velocity "
    "and micro-timing.", "IN.mid's drum notes (GM pitches)")
drumify = _task_command(
    "drumify", "Turn taps into a drum part (Tap2Drum): the rhythm of the taps, played on a "
    "full kit.", "IN.mid's note-ons as taps (any pitch, any channel; velocity ignored)")
infill = _task_command(
    "infill", "Add the hi-hats a drummer would play: every other drum of the input is kept "
    "as played, its hi-hats are replaced.", "IN.mid's drum notes (GM pitches)")


# The harmonizer `accompany` loads unless told: a bundled name, not bundled yet (no trained
# harmonizer has been released), so without --model the command says so in one line.
HARMONIZER_MODEL = "chorale_harmonizer"


@click.command()
@click.argument("melody", metavar="MELODY.mid", type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", required=True, metavar="DIR", type=click.Path(),
              help="Folder for MELODY.accompany.mid (made if missing); the input is never "
                   "replaced.")
@click.option("--seed", type=click.IntRange(0, SEED_LIMIT - 1), help="Same seed, same voices.")
@click.option("--model", metavar=MODEL_METAVAR, help=_model_help(HARMONIZER_MODEL))
@click.option("--png", is_flag=True, help="Also write a piano roll of the four voices "
                                          "(first 16 bars; matplotlib).")
def accompany(melody, out_dir, seed, model, png):
    """Harmonize a melody: a chorale harmonizer writes alto, tenor and bass under it.

    Reads MELODY.mid's notes on any channel (one note at a time, 4/4, at its tempo, quantized
    to 16ths; any register: it is moved into the model's soprano range and the voices moved
    back), writes MELODY.accompany.mid in --out: the melody on channel 1, each voice on its
    own channel."""
    from .accompany import accompany_file
    from .bundled import bundled_models

    if model is None and HARMONIZER_MODEL not in dict(bundled_models()):
        _fail(f"no harmonizer is bundled with this install ({HARMONIZER_MODEL} is not "
              f"included yet); pass --model PATH to an exported harmonizer .onnx")
    engine = _engine(model, default=HARMONIZER_MODEL)
    # accompany_file's refusals are OfflineErrors (or MidiReadError, EngineError): one line
    click.echo(str(_run(accompany_file, engine, melody, out_dir, seed=seed, png=png)))
