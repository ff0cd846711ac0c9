"""`groove-export attributes`: latent attribute vectors of an exported sampling GrooVAE, from
its training windows, stored in its decoder's metadata.

Torch-free: the windows are encoded with the model's own ONNX encoder (Engine.encode, the
posterior mean mu), so this works on any export, the bundled int8 model included. MusicVAE's
method: a vector is the mean mu of windows with an attribute minus the mean mu of those
without. What each attribute is, and how the runtime scales it, is in
groove_live/attributes.py and docs/attributes.md.
"""
from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from groove_live import atomic_io
from groove_live.attributes import FILL, SCALED, Attributes, Scaled, hits_per_bar, syncopation
from groove_live.engine import Engine, EngineError, encoder_path_for
from groove_live.pattern import Patterns
from groove_live.spec import ATTRIBUTES_KEY, ENCODER_KEY, ModelSpec, SpecError

# GMD file names: <n>_<style>[-<substyle>]_<bpm>_<beat|fill>_<meter>.mid, e.g.
# drummer1/session1/1_funk_80_beat_4-4.mid or 3_funk-groove3_138_beat_4-4.mid.
GMD_NAME = re.compile(r"\d+_([A-Za-z0-9]+)(?:-[A-Za-z0-9-]+)?_\d+_(beat|fill)_\d+-\d+\.midi?")
# A style needs this many training windows (1-bar hop, so about this many bars of playing) for
# its mean to be more than a few sessions' quirks; GMD's rarest styles have fewer.
DEFAULT_MIN_WINDOWS = 64
# Fills of at least the model's length are rare in GMD (31 4-bar windows in train), so the
# fill vector has its own, lower floor.
MIN_FILL_WINDOWS = 16
ENCODE_BATCH = 512
TRAIN_SPLIT = "train"


class AttributesExportError(ValueError):
    """A request the user can fix (no cache, a task model, a cache of another shape): one line."""


def window_labels(sources) -> tuple[list[str], np.ndarray]:
    """(style per window, "" when the name says none; is_fill per window) from GMD paths."""
    styles, fills = [], []
    for source in sources:
        m = GMD_NAME.fullmatch(Path(str(source)).name)
        styles.append(m.group(1).lower() if m else "")
        fills.append(bool(m) and m.group(2) == "fill")
    return styles, np.asarray(fills, bool)


def load_windows(data_dir: str | Path, spec: ModelSpec,
                 split: str = TRAIN_SPLIT) -> tuple[Patterns, np.ndarray]:
    """(windows, source path per window) of a `groove-train prepare` cache, refused unless its
    windows have the model's shape."""
    data_dir = Path(data_dir)
    meta, path = data_dir / "dataset.json", data_dir / f"{split}.npz"
    if not meta.is_file() or not path.is_file():
        raise AttributesExportError(f"{data_dir}: no {split} split of a prepared cache here "
                                    f"(make one with `groove-train prepare --data GMD --out "
                                    f"{data_dir}` at the model's bars)")
    try:
        cache_spec = ModelSpec.from_dict(json.loads(meta.read_text()).get("spec"))
    except (OSError, ValueError, SpecError, AttributeError) as e:
        raise AttributesExportError(f"{meta}: unreadable ({e})") from None
    mismatch = spec.window_spec().data_shape_mismatch(cache_spec)
    if mismatch:
        field, theirs, ours = mismatch
        raise AttributesExportError(f"{data_dir}: its windows have {field} {theirs}, the model "
                                    f"reads {ours} (prepare a cache with the model's bars)")
    with np.load(path) as d:
        if "source" not in d:
            raise AttributesExportError(f"{path}: stores no source file per window; prepare "
                                        f"the cache again with this groove-live")
        patterns = Patterns(d["hits"].astype(np.float32),
                            d["midi_velocities"].astype(np.float32) / 127.0, d["offsets"])
        return patterns, d["source"]


def encode_all(engine: Engine, patterns: Patterns, batch: int = ENCODE_BATCH) -> np.ndarray:
    """(N, z_size) posterior means, float64 for the averaging."""
    return np.concatenate([engine.encode(patterns[i:i + batch])[0]
                           for i in range(0, len(patterns), batch)]).astype(np.float64)


def _quartile_vector(mu: np.ndarray, measure: np.ndarray, unit: str) -> tuple[Scaled, int]:
    """Top quartile's mean mu minus the bottom quartile's, and each quartile's mean measure."""
    lo_cut, hi_cut = np.quantile(measure, [0.25, 0.75])
    low, high = measure <= lo_cut, measure >= hi_cut
    if not low.any() or not high.any() or lo_cut == hi_cut:
        raise AttributesExportError(f"the windows do not vary in {unit}: no quartiles to "
                                    f"compare")
    vector = (mu[high].mean(0) - mu[low].mean(0)).astype(np.float32)
    return Scaled(vector, float(measure[low].mean()), float(measure[high].mean()), unit), \
        int(low.sum() + high.sum())


def compute_attributes(mu: np.ndarray, patterns: Patterns, sources, spec: ModelSpec,
                       min_windows: int = DEFAULT_MIN_WINDOWS, source: str = "") -> Attributes:
    """The attribute vectors from encoded windows (mu (N, z)) and their patterns and sources."""
    styles, is_fill = window_labels(sources)
    counts = Counter(s for s in styles if s)
    style_of = np.asarray(styles)
    vectors, windows = {}, {}
    for name, n in sorted(counts.items()):
        if n < min_windows or n == len(styles):
            continue
        inside = style_of == name
        vectors[name] = (mu[inside].mean(0) - mu[~inside].mean(0)).astype(np.float32)
        windows[f"style:{name}"] = int(n)
    measures = {"density": hits_per_bar(patterns.hits, spec.bars),
                "syncopation": syncopation(patterns.hits, patterns.velocities, spec.drum_names,
                                           spec.steps_per_beat)}
    scaled = {}
    for name, measure in measures.items():
        scaled[name], windows[name] = _quartile_vector(mu, measure, SCALED[name])
    fill = None
    if is_fill.sum() >= MIN_FILL_WINDOWS and (~is_fill).any():
        fill = (mu[is_fill].mean(0) - mu[~is_fill].mean(0)).astype(np.float32)
        windows[FILL] = int(is_fill.sum())
    return Attributes(spec.z_size, vectors, scaled, fill, windows, source)


def write_with_attributes(model_path: Path, encoder_path: Path, out_path: Path,
                          attributes: Attributes) -> Path:
    """The decoder at out_path with the vectors in its metadata (atomic); when out_path is
    another file, its encoder is copied beside it as OUT.encoder.onnx."""
    model = onnx.load(str(model_path))
    props = {p.key: p.value for p in model.metadata_props}
    props[ATTRIBUTES_KEY] = attributes.to_json()
    same = out_path.resolve() == model_path.resolve()
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        if not same:
            encoder_out = encoder_path_for(out_path)
            props[ENCODER_KEY] = encoder_out.name
            with atomic_io.atomic_path(encoder_out) as tmp:
                shutil.copyfile(encoder_path, tmp)
        del model.metadata_props[:]
        onnx.helper.set_model_props(model, props)
        with atomic_io.atomic_path(out_path) as tmp:
            onnx.save(model, str(tmp))
    except OSError as e:
        raise AttributesExportError(f"{out_path}: cannot write ({e.strerror or e})") from None
    return out_path


def add_attributes(model_path: str | Path, data_dir: str | Path,
                   out_path: str | Path | None = None,
                   min_windows: int = DEFAULT_MIN_WINDOWS,
                   log: Callable[[str], None] = lambda line: None) -> tuple[Path, Attributes]:
    """`groove-export attributes`: compute, store, and read back through the engine."""
    model_path = Path(model_path)
    out_path = model_path if out_path is None else Path(out_path)
    try:
        engine = Engine.load(model_path)
    except (EngineError, SpecError) as e:
        raise AttributesExportError(str(e)) from None
    if engine.spec.kind == "pitched":
        raise AttributesExportError(f"{model_path}: {engine.what}; attribute vectors steer a "
                                    f"sampling GrooVAE (e.g. the bundled groovae)")
    if engine.task:
        raise AttributesExportError(f"{model_path}: a {engine.task} model; attribute vectors "
                                    f"steer a sampling GrooVAE (e.g. the bundled groovae)")
    if not engine.has_encoder:
        raise AttributesExportError(f"{model_path}: no encoder beside it "
                                    f"({encoder_path_for(model_path).name}); the windows are "
                                    f"encoded with it")
    patterns, sources = load_windows(data_dir, engine.spec)
    log(f"encoding {len(patterns)} training windows of {Path(data_dir)}")
    mu = encode_all(engine, patterns)
    attributes = compute_attributes(mu, patterns, sources, engine.spec, min_windows,
                                    source=f"{Path(data_dir).name} {TRAIN_SPLIT} split, "
                                           f"{len(patterns)} windows")
    for line in summary(attributes):
        log(line)
    write_with_attributes(model_path, engine.encoder_path, out_path, attributes)
    try:
        check = Engine.load(out_path).attributes
    except (EngineError, SpecError, ValueError) as e:
        raise AttributesExportError(f"{out_path}: written but does not read back ({e})") \
            from None
    if check is None or check.style_names != attributes.style_names:
        raise AttributesExportError(f"{out_path}: written but its vectors do not read back")
    return out_path, attributes


def summary(attributes: Attributes) -> list[str]:
    """What was computed, for the log."""
    w = attributes.windows
    lines = [f"styles ({len(attributes.styles)}): " + ", ".join(
        f"{name} ({w.get(f'style:{name}', 0)})" for name in attributes.style_names)]
    for name, s in sorted(attributes.scaled.items()):
        lines.append(f"{name}: bottom quartile {s.low:.3f}, top quartile {s.high:.3f} "
                     f"({s.unit}); |v| {np.linalg.norm(s.vector):.2f}")
    if attributes.fill is not None:
        lines.append(f"fill: {w.get(FILL, 0)} fill windows; |v| "
                     f"{np.linalg.norm(attributes.fill):.2f}")
    else:
        lines.append(f"fill: fewer than {MIN_FILL_WINDOWS} fill windows, no fill vector")
    return lines
