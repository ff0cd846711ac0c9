"""A folder of MIDI grooves the live server can load, morph toward and save into (--library).

`/groove/load NAME` plays NAME.mid (encoded with the model's encoder) from the next bar or
phrase, `/groove/morph NAME bars` slerps from the playing latent to it, `/groove/save NAME`
writes the phrase playing now to NAME.mid. Names are plain names (letters, digits, . _ -),
never paths, so a request can only reach files directly inside the folder. The OSC thread only
checks the name; reading, encoding and writing run on the worker thread (Worker.submit of a
CallRequest), and a file that cannot be read or written is answered later with one
/groove/error while the music plays on. Saving never replaces a file: a live slip must not
destroy a groove kept earlier, so an existing name is refused and another must be chosen.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import atomic_io
from ..midi_io import read_pattern, write_pattern
from ..pattern import Patterns
from ..spec import ModelSpec, is_plain_name
from .osc_wire import encode_message
from .planner import Interpolate, Sample
from .worker import CallRequest

MIDI_SUFFIX = ".mid"
NO_LIBRARY = "no library folder: start serve with --library DIR to load, morph and save grooves"


class LibraryError(ValueError):
    """A request refused before it reaches the worker: one line."""


def phrase_patterns(bars: tuple, spec: ModelSpec) -> Patterns:
    """Per-bar hit tuples (a planned phrase) as one pattern of spec.bars bars; a shorter
    phrase (a task model's 2 bars) repeats, as it plays."""
    p = Patterns.empty(1, spec)
    for k in range(spec.bars):
        lo = k * spec.steps_per_bar
        for h in bars[k % len(bars)]:
            p.hits[0, lo + h.step, h.drum] = 1.0
            p.velocities[0, lo + h.step, h.drum] = h.velocity
            p.offsets[0, lo + h.step, h.drum] = h.offset
    return p


class Library:
    def __init__(self, folder: str | Path | None, engine: Any, worker: Any,
                 bpm: Callable[[], float], send: Callable[[bytes, Any], None] | None = None):
        self.folder = Path(folder) if folder is not None else None
        self.engine = engine
        self.worker = worker
        self.bpm = bpm  # the tempo playing now, written into saved files
        self.send = send  # (reply bytes, sender) for errors found on the worker
        self.loads = 0
        self.saves = 0
        self.errors = 0

    # --- the OSC thread: check and hand over ---------------------------------------------
    def path(self, name: object) -> Path:
        """The file a name stands for, or LibraryError. NAME and NAME.mid name the same file."""
        if self.folder is None:
            raise LibraryError(NO_LIBRARY)
        if not is_plain_name(name):
            raise LibraryError(f"{str(name)[:60]!r} is not a plain name (letters, digits, "
                               ". _ - ; no folders)")
        stem = name[:-len(MIDI_SUFFIX)] if name.lower().endswith(MIDI_SUFFIX) else name
        if not stem:
            raise LibraryError("the name is empty")
        return self.folder / (stem + MIDI_SUFFIX)

    def load(self, name: str, sender=None) -> None:
        path = self.path(name)
        self._submit("/groove/load", lambda: Sample(self._encode(path), self.worker.new_seed()),
                     f"load {path.name}", sender)

    def morph(self, name: str, bars: int, sender=None) -> None:
        path = self.path(name)
        self._submit("/groove/morph", lambda: Interpolate(self._encode(path), bars),
                     f"morph to {path.name}", sender)

    def save(self, name: str, sender=None) -> None:
        path = self.path(name)

        def write() -> None:
            self._write(path)
            return None
        self._submit("/groove/save", write, f"save {path.name}", sender)

    def _submit(self, address: str, make, source: str, sender) -> None:
        self.worker.submit(CallRequest(make, source, lambda reason: self._later_error(
            address, reason, sender)))

    # --- the worker thread ---------------------------------------------------------------
    def _encode(self, path: Path) -> np.ndarray:
        if not getattr(self.engine, "has_encoder", False):
            raise LibraryError("this model has no encoder, so it cannot load grooves")
        if not path.is_file():
            raise LibraryError(f"no {path.name} in the library")
        pattern, _bpm = read_pattern(path, self.engine.spec)
        mu, _sigma = self.engine.encode(pattern)
        self.loads += 1
        return np.asarray(mu[0], np.float32)

    def _write(self, path: Path) -> None:
        if path.exists():
            raise LibraryError(f"{path.name} is already in the library; saving never replaces "
                               "a file, choose another name")
        pattern = phrase_patterns(self.worker.playing_phrase(), self.engine.spec)
        with atomic_io.atomic_path(path) as tmp:
            write_pattern(tmp, pattern, self.engine.spec, bpm=float(self.bpm()),
                          name=path.stem)
        self.saves += 1

    def _later_error(self, address: str, reason: str, sender) -> None:
        self.errors += 1
        reason = reason.replace("\n", " ")[:300]
        if sender is None or self.send is None:
            print(f"groove-live: {address}: {reason}", file=sys.stderr)
            return
        self.send(encode_message("/groove/error", [address, reason]), sender)

    def info(self) -> list[tuple[str, Any]]:
        return [("library", str(self.folder) if self.folder is not None else ""),
                ("library_loads", self.loads), ("library_saves", self.saves),
                ("library_errors", self.errors)]
