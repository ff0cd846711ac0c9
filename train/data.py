"""Groove MIDI Dataset -> cached 4-bar window tensors, one compact file per split."""
from __future__ import annotations

import csv
import json
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from groove_live.midi_io import MidiReadError, read_performance, windows
from groove_live.pattern import Patterns
from groove_live.spec import ModelSpec

SPLITS = ("train", "validation", "test")
CACHE_VERSION = 1
# TFDS groove/{2,4}bar-midionly (all meters, 1-bar hop), for the summary's comparison.
TFDS_COUNTS = {2: {"train": 18163, "validation": 2252, "test": 2204},
               4: {"train": 17261, "validation": 2121, "test": 2033}}


class DataError(ValueError):
    """Unusable dataset input (missing info.csv, empty folder): one clear line."""


@dataclass(frozen=True)
class PrepareOptions:
    meters: tuple[str, ...] = ("4-4",)
    beat_types: tuple[str, ...] = ("beat", "fill")
    bars: int = 4
    hop_bars: int = 1
    steps_per_bar: int = 16


@dataclass
class PrepareSummary:
    counts: dict[str, int] = field(default_factory=dict)  # windows per split
    files: dict[str, int] = field(default_factory=dict)  # files used per split
    skipped: dict[str, list[str]] = field(default_factory=dict)  # reason -> files
    seconds: float = 0.0
    cached: bool = False
    bars: int = 4

    def format(self) -> str:
        tfds = TFDS_COUNTS.get(self.bars)
        lines = ["split        files  windows" + (f"  TFDS {self.bars}bar (all meters)" if tfds else "")]
        for split in SPLITS:
            lines.append(f"{split:<12} {self.files.get(split, 0):>5}  {self.counts.get(split, 0):>7}"
                         + (f"  {tfds[split]:>7}" if tfds else ""))
        n_skipped = sum(len(v) for v in self.skipped.values())
        lines.append(f"skipped files: {n_skipped}")
        for reason, files in sorted(self.skipped.items()):
            shown = ", ".join(files[:3]) + (", ..." if len(files) > 3 else "")
            lines.append(f"  {reason}: {len(files)} ({shown})")
        lines.append("(fewer windows than TFDS: TFDS keeps every meter, we keep "
                     "4/4 unless --meter says otherwise; see docs/data.md)")
        return "\n".join(lines)


def _read_index(data_dir: Path) -> list[dict]:
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: no such folder (pass the Groove MIDI Dataset with --data)")
    index = data_dir / "info.csv"
    if not index.is_file():
        raise DataError(f"{data_dir}: no info.csv here; is this the Groove MIDI Dataset folder?")
    with open(index, newline="") as f:
        rows = list(csv.DictReader(f))
    need = {"midi_filename", "split", "time_signature", "beat_type"}
    if not rows:
        raise DataError(f"{index}: lists no files")
    if missing := need - set(rows[0]):
        raise DataError(f"{index}: missing columns {sorted(missing)}")
    return rows


def _cache_paths(out_dir: Path) -> dict[str, Path]:
    return {split: out_dir / f"{split}.npz" for split in SPLITS}


def _cache_matches(out_dir: Path, options: PrepareOptions, spec: ModelSpec) -> bool:
    meta = out_dir / "dataset.json"
    if not meta.is_file() or not all(p.is_file() for p in _cache_paths(out_dir).values()):
        return False
    try:
        d = json.loads(meta.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    as_json = lambda x: json.loads(json.dumps(x))  # tuples were stored as lists
    return (d.get("cache_version") == CACHE_VERSION and d.get("options") == as_json(asdict(options))
            and d.get("spec") == as_json(spec.to_dict()))


def prepare(data_dir: str | Path, out_dir: str | Path, options: PrepareOptions = PrepareOptions(),
            force: bool = False, progress: bool = True) -> PrepareSummary:
    """Convert every listed MIDI file into windows; reuse the cache when options match."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    spec = ModelSpec(steps_per_bar=options.steps_per_bar, bars=options.bars)
    rows = _read_index(data_dir)
    if not force and _cache_matches(out_dir, options, spec):
        d = json.loads((out_dir / "dataset.json").read_text())
        return PrepareSummary(d["counts"], d["files"], d["skipped"], 0.0, cached=True,
                              bars=options.bars)

    t0 = time.perf_counter()
    per_split: dict[str, list[Patterns]] = defaultdict(list)
    bpms: dict[str, list[np.ndarray]] = defaultdict(list)
    sources: dict[str, list[str]] = defaultdict(list)
    skipped: dict[str, list[str]] = defaultdict(list)
    files = Counter()
    iterator = rows
    if progress:
        from tqdm import tqdm
        iterator = tqdm(rows, desc="converting MIDI", unit="file")
    for row in iterator:
        name = row["midi_filename"]
        split = row["split"]
        if split not in SPLITS:
            skipped[f"unknown split {split!r}"].append(name)
            continue
        if row["time_signature"] not in options.meters:
            skipped[f"meter {row['time_signature']} not selected"].append(name)
            continue
        if row["beat_type"] not in options.beat_types:
            skipped[f"{row['beat_type']} not selected"].append(name)
            continue
        try:
            perf = read_performance(data_dir / name, spec)
        except MidiReadError as e:  # one bad file never stops the rest
            skipped[f"unreadable MIDI: {e.reason}"].append(f"{name} ({str(e).split(': ', 1)[-1]})")
            continue
        if perf.n_notes == 0:
            skipped["no drum notes"].append(name)
            continue
        if f"{perf.time_signature[0]}-{perf.time_signature[1]}" not in options.meters:
            skipped["file meter differs from info.csv"].append(name)
            continue
        w = windows(perf, spec, hop_bars=options.hop_bars)
        if len(w) == 0:
            skipped[f"shorter than {options.bars} bars"].append(name)
            continue
        per_split[split].append(w)
        bpms[split].append(np.full(len(w), perf.bpm, np.float32))
        sources[split].extend([name] * len(w))
        files[split] += 1

    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, path in _cache_paths(out_dir).items():
        p = Patterns.concat(per_split[split]) if per_split[split] else Patterns.empty(0, spec)
        counts[split] = len(p)
        tmp = path.with_suffix(".tmp.npz")
        # Hits and velocities are exact as uint8 (velocity = midi_velocity / 127).
        np.savez_compressed(
            tmp, hits=p.hits.astype(np.uint8),
            midi_velocities=np.rint(p.velocities * 127).astype(np.uint8),
            offsets=p.offsets.astype(np.float32),
            bpm=np.concatenate(bpms[split]) if bpms[split] else np.zeros(0, np.float32),
            source=np.array(sources[split]))
        tmp.replace(path)
    summary = PrepareSummary(counts, dict(files), dict(skipped), time.perf_counter() - t0,
                             bars=options.bars)
    # The spec states the windows' shape (fit refuses a model of another); the description
    # becomes the model's training_data.
    meta = {"cache_version": CACHE_VERSION, "options": asdict(options), "spec": spec.to_dict(),
            "description": describe_options(asdict(options)), "counts": counts, "files": dict(files), "skipped": dict(skipped),
            "source": str(data_dir.resolve())}
    (out_dir / "dataset.json").write_text(json.dumps(meta, indent=1))
    return summary


def load_split(dataset_dir: str | Path, split: str) -> tuple[Patterns, np.ndarray]:
    """(patterns, bpm per window) of one cached split."""
    path = Path(dataset_dir) / f"{split}.npz"
    if not path.is_file():
        raise DataError(f"{path}: no cached split; run `groove-train prepare` first")
    with np.load(path) as d:
        p = Patterns(d["hits"].astype(np.float32), d["midi_velocities"].astype(np.float32) / 127.0,
                     d["offsets"])
        return p, d["bpm"].astype(np.float32)


def describe_options(options: dict) -> str:
    """One line saying what a cache holds, e.g. "Groove MIDI Dataset v1.0.0 (CC BY 4.0), 4/4
    beat+fill, 4-bar windows, 1-bar hop"."""
    meters = ", ".join(m.replace("-", "/") for m in options.get("meters", ()))
    return (f"Groove MIDI Dataset v1.0.0 (CC BY 4.0), {meters} "
            f"{'+'.join(options.get('beat_types', ()))}, {options.get('bars')}-bar windows, "
            f"{options.get('hop_bars')}-bar hop")


def load_dataset_info(dataset_dir: str | Path) -> tuple[ModelSpec, str]:
    """(spec of the cached windows, one-line description) from a cache's dataset.json."""
    path = Path(dataset_dir) / "dataset.json"
    if not path.is_file():
        raise DataError(f"{dataset_dir}: no dataset.json; is this a folder written by "
                        "`groove-train prepare`?")
    try:
        d = json.loads(path.read_text())
        spec = ModelSpec.from_dict(d["spec"])  # a schema 1 spec reads as kind "groovae"
        description = d.get("description") or describe_options(d["options"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        # SpecError and JSONDecodeError are ValueErrors
        raise DataError(f"{path}: not a groove-train data cache ({e})") from None
    return spec, description


def load_spec(dataset_dir: str | Path) -> ModelSpec:
    return load_dataset_info(dataset_dir)[0]
