"""JSB chorales (16th-note JSON) -> cached 2-bar windows of four voices, one file per split.

The source file maps "train" / "valid" / "test" to lists of chorales, each a list of 16th-note
steps [soprano, alto, tenor, bass] of MIDI pitches, -1 where a voice rests. The cache keeps
windows as int8 pitches (windows, WINDOW_STEPS, 4) - 1 byte per voice and step instead of 128
floats for a roll; groove_live.chorale.voices_to_roll makes the network's rolls per batch.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from groove_live.atomic_io import atomic_path
from groove_live.chorale import PITCHES, REST, STEPS_PER_BAR, VOICE_RANGES, VOICES, WINDOW_STEPS
from groove_live.spec import DEFAULT_SPEC
from groove_live.train.data import DataError

SPLITS = ("train", "validation", "test")
SOURCE_SPLITS = {"train": "train", "validation": "valid", "test": "test"}  # cache -> JSON key
CACHE_VERSION = 1
MAX_JSON_BYTES = 64 << 20  # the real file is 3 MB; a bigger one is not this dataset
MAX_CHORALE_STEPS = 10_000  # the longest real chorale is 640 steps
SHIFTS = tuple(range(-5, 7))  # -5..+6 semitones: each pitch class lands on every key once


class ChoraleDataError(DataError):
    """An unusable chorale file: the message names the file and the problem in one line. A
    DataError, so the commands' one-line path for bad data covers it."""


@dataclass(frozen=True)
class ChoraleOptions:
    window_steps: int = WINDOW_STEPS
    # One bar: every window starts on a bar line of the 16th grid (counted from the first step;
    # the file keeps no meter, so a chorale with a pickup is counted from the pickup), and each
    # step is seen in two windows, once in each half. A finer hop would only add near copies.
    hop_steps: int = STEPS_PER_BAR
    # Transpose training windows by every shift in SHIFTS that keeps each voice inside its Bach
    # range (VOICE_RANGES); validation and test are never transposed, so scores stay comparable.
    transpose: bool = True


@dataclass
class ChoraleSummary:
    counts: dict[str, int] = field(default_factory=dict)  # windows per split, augmented included
    original: dict[str, int] = field(default_factory=dict)  # windows per split before transposing
    chorales: dict[str, int] = field(default_factory=dict)
    too_short: dict[str, int] = field(default_factory=dict)  # chorales shorter than a window
    seconds: float = 0.0
    cached: bool = False

    def format(self) -> str:
        lines = ["split        chorales  windows  with transpositions"]
        for split in SPLITS:
            lines.append(f"{split:<12} {self.chorales.get(split, 0):>8}  "
                         f"{self.original.get(split, 0):>7}  {self.counts.get(split, 0):>19}")
        if short := sum(self.too_short.values()):
            lines.append(f"chorales shorter than a window (skipped): {short}")
        return "\n".join(lines)


def _where(path: Path, split: str, i: int | None = None) -> str:
    return f"{path}: {split!r}" + ("" if i is None else f" chorale {i}")


def load_chorales(json_path: str | Path) -> dict[str, list[np.ndarray]]:
    """The JSON file -> {cache split name: [(steps, 4) int16 pitches per chorale]}, every value
    checked: the file is untrusted, and a bad one fails here in one line, not in training."""
    path = Path(json_path)
    if not path.is_file():
        raise ChoraleDataError(f"{path}: no such file (pass Jsb16thSeparated.json)")
    if (size := path.stat().st_size) > MAX_JSON_BYTES:
        raise ChoraleDataError(f"{path}: {size} bytes is too big for a chorale file "
                               f"(limit {MAX_JSON_BYTES})")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ChoraleDataError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(raw, dict):
        raise ChoraleDataError(f"{path}: expected an object with "
                               f"{sorted(SOURCE_SPLITS.values())}, got {type(raw).__name__}")
    out: dict[str, list[np.ndarray]] = {}
    for split, key in SOURCE_SPLITS.items():
        if not isinstance(raw.get(key), list):
            raise ChoraleDataError(f"{path}: no list of chorales under {key!r}")
        out[split] = [_check_chorale(c, _where(path, key, i)) for i, c in enumerate(raw[key])]
    return out


def _check_chorale(chorale, where: str) -> np.ndarray:
    if not isinstance(chorale, list) or not chorale:
        raise ChoraleDataError(f"{where}: expected a non-empty list of steps")
    if len(chorale) > MAX_CHORALE_STEPS:
        raise ChoraleDataError(f"{where}: {len(chorale)} steps (limit {MAX_CHORALE_STEPS})")
    for s, step in enumerate(chorale):
        # bool is an int to Python but not a pitch; floats like 60.0 are refused too.
        if (not isinstance(step, list) or len(step) != len(VOICES)
                or not all(type(p) is int for p in step)):
            raise ChoraleDataError(f"{where} step {s}: expected {len(VOICES)} integer pitches "
                                   f"({', '.join(VOICES)}), got {str(step)[:60]}")
    a = np.array(chorale, np.int64)
    if a.min() < REST or a.max() >= PITCHES:
        s = int(np.nonzero((a < REST).any(1) | (a >= PITCHES).any(1))[0][0])
        raise ChoraleDataError(f"{where} step {s}: pitches must be MIDI 0..{PITCHES - 1} or "
                               f"{REST} for a rest, got {chorale[s]}")
    return a.astype(np.int16)


def windows(chorale: np.ndarray, window_steps: int = WINDOW_STEPS,
            hop_steps: int = STEPS_PER_BAR) -> np.ndarray:
    """(steps, 4) chorale -> (n, window_steps, 4) windows every hop_steps from step 0; a tail
    shorter than a window is dropped, and so is a window whose melody never sounds (nothing
    to condition on)."""
    if window_steps < 1 or hop_steps < 1:
        raise ValueError("window_steps and hop_steps must be positive")
    starts = np.arange(0, len(chorale) - window_steps + 1, hop_steps)
    if not len(starts):
        return np.zeros((0, window_steps, chorale.shape[1]), chorale.dtype)
    w = chorale[starts[:, None] + np.arange(window_steps)]
    return w[(w[:, :, 0] != REST).any(axis=1)]


def transpositions(windows_: np.ndarray,
                   shifts=SHIFTS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (window, shift) whose shifted voices all stay inside VOICE_RANGES ->
    (shifted windows, shift of each, index of the window it came from). Rests stay rests; a
    shift of 0 is the window itself."""
    w = np.asarray(windows_)
    sounding = w != REST
    big = np.iinfo(np.int16).max
    low = np.where(sounding, w, big).min(axis=1)  # (n, voices); big for a voice silent throughout
    high = np.where(sounding, w, -big).max(axis=1)
    lo_bound = np.array([VOICE_RANGES[v][0] for v in VOICES])
    hi_bound = np.array([VOICE_RANGES[v][1] for v in VOICES])
    out, shift_of, source = [], [], []
    for shift in shifts:
        fits = (((low + shift >= lo_bound) | (low == big))
                & ((high + shift <= hi_bound) | (high == -big)))
        keep = np.nonzero(fits.all(axis=1))[0]
        out.append(np.where(sounding[keep], w[keep] + shift, REST).astype(w.dtype))
        shift_of.append(np.full(len(keep), shift, np.int8))
        source.append(keep)
    return np.concatenate(out), np.concatenate(shift_of), np.concatenate(source)


def _cache_paths(out_dir: Path) -> dict[str, Path]:
    return {split: out_dir / f"{split}.npz" for split in SPLITS}


def _sha256(path: Path) -> str:
    """The source's digest: an edited or replaced file is a new cache (a 3 MB file, milliseconds)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _cached(out_dir: Path, options: ChoraleOptions, source: Path) -> dict | None:
    meta = out_dir / "dataset.json"
    if not meta.is_file() or not all(p.is_file() for p in _cache_paths(out_dir).values()):
        return None
    try:
        d = json.loads(meta.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    same = (isinstance(d, dict) and d.get("cache_version") == CACHE_VERSION
            and d.get("options") == asdict(options) and d.get("source_sha256") == _sha256(source))
    return d if same else None


def prepare_chorales(json_path: str | Path, out_dir: str | Path,
                     options: ChoraleOptions = ChoraleOptions(),
                     force: bool = False) -> ChoraleSummary:
    """Check the JSON, cut every chorale into windows, transpose the training ones when asked,
    and write out_dir/{train,validation,test}.npz and dataset.json; reuse a matching cache."""
    json_path, out_dir = Path(json_path), Path(out_dir)
    if not json_path.is_file():
        raise ChoraleDataError(f"{json_path}: no such file (pass Jsb16thSeparated.json)")
    if not force and (d := _cached(out_dir, options, json_path)):
        return ChoraleSummary(d["counts"], d["original"], d["chorales"], d["too_short"],
                              cached=True)
    t0 = time.perf_counter()
    data = load_chorales(json_path)
    s = ChoraleSummary()
    out_dir.mkdir(parents=True, exist_ok=True)
    for split, path in _cache_paths(out_dir).items():
        per_chorale = [windows(c, options.window_steps, options.hop_steps) for c in data[split]]
        s.chorales[split] = len(data[split])
        s.too_short[split] = sum(len(c) < options.window_steps for c in data[split])
        w = (np.concatenate(per_chorale) if per_chorale
             else np.zeros((0, options.window_steps, len(VOICES)), np.int16))
        chorale_of = np.repeat(np.arange(len(per_chorale)), [len(p) for p in per_chorale])
        s.original[split] = len(w)
        shift = np.zeros(len(w), np.int8)
        if options.transpose and split == "train":
            w, shift, source = transpositions(w)
            chorale_of = chorale_of[source]
        s.counts[split] = len(w)
        with atomic_path(path) as tmp:  # a run killed mid-write leaves the old cache or none
            np.savez_compressed(tmp, voices=w.astype(np.int8), shift=shift,
                                chorale=chorale_of.astype(np.int32))
    s.seconds = time.perf_counter() - t0
    from .config import CHORALE_2BAR  # the harmonizer's data shape, as fit checks it

    meta = {"cache_version": CACHE_VERSION, "options": asdict(options),
            "spec": DEFAULT_SPEC.replace(**CHORALE_2BAR).to_dict(),
            "description": describe(options), "voices": list(VOICES), "counts": s.counts,
            "original": s.original, "chorales": s.chorales, "too_short": s.too_short,
            "source": str(json_path.resolve()), "source_sha256": _sha256(json_path)}
    with atomic_path(out_dir / "dataset.json") as tmp:  # written last: it vouches for the splits
        tmp.write_text(json.dumps(meta, indent=1))
    return s


def describe(options: ChoraleOptions) -> str:
    """One line saying what a cache holds (a model's training_data)."""
    return (f"JSB chorales (16th-note grid, 4 voices), {options.window_steps}-step windows, "
            f"{options.hop_steps}-step hop"
            + (f", training windows transposed {SHIFTS[0]:+d}..{SHIFTS[-1]:+d} semitones within "
               "Bach's voice ranges" if options.transpose else ""))


def load_chorale_split(dataset_dir: str | Path, split: str) -> np.ndarray:
    """(windows, steps, 4) int64 voice pitches of one cached split (REST = -1)."""
    path = Path(dataset_dir) / f"{split}.npz"
    if split not in SPLITS:
        raise ChoraleDataError(f"unknown split {split!r}; one of {', '.join(SPLITS)}")
    if not path.is_file():
        raise ChoraleDataError(f"{path}: no cached split; prepare the chorales first")
    try:
        with np.load(path, allow_pickle=False) as d:
            v = d["voices"].astype(np.int64)
    except (OSError, ValueError, KeyError) as e:
        raise ChoraleDataError(f"{path}: not a chorale cache ({e})") from None
    if v.ndim != 3 or v.shape[2] != len(VOICES) or (v.size and (v.min() < REST)):
        raise ChoraleDataError(f"{path}: not a chorale cache (voices shape {v.shape})")
    return v
