"""Piano-roll PNGs of drum patterns (matplotlib, optional: imported only when drawing)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .atomic_io import atomic_path
from .pattern import Patterns
from .spec import ModelSpec

HIT_THRESHOLD = 0.5
# Marker area in points^2 at velocity 0 and 1; alpha likewise, so soft ghost notes stay visible.
MIN_SIZE, MAX_SIZE = 6.0, 60.0
MIN_ALPHA, MAX_ALPHA = 0.25, 1.0


class PlotUnavailable(ImportError):
    """matplotlib is not installed: it is optional for the runtime."""


def require_matplotlib() -> None:
    """Raise PlotUnavailable now, so a caller can fail before long work rather than after."""
    _figure(1.0, 1.0)


def _figure(width_in: float, height_in: float):
    # The object-oriented API with an explicit Agg canvas: no pyplot, so no global backend
    # switch in the caller's process, no figure registry to leak, and safe off the main thread.
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotUnavailable(
            "PNG plots need matplotlib: pip install 'groove-live[png]'") from None
    figure = Figure(figsize=(width_in, height_in), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _one(pattern: Patterns) -> Patterns:
    if len(pattern) != 1:
        raise ValueError(f"expected one pattern, got a batch of {len(pattern)}")
    return pattern


def _draw(ax, pattern: Patterns, spec: ModelSpec, title: str) -> None:
    """One piano roll on ax: drums on y, steps on x, bar and beat lines, onsets at step + offset."""
    pattern = _one(pattern)
    hits = pattern.hits[0] > HIT_THRESHOLD  # (T, C)
    steps, n_drums = hits.shape
    if n_drums != spec.n_drums:
        raise ValueError(f"pattern has {n_drums} drum classes, the spec {spec.n_drums}")
    step_index, drum_index = np.nonzero(hits)
    velocity = np.clip(pattern.velocities[0][hits], 0.0, 1.0)
    onset_step = step_index + pattern.offsets[0][hits]  # where the note really sounds

    # One collection per line style: a line artist per beat made big grids slow to draw.
    beats = np.arange(0, steps + 1, spec.steps_per_beat) - 0.5
    is_bar = (beats + 0.5) % spec.steps_per_bar == 0
    y_lo, y_hi = -0.6, n_drums - 0.4
    ax.hlines(np.arange(n_drums), -0.5, steps - 0.5, color="0.93", linewidth=0.6, zorder=0)
    ax.vlines(beats[~is_bar], y_lo, y_hi, color="0.85", linewidth=0.6, zorder=0)
    ax.vlines(beats[is_bar], y_lo, y_hi, color="0.35", linewidth=1.2, zorder=0)

    colors = np.zeros((len(velocity), 4))
    colors[:, :3] = (0.75, 0.2, 0.1)
    colors[:, 3] = MIN_ALPHA + (MAX_ALPHA - MIN_ALPHA) * velocity
    # Grid ticks under the notes show how far each onset is pushed or pulled.
    ax.scatter(step_index, drum_index, marker="|", s=50, color="0.55", linewidths=0.7, zorder=1)
    ax.scatter(onset_step, drum_index, s=MIN_SIZE + (MAX_SIZE - MIN_SIZE) * velocity,
               c=colors, edgecolors="none", zorder=2)

    ax.set_xlim(-0.5, steps - 0.5)
    ax.set_ylim(y_lo, y_hi)
    ax.set_yticks(range(n_drums))
    ax.set_yticklabels(spec.drum_names, fontsize=7)
    bar_starts = range(0, steps, spec.steps_per_bar)
    ax.set_xticks(bar_starts)
    ax.set_xticklabels([f"bar {1 + s // spec.steps_per_bar}" for s in bar_starts],
                       fontsize=7, ha="left")
    ax.tick_params(length=0)
    ax.set_xlabel(f"step ({spec.steps_per_bar} per bar); dot at step + offset, "
                  "size and opacity = velocity", fontsize=7)
    ax.set_title(title, fontsize=9, loc="left")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


# Panel margins in inches, fixed rather than tight_layout(): that measures every label by
# rendering the figure once more, which dominated the time of a 12-panel grid.
LEFT_IN, RIGHT_IN, TOP_IN, BOTTOM_IN = 0.95, 0.15, 0.3, 0.45


def _write(items: Sequence[tuple[str, Patterns]], spec: ModelSpec, path: str | Path,
           columns: int) -> Path:
    columns = max(1, min(columns, len(items)))
    rows = -(-len(items) // columns)
    cell_w = max(6.0, items[0][1].steps * 0.16)
    cell_h = 0.3 * spec.n_drums + 1.0
    width, height = columns * cell_w, rows * cell_h
    figure = _figure(width, height)
    for index, (title, pattern) in enumerate(items):
        row, col = divmod(index, columns)
        left = col * cell_w + LEFT_IN
        bottom = height - (row + 1) * cell_h + BOTTOM_IN
        ax = figure.add_axes((left / width, bottom / height,
                              (cell_w - LEFT_IN - RIGHT_IN) / width,
                              (cell_h - TOP_IN - BOTTOM_IN) / height))
        _draw(ax, pattern, spec, title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:  # a full disk leaves no torn PNG behind
        figure.savefig(tmp, format="png")
    return path


def piano_roll_png(pattern: Patterns, spec: ModelSpec, path: str | Path,
                   title: str = "") -> Path:
    """Write one pattern as a piano roll; marker size and opacity follow velocity."""
    return _write([(title, pattern)], spec, path, columns=1)


def grid_png(items: Sequence[tuple[str, Patterns]], spec: ModelSpec, path: str | Path,
             columns: int = 1) -> Path:
    """Write several (title, pattern) piano rolls in one figure, filled row by row.

    columns=2 with items [target, reconstruction, target, ...] puts each reconstruction
    beside its target.
    """
    if not items:
        raise ValueError("grid_png needs at least one pattern")
    return _write(items, spec, path, columns)
