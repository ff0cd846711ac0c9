"""Offline generation: prior samples and interpolations written as MIDI files (+ optional PNGs)."""
from __future__ import annotations

import importlib.util
from datetime import datetime
from pathlib import Path

from .engine import Engine
from .midi_io import DEFAULT_BPM, read_pattern, write_pattern
from .pattern import Patterns


class OfflineError(ValueError):
    """A request the user can fix (unwritable folder, no matplotlib for --png): one line."""


def output_name(model_name: str, mode: str, index: int, total: int, now: datetime) -> str:
    """Magenta music_vae_generate's naming, 1-based:
    groovae_sample_20240101_120000-001-of-008.mid"""
    return f"{model_name}_{mode}_{now:%Y%m%d_%H%M%S}-{index:03d}-of-{total:03d}.mid"


def _check_png() -> None:
    if importlib.util.find_spec("matplotlib") is None:
        raise OfflineError("--png needs matplotlib: pip install 'groove-live[png]'")


def write_patterns(patterns: Patterns, engine: Engine, out_dir: str | Path, mode: str,
                   bpm: float, png: bool = False, title: str = "",
                   now: datetime | None = None) -> list[Path]:
    """One MIDI file per pattern (and a piano-roll PNG beside each with png=True)."""
    if png:
        _check_png()
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OfflineError(f"{out_dir}: cannot create the output folder ({e.strerror})") from None
    now = now or datetime.now()
    spec = engine.spec
    paths = []
    for i in range(len(patterns)):
        path = out_dir / output_name(spec.model_name, mode, i + 1, len(patterns), now)
        try:
            write_pattern(path, patterns[i], spec, bpm=bpm, name=path.stem)
            if png:
                from .plot import PlotUnavailable, piano_roll_png  # matplotlib only when drawing
                try:
                    piano_roll_png(patterns[i], spec, path.with_suffix(".png"),
                                   title=f"{path.stem}{'  ' + title if title else ''}")
                except PlotUnavailable as e:
                    raise OfflineError(str(e)) from None
        except OSError as e:
            raise OfflineError(f"{path}: cannot write ({e.strerror})") from None
        paths.append(path)
    return paths


def sample_files(engine: Engine, n: int, out_dir: str | Path, temperature: float = 0.5,
                 bpm: float = DEFAULT_BPM, seed: int | None = None, png: bool = False,
                 now: datetime | None = None) -> list[Path]:
    """`groove-live sample`: n prior samples as MIDI files."""
    patterns = engine.sample(n, temperature=temperature, seed=seed)
    return write_patterns(patterns, engine, out_dir, "sample", bpm, png,
                          title=f"T={temperature:g}", now=now)


def interpolate_files(engine: Engine, start: str | Path, end: str | Path, steps: int,
                      out_dir: str | Path, temperature: float = 0.5, bpm: float | None = None,
                      seed: int | None = None, png: bool = False,
                      now: datetime | None = None) -> list[Path]:
    """`groove-live interpolate`: the first window of two MIDI files and `steps` patterns
    between them (the ends are reconstructions). bpm None: the start file's tempo."""
    a, start_bpm = read_pattern(start, engine.spec)
    b, _ = read_pattern(end, engine.spec)
    patterns = engine.interpolate(a, b, steps, temperature=temperature, seed=seed)
    return write_patterns(patterns, engine, out_dir, "interpolate", bpm or start_bpm, png,
                          title=f"T={temperature:g}", now=now)
