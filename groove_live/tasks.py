"""GrooVAE's tasks over whole MIDI files: humanize, drumify and infill, offline.

A task model works on phrases of its own length (2 bars). A file is read onto the model's grid
from its very start, cut into consecutive phrases (the last one padded with silence), every
phrase with a note is transformed in one batch, and the phrases are stitched and trimmed back
to the file's own length, so the output lines up bar for bar with the input in a DAW.

Choices a reader should know:
- The file's timeline is kept. Unlike the sampling reader (`read_pattern`), which skips to the
  first bar with a note, a file that starts with two silent bars gives an output whose first
  two bars are silent: shifting it would put the output out of step with the input.
- A phrase without a single input note stays silent: the model is not asked to fill a break
  or a count-in with drums the user did not play.
- One latent z is drawn for the whole file, so every phrase is played by the same "drummer"
  rather than a different feel every two bars. Humanize can take that z from a recording
  instead (`--like REF.mid`, GrooVAE's groove transfer): the model's encoder reads each phrase
  of the reference, and the mean of their latents plays the whole file. A drummer's habits
  (how hard, how far ahead or behind each drum) are what the latent carries; the notes stay
  the input's.
- Tempo and meter: the grid follows the file's beats, and the output is written at the file's
  first tempo (later tempo changes are not kept). The model plays bars of four quarter notes:
  a 4/4 file (or 2/2) is accepted and written as 4/4; any other meter is refused. As for
  tempo, the file's first time signature is the one that counts.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .atomic_io import atomic_path
from .engine import Engine
from .midi_io import (DEFAULT_LIMITS, MidiReadError, Performance, ReadLimits, read_playable,
                      write_pattern)
from .offline import OfflineError, cannot_write, check_png, output_path
from .pattern import Patterns
from .spec import TASKS, DrumClass, ModelSpec
from .transforms import TAP_VOICE, generated_voices

ALL_PITCHES = tuple(range(128))
# A file's end may sit a hair past a bar line (a rounding DAW, a note-off a tick late): that is
# not another bar.
BAR_END_TOLERANCE_STEPS = 0.5
# The piano roll shows at most this many bars, input above output, so a long file still gives
# a readable image of bounded size.
PNG_BARS = 16
PNG_ROW_BARS = 4


class TaskError(OfflineError):
    """A task request the user can fix (wrong model, empty file, bad --out): one line."""


def tap_spec(spec: ModelSpec, tap_voice: str = TAP_VOICE) -> ModelSpec:
    """The reading spec for taps: a note-on of ANY pitch (on any channel: the reader does not
    filter channels) lands on the tap voice, so taps played on a pad, a keyboard or a drum kit
    all count; their velocity is dropped later by the task's input transformation."""
    if tap_voice not in spec.drum_names:
        raise TaskError(f"the model has no {tap_voice!r} voice to read taps onto")
    return spec.replace(drums=tuple(
        DrumClass(d.name, d.out_pitch, ALL_PITCHES if d.name == tap_voice else ())
        for d in spec.drums))


def read_task_input(path: str | Path, spec: ModelSpec, task: str,
                    limits: ReadLimits = DEFAULT_LIMITS) -> Performance:
    """The whole file on the model's grid from its first tick: drum notes (humanize, infill)
    or taps of any pitch (drumify). MidiReadError (one line) for a file with nothing to
    transform or in a meter the model cannot play."""
    return read_playable(path, tap_spec(spec) if task == "drumify" else spec, limits)


def file_bars(perf: Performance, spec: ModelSpec, path: str | Path = "input",
              limits: ReadLimits = DEFAULT_LIMITS) -> int:
    """The file's length in whole bars: every bar with a note, and the silent bars the file
    itself runs to (its end of track) when that is further."""
    note_bars = math.ceil(perf.steps / spec.steps_per_bar)
    end_bars = math.floor((perf.end_steps + BAR_END_TOLERANCE_STEPS) / spec.steps_per_bar)
    bars = max(note_bars, end_bars, 1)
    if bars > limits.max_bars:
        raise MidiReadError(f"{path}: ends in bar {bars:,}, over the {limits.max_bars:,}-bar "
                            "limit", "too long")
    return bars


def phrases(perf: Performance, spec: ModelSpec, bars: int) -> Patterns:
    """The file cut into consecutive phrases of the model's length, the last padded with
    silence: (ceil(bars / spec.bars), spec.steps, voices)."""
    n = math.ceil(bars / spec.bars)
    total = n * spec.steps
    arrays = [np.pad(a[:total], ((0, total - min(total, a.shape[0])), (0, 0)))
              .reshape(n, spec.steps, spec.n_drums)
              for a in (perf.hits, perf.velocities, perf.offsets)]
    return Patterns(*arrays).cleaned()


def stitch(patterns: Patterns, steps: int) -> Patterns:
    """Phrases (N, T, C) back into one pattern (1, steps, C), cut to `steps`."""
    def join(a: np.ndarray) -> np.ndarray:
        return a.reshape(1, -1, a.shape[-1])[:, :steps]
    return Patterns(join(patterns.hits), join(patterns.velocities), join(patterns.offsets))


def blend_humanized(given: Patterns, model: Patterns, amount: float) -> Patterns:
    """Humanize's --amount: the given notes exactly, with velocity and timing moved `amount`
    of the way from the given ones to the model's. 0 gives the input back (accents and any
    timing of its own included); 1 gives the model's performance."""
    given = given.cleaned()
    model = model.cleaned()
    hits = given.hits  # humanize never adds or drops a note

    def mix(mine: np.ndarray, theirs: np.ndarray) -> np.ndarray:
        return (mine + np.float32(amount) * (theirs - mine)) * hits
    return Patterns(hits, mix(given.velocities, model.velocities),
                    mix(given.offsets, model.offsets)).cleaned()


def keep_given_voices(task: str, spec: ModelSpec, given: Patterns, model: Patterns) -> Patterns:
    """The voices the task does not write come from the input exactly (infill: all but the
    hi-hats). The graph already does this; stating it here makes it the file's guarantee."""
    written = generated_voices(task, spec)
    keep = 1.0 - written
    given, model = given.cleaned(), model.cleaned()
    return Patterns(*(g * keep + m * written for g, m in (
        (given.hits, model.hits), (given.velocities, model.velocities),
        (given.offsets, model.offsets))))


def feel_of(engine: Engine, perf: Performance, bars: int) -> np.ndarray:
    """(1, z_size): the mean latent (the encoder's mean) of the phrases of a recording that
    have a note: the feel `--like` gives every phrase. TaskError for a model without an
    encoder."""
    if not engine.has_encoder:
        raise TaskError(f"{engine.path}: this model has no encoder beside it "
                        f"({engine.path.stem}.encoder.onnx), so it cannot read a feel")
    ref = phrases(perf, engine.spec, bars)
    active = np.flatnonzero(ref.hits.reshape(len(ref), -1).any(axis=1))
    mu, _ = engine.encode(ref[active])
    return mu.mean(axis=0, keepdims=True).astype(np.float32)


def transform_phrases(engine: Engine, given: Patterns, amount: float = 1.0,
                      temperature: float = 1.0, seed: int | None = None,
                      feel: np.ndarray | None = None) -> Patterns:
    """Every phrase with a note through the task model in one batch; silent phrases stay
    silent. One z is shared by all phrases (the same drummer throughout): `feel` (1, z_size)
    when given (see feel_of), else one from the prior."""
    spec = engine.spec
    out = Patterns.empty(len(given), spec)
    active = np.flatnonzero(given.hits.reshape(len(given), -1).any(axis=1))
    if active.size == 0:
        return out
    rng = np.random.default_rng(seed)
    z = feel if feel is not None else engine.feel_latents(1, temperature, rng)
    z = np.repeat(z, active.size, axis=0)
    # The engine's noise gets its own seed from the same generator: one --seed fixes both.
    noise_seed = None if seed is None else int(rng.integers(2 ** 63))
    chosen = Patterns(given.hits[active], given.velocities[active], given.offsets[active])
    made = engine.transform(chosen, temperature=temperature, seed=noise_seed, z=z)
    if spec.task == "humanize":
        made = blend_humanized(chosen, made, amount)
    else:
        made = keep_given_voices(spec.task, spec, chosen, made)
    for name in ("hits", "velocities", "offsets"):
        getattr(out, name)[active] = getattr(made, name)
    return out


def not_a_humanizer(engine: Engine) -> str:
    s = engine.spec
    kind = f"a {s.task} model" if s.task else f"a {s.kind} model"
    return (f"{engine.path}: {kind}, not a humanize model; --humanize takes a humanize model "
            f"(e.g. the bundled humanize)")


def check_humanizer(humanizer: Engine, spec: ModelSpec, what: str = "the phrase") -> None:
    """Refuse (one line) a humanizer that cannot play `spec`'s patterns: not a humanize model,
    other voices or bar grid, or a phrase that is not a whole number of its windows."""
    hs = humanizer.spec
    if hs.task != "humanize":
        raise TaskError(not_a_humanizer(humanizer))
    if tuple(hs.drum_names) != tuple(spec.drum_names):
        raise TaskError(f"{humanizer.path}: the humanize model's voices "
                        f"({', '.join(hs.drum_names)}) differ from the pattern's "
                        f"({', '.join(spec.drum_names)})")
    if (hs.steps_per_bar, hs.beats_per_bar) != (spec.steps_per_bar, spec.beats_per_bar):
        raise TaskError(f"{humanizer.path}: the humanize model's bar grid ({hs.steps_per_bar} "
                        f"steps, {hs.beats_per_bar}/4) differs from the pattern's "
                        f"({spec.steps_per_bar} steps, {spec.beats_per_bar}/4)")
    if spec.steps % hs.steps:
        raise TaskError(f"{what} is {spec.bars} bars, not a whole number of the humanize "
                        f"model's {hs.bars}-bar windows")


def groove_patterns(humanizer: Engine, patterns: Patterns, temperature: float = 1.0,
                    seed: int | None = None) -> Patterns:
    """Quantized patterns (N, S, C), S a multiple of the humanize model's window, played by
    the humanize model window by window: the same hits, the model's velocity and timing
    (Magenta Studio's generate-then-groove chain). One latent per pattern, shared by all its
    windows, so a long phrase is played by one drummer; silent windows stay silent. The same
    seed gives the same performance."""
    hs = humanizer.spec
    n, steps = len(patterns), patterns.hits.shape[1]
    if hs.task != "humanize":
        raise TaskError(not_a_humanizer(humanizer))
    if patterns.hits.ndim != 3 or patterns.hits.shape[2] != hs.n_drums or steps % hs.steps:
        raise TaskError(f"patterns of {steps} steps x {patterns.hits.shape[-1]} voices are not "
                        f"whole {hs.bars}-bar windows of the humanize model's "
                        f"{hs.n_drums} voices")
    if not math.isfinite(temperature) or temperature < 0:
        raise TaskError(f"temperature must be 0 or more, got {temperature:g}")
    per = steps // hs.steps
    windows = Patterns(*(a.reshape(n * per, hs.steps, hs.n_drums)
                         for a in (patterns.hits, patterns.velocities, patterns.offsets)))
    active = np.flatnonzero(windows.hits.reshape(len(windows), -1).any(axis=1))
    out = Patterns.empty(len(windows), hs)
    if active.size:
        rng = np.random.default_rng(seed)
        # One feel per pattern, drawn before the noise: the same seed, the same drummer.
        z = np.repeat(humanizer.feel_latents(n, temperature, rng), per, axis=0)[active]
        noise_seed = int(rng.integers(2 ** 63))
        chosen = Patterns(windows.hits[active], windows.velocities[active],
                          windows.offsets[active])
        made = humanizer.transform(chosen, temperature=temperature, seed=noise_seed, z=z)
        made = blend_humanized(chosen, made, 1.0)  # humanize never adds or drops a note
        for name in ("hits", "velocities", "offsets"):
            getattr(out, name)[active] = getattr(made, name)
    return Patterns(*(a.reshape(n, steps, hs.n_drums)
                      for a in (out.hits, out.velocities, out.offsets)))


def output_file(midi_in: Path, out_dir: Path, task: str) -> Path:
    """<input stem>.<task>.mid in out_dir, never the input itself."""
    path = output_path(out_dir, f"{midi_in.stem}.{task}.mid")
    if path.resolve() == midi_in.resolve():
        raise TaskError(f"{path}: would overwrite the input; choose another --out folder")
    return path


def check_task(engine: Engine, task: str | None) -> str:
    """The engine's task, refused with one line when it is not a task model or not `task`."""
    found = engine.spec.task
    if not found:
        raise TaskError(f"{engine.path}: a sampling GrooVAE (kind {engine.spec.kind}), not a "
                        f"{task or 'task'} model; give a {task or 'humanize, drumify or infill'} "
                        f"model (e.g. --model {task or 'humanize'})")
    if task is not None and found != task:
        raise TaskError(f"{engine.path}: a {found} model, not a {task} model; use "
                        f"groove-live {found}, or give a {task} model")
    if found not in TASKS:  # validated specs cannot get here; a spec built in code could
        raise TaskError(f"{engine.path}: unknown task {found!r}")
    return found


def transform_file(engine: Engine, midi_in: str | Path, out_dir: str | Path, *,
                   amount: float = 1.0, temperature: float = 1.0, seed: int | None = None,
                   png: bool = False, task: str | None = None, like: str | Path | None = None,
                   limits: ReadLimits = DEFAULT_LIMITS,
                   notice: Callable[[str], None] | None = None) -> Path:
    """`groove-live humanize | drumify | infill`: the whole file through the engine's task
    model, written atomically as <stem>.<task>.mid in out_dir at the input's length and
    tempo. task: the task the caller expects (None: whatever the model does). amount:
    humanize only, 0..1 (see blend_humanized). like: humanize only, a recording whose feel
    plays the file (see feel_of). notice: gets one-line remarks worth showing (notes the model
    has no voice for). Nothing is written when anything is refused."""
    midi_in, out_dir = Path(midi_in), Path(out_dir)
    task = check_task(engine, task)
    if not 0.0 <= amount <= 1.0 or not math.isfinite(amount):
        raise TaskError(f"amount must be between 0 and 1, got {amount:g}")
    if amount != 1.0 and task != "humanize":
        raise TaskError(f"amount is for humanize only; {task} takes the model's output as is")
    if like is not None and task != "humanize":
        raise TaskError(f"--like is for humanize only; {task} plays a feel of its own")
    if not math.isfinite(temperature) or temperature < 0:
        raise TaskError(f"temperature must be 0 or more, got {temperature:g}")
    if out_dir.exists() and out_dir.resolve() == midi_in.resolve():
        raise TaskError(f"{out_dir}: --out is the input file itself; give a folder")
    if png:
        check_png()
    spec = engine.spec
    perf = read_task_input(midi_in, spec, task, limits)
    if notice is not None:
        for line in _reading_notices(perf, task):
            notice(line)
    bars = file_bars(perf, spec, midi_in, limits)
    feel = None
    if like is not None:
        ref = read_task_input(like, spec, task, limits)
        feel = feel_of(engine, ref, file_bars(ref, spec, like, limits))
    given = phrases(perf, spec, bars)
    made = stitch(transform_phrases(engine, given, amount, temperature, seed, feel),
                  bars * spec.steps_per_bar)

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TaskError(f"{out_dir}: cannot create the output folder ({e.strerror})") from None
    path = output_file(midi_in, out_dir, task)
    try:
        with atomic_path(path) as tmp:
            write_pattern(tmp, made, spec, bpm=perf.bpm, name=path.stem)
    except OSError as e:
        raise TaskError(cannot_write(path, e)) from None
    if png:
        _write_png(stitch(given, bars * spec.steps_per_bar), made, spec, path, task)
    return path


def _reading_notices(perf: Performance, task: str) -> list[str]:
    """What reading the file onto the grid lost, said once rather than silently: notes on
    pitches no voice plays, and notes merged with a louder one of the same drum on the same
    step (a flam). Taps merge by design, so drumify says nothing about them."""
    lines = []
    if perf.n_unmapped:
        n = perf.n_unmapped
        lines.append(f"{n} note{'s' * (n != 1)} on pitches no drum voice plays "
                     f"{'was' if n == 1 else 'were'} left out")
    merged = perf.n_notes - int(perf.hits.sum())
    if merged and task != "drumify":
        lines.append(f"{merged} note{'s' * (merged != 1)} sharing a step with a louder note of "
                     f"the same drum {'was' if merged == 1 else 'were'} merged into it")
    return lines


def _write_png(given: Patterns, made: Patterns, spec: ModelSpec, path: Path, task: str) -> None:
    """Input above output, PNG_ROW_BARS bars a row, for the first PNG_BARS bars."""
    from .plot import PlotUnavailable, grid_png  # matplotlib only when drawing

    row = PNG_ROW_BARS * spec.steps_per_bar
    steps = min(given.steps, PNG_BARS * spec.steps_per_bar)
    items = []
    for lo in range(0, steps, row):
        hi = min(lo + row, steps)
        where = f"bars {lo // spec.steps_per_bar + 1}-{math.ceil(hi / spec.steps_per_bar)}"
        for label, p in (("input", given), (task, made)):
            items.append((f"{path.stem}  {label}  {where}",
                          Patterns(p.hits[:, lo:hi], p.velocities[:, lo:hi],
                                   p.offsets[:, lo:hi])))
    png_path = path.with_suffix(".png")
    try:
        grid_png(items, spec, png_path, columns=1)
    except PlotUnavailable as e:
        raise TaskError(str(e)) from None
    except OSError as e:
        raise TaskError(cannot_write(png_path, e)) from None
