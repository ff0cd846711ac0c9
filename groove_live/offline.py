"""Offline generation: prior samples and interpolations written as MIDI files (+ optional PNGs)."""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from .atomic_io import atomic_path
from .attributes import HOW_TO_ADD, AttributesError
from .engine import Engine
from .latent import random_latents
from .latent_fit import FIT_ROUNDS
from .limits import DEFAULT_TEMPERATURE, SEED_LIMIT
from .midi_io import DEFAULT_BPM, read_pattern, write_pattern
from .pattern import Patterns


# Keys the humanize pass's seed apart from the sampling seed it is derived from.
HUMANIZE_SEED_KEY = 1


class OfflineError(ValueError):
    """A request the user can fix (unwritable folder, no matplotlib for --png): one line."""


def output_name(model_name: str, mode: str, index: int, total: int, now: datetime) -> str:
    """Magenta music_vae_generate's naming, 1-based:
    groovae_sample_20240101_120000-001-of-008.mid"""
    return f"{model_name}_{mode}_{now:%Y%m%d_%H%M%S}-{index:03d}-of-{total:03d}.mid"


def output_path(out_dir: Path, name: str) -> Path:
    """out_dir / name, refused unless name is one plain component (no folder, not "..").

    The spec check already keeps model_name plain; this is the second lock, at the point of
    use, so a name built from a model file never writes outside out_dir.
    """
    if name in ("", ".", "..") or Path(name).name != name or "\\" in name \
            or not name.isprintable():
        raise OfflineError(f"{out_dir}: refusing to write {name!r}, which is not a plain file "
                           f"name inside that folder")
    return out_dir / name


def check_png() -> None:
    """Refuse --png before any work when matplotlib is missing (it is optional)."""
    if importlib.util.find_spec("matplotlib") is None:
        raise OfflineError("--png needs matplotlib: pip install 'groove-live[png]'")


def write_patterns(patterns: Patterns, engine: Engine, out_dir: str | Path, mode: str,
                   bpm: float, png: bool = False, title: str = "",
                   now: datetime | None = None) -> list[Path]:
    """One MIDI file per pattern (and a piano-roll PNG beside each with png=True)."""
    if png:
        check_png()
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OfflineError(f"{out_dir}: cannot create the output folder ({e.strerror})") from None
    now = now or datetime.now()
    spec = engine.spec
    paths = []
    for i in range(len(patterns)):
        path = output_path(out_dir, output_name(spec.model_name, mode, i + 1, len(patterns),
                                                now))
        try:
            with atomic_path(path) as tmp:
                write_pattern(tmp, patterns[i], spec, bpm=bpm, name=path.stem)
        except OSError as e:
            raise OfflineError(cannot_write(path, e)) from None
        if png:
            from .plot import PlotUnavailable, piano_roll_png  # matplotlib only when drawing
            png_path = path.with_suffix(".png")
            try:
                piano_roll_png(patterns[i], spec, png_path,
                               title=f"{path.stem}{'  ' + title if title else ''}")
            except PlotUnavailable as e:
                raise OfflineError(str(e)) from None
            except OSError as e:
                raise OfflineError(cannot_write(png_path, e)) from None
        paths.append(path)
    return paths


def cannot_write(path: Path, e: OSError) -> str:
    """The one line for an output file that could not be written (full disk, no permission)."""
    return f"{path}: cannot write ({e.strerror or type(e).__name__})"


@dataclass(frozen=True)
class Steer:
    """Attribute steering of `groove-live sample` (scales in groove_live/attributes.py)."""

    style: str | None = None
    style_amount: float = 1.0
    density: float = 0.0
    syncopation: float = 0.0
    fill: bool = False

    @property
    def active(self) -> bool:
        return bool(self.style) or bool(self.density) or bool(self.syncopation) or self.fill

    def title(self) -> str:
        parts = ([f"{self.style} x{self.style_amount:g}"] if self.style else []) \
            + [f"{k} {v:+g}" for k, v in (("density", self.density),
                                          ("syncopation", self.syncopation)) if v] \
            + (["fill"] if self.fill else [])
        return " ".join(parts)


def steering_offset(engine: Engine, steer: Steer) -> np.ndarray:
    """The latent offset of a steering request, or OfflineError saying what is missing."""
    attributes = engine.attributes
    if attributes is None:
        raise OfflineError(f"{engine.path}: this model has no attribute vectors; {HOW_TO_ADD}")
    try:
        return attributes.offset(steer.style, steer.style_amount, steer.density,
                                 steer.syncopation, steer.fill)
    except AttributesError as e:
        raise OfflineError(str(e)) from None


def steered_sample(engine: Engine, n: int, steer: Steer, temperature: float,
                   seed: int | None) -> Patterns:
    """n prior samples with every z moved by the steering offset. The seed fixes z and the
    noise (drawn after z from the same generator), so the same seed gives the same patterns
    and the same grooves under different steering."""
    offset = steering_offset(engine, steer)
    rng = np.random.default_rng(seed)
    z = random_latents(n, engine.spec.z_size, rng) + offset
    return engine.decode(z, temperature=temperature, seed=int(rng.integers(SEED_LIMIT)))


def sample_files(engine: Engine, n: int, out_dir: str | Path,
                 temperature: float = DEFAULT_TEMPERATURE, bpm: float = DEFAULT_BPM,
                 seed: int | None = None, png: bool = False, now: datetime | None = None,
                 steer: Steer | None = None, humanizer: Engine | None = None) -> list[Path]:
    """`groove-live sample`: n prior samples as MIDI files (steered when `steer` is active).
    humanizer: a humanize model that plays each sample (quantized or not) with its velocity
    and timing, window by window (groove_live.tasks.groove_patterns): Magenta Studio's
    generate-then-groove chain for the quantized MusicVAE drum models."""
    if humanizer is not None:
        from .tasks import check_humanizer  # tasks imports this module

        check_humanizer(humanizer, engine.spec, f"{engine.path}'s phrase")  # before any work
    if steer is not None and steer.active:
        patterns = steered_sample(engine, n, steer, temperature, seed)
        title = f"T={temperature:g} {steer.title()}"
    else:
        patterns = engine.sample(n, temperature=temperature, seed=seed)
        title = f"T={temperature:g}"
    if humanizer is not None:
        from .tasks import groove_patterns

        # Its own seed, fixed by --seed too: the same seed gives the same performance.
        groove_seed = None if seed is None else int(
            np.random.default_rng([seed, HUMANIZE_SEED_KEY]).integers(SEED_LIMIT))
        patterns = groove_patterns(humanizer, patterns, temperature, groove_seed)
        title += " humanized"
    return write_patterns(patterns, engine, out_dir, "sample", bpm, png, title=title, now=now)


def interpolate_files(engine: Engine, start: str | Path, end: str | Path, steps: int,
                      out_dir: str | Path, temperature: float = DEFAULT_TEMPERATURE,
                      bpm: float | None = None,
                      seed: int | None = None, png: bool = False, bar: int | None = None,
                      now: datetime | None = None, fit_rounds: int = FIT_ROUNDS) -> list[Path]:
    """`groove-live interpolate`: a window of each of two MIDI files and `steps` patterns
    between them (the ends are the model's closest decodes of the two windows, see
    Engine.interpolate). bar: the 0-based bar of each file where its window starts (None:
    read_pattern's default). bpm None: the start file's tempo."""
    if bar is not None and bar < 0:
        raise OfflineError(f"bar must be 0 or more, got {bar}")
    where = {} if bar is None else {"bar": bar}  # None: read_pattern's own default
    a, start_bpm = read_pattern(start, engine.spec, **where)
    b, _ = read_pattern(end, engine.spec, **where)
    patterns = engine.interpolate(a, b, steps, temperature=temperature, seed=seed,
                                  fit_rounds=fit_rounds)
    return write_patterns(patterns, engine, out_dir, "interpolate", bpm or start_bpm, png,
                          title=f"T={temperature:g}", now=now)
