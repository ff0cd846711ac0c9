"""Latent attribute vectors: steer a sampling GrooVAE toward a style, a density, a syncopation
or a fill by adding a direction to its latent (MusicVAE's method).

Each vector is the mean posterior latent (mu) of training windows with an attribute minus the
mean of those without (styles, fill) or of the top quartile of a measure minus its bottom
quartile (density, syncopation). `groove-export attributes` computes them and stores them as
JSON in the decoder's metadata under spec.ATTRIBUTES_KEY; this module reads them back. A model
file may come from anyone, so the JSON is checked before use: bounded size and count, plain
names, finite vectors of the model's z size and of bounded length. Pure numpy.

Scales (docs/attributes.md):
- style NAME with amount a: z + a * v_NAME (a = 1: the whole difference between that style's
  windows and the others'; a in [0, MAX_STYLE_AMOUNT]).
- density / syncopation x in [-1, 1]: z + x * v / 2. The vector runs from the bottom
  quartile's mean latent to the top quartile's, and a prior sample sits near the middle, so
  x = -1 aims at the bottom quartile's typical value and x = +1 at the top quartile's (both
  recorded in the file as `low` and `high`).
- fill: z + v_fill (the whole difference between fill windows and beat windows).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

from .spec import ATTRIBUTES_KEY, DRUM_NAME

ATTRIBUTES_VERSION = 1
# The attributes besides styles, and what each measures.
SCALED = {"density": "hits per bar (all voices)",
          "syncopation": "velocity-weighted off-beat share of kick and snare hits "
                         "(0 on the beat, 0.5 on the 8th off-beat, 1 on the other 16ths)"}
FILL = "fill"
# Bounds for untrusted files: far above a real model (GMD has 18 styles).
MAX_STYLES = 64
MAX_ATTRIBUTES_JSON_CHARS = 8 << 20
# A vector longer than this (in latent units; a prior sample's norm is ~sqrt(z_size)) would
# throw the decoder far outside anything it learned: refused as broken or hostile.
MAX_VECTOR_NORM = 1000.0
MAX_STYLE_AMOUNT = 3.0
# x = +-1 moves half the quartile-to-quartile vector (see the module docstring).
SCALED_AMOUNT_PER_UNIT = 0.5
HOW_TO_ADD = ("add them with `groove-export attributes --model MODEL.onnx --data CACHE_DIR "
              "--out NEW.onnx` (see docs/attributes.md)")


class AttributesError(ValueError):
    """Attribute vectors that cannot be used (malformed, unknown name, none stored): one line."""


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass(frozen=True)
class Scaled:
    """A measured attribute: its vector, and the measure's mean over the bottom and top
    quartiles of the training windows (what x = -1 and x = +1 aim at)."""

    vector: np.ndarray
    low: float
    high: float
    unit: str = ""


@dataclass(frozen=True)
class Attributes:
    """The attribute vectors of one model, each (z_size,) float32."""

    z_size: int
    styles: dict[str, np.ndarray] = field(default_factory=dict)
    scaled: dict[str, Scaled] = field(default_factory=dict)
    fill: np.ndarray | None = None
    # How many training windows each vector came from, for display.
    windows: dict[str, int] = field(default_factory=dict)
    source: str = ""

    @property
    def style_names(self) -> tuple[str, ...]:
        return tuple(sorted(self.styles))

    def names(self) -> dict[str, object]:
        """What /groove/info and `groove-live info` list."""
        return {"styles": self.style_names, "scaled": tuple(sorted(self.scaled)),
                "fill": self.fill is not None}

    def style_vector(self, name: str) -> np.ndarray:
        if name not in self.styles:
            known = ", ".join(self.style_names) or "none"
            raise AttributesError(f"unknown style {_show(name)}; this model knows: {known}")
        return self.styles[name]

    def scaled_vector(self, name: str) -> Scaled:
        if name not in self.scaled:
            raise AttributesError(f"this model has no {name} vector; {HOW_TO_ADD}")
        return self.scaled[name]

    def offset(self, style: str | None = None, style_amount: float = 1.0,
               density: float = 0.0, syncopation: float = 0.0,
               fill: bool = False) -> np.ndarray:
        """The (z_size,) latent offset of a steering request (see the module docstring for
        the scales). Unknown names and out-of-range amounts raise AttributesError."""
        out = np.zeros(self.z_size, np.float64)
        if style:
            check_amount(style_amount, "style amount", 0.0, MAX_STYLE_AMOUNT)
            out += style_amount * self.style_vector(style)
        for name, x in (("density", density), ("syncopation", syncopation)):
            check_amount(x, name, -1.0, 1.0)
            if x:
                out += x * SCALED_AMOUNT_PER_UNIT * self.scaled_vector(name).vector
        if fill:
            out += self.fill_vector()
        return out.astype(np.float32)

    def fill_vector(self) -> np.ndarray:
        if self.fill is None:
            raise AttributesError(f"this model has no fill vector; {HOW_TO_ADD}")
        return self.fill

    def expected(self, name: str, x: float) -> float:
        """The measure x aims at: low at -1, high at +1, linear between."""
        s = self.scaled_vector(name)
        return (s.low + s.high) / 2 + x * (s.high - s.low) / 2

    # --- serialisation -------------------------------------------------------------------
    def to_json(self) -> str:
        def vec(v: np.ndarray) -> list[float]:
            return [round(float(x), 6) for x in v]

        d = {"version": ATTRIBUTES_VERSION, "z_size": self.z_size, "source": self.source,
             "styles": {k: {"vector": vec(v), "windows": self.windows.get(f"style:{k}", 0)}
                        for k, v in sorted(self.styles.items())},
             "scaled": {k: {"vector": vec(s.vector), "low": s.low, "high": s.high,
                            "unit": s.unit, "windows": self.windows.get(k, 0)}
                        for k, s in sorted(self.scaled.items())}}
        if self.fill is not None:
            d["fill"] = {"vector": vec(self.fill), "windows": self.windows.get(FILL, 0)}
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: object, z_size: int) -> "Attributes":
        """Attributes from untrusted metadata text, for a model of latent size z_size."""
        if not isinstance(text, str):
            raise AttributesError("attribute vectors are not text")
        if len(text) > MAX_ATTRIBUTES_JSON_CHARS:
            raise AttributesError(f"attribute vectors are {len(text)} characters long (at "
                                  f"most {MAX_ATTRIBUTES_JSON_CHARS})")
        try:
            d = json.loads(text)
        except (ValueError, RecursionError):
            raise AttributesError("attribute vectors are not valid JSON") from None
        if not isinstance(d, dict):
            raise AttributesError("attribute vectors are not a JSON object")
        if d.get("version") != ATTRIBUTES_VERSION or isinstance(d.get("version"), bool):
            raise AttributesError(f"attribute vectors have version {_show(d.get('version'))}; "
                                  f"this groove-live reads version {ATTRIBUTES_VERSION}")
        if d.get("z_size") != z_size or isinstance(d.get("z_size"), bool):
            raise AttributesError(f"attribute vectors are for z size {_show(d.get('z_size'))}, "
                                  f"the model's is {z_size}")
        source = d.get("source", "")
        source = "".join(c for c in source if c.isprintable())[:200] \
            if isinstance(source, str) else ""
        styles_in = _object(d.get("styles", {}), "styles")
        if len(styles_in) > MAX_STYLES:
            raise AttributesError(f"attribute vectors name {len(styles_in)} styles (at most "
                                  f"{MAX_STYLES})")
        windows: dict[str, int] = {}
        styles = {}
        for name, entry in styles_in.items():
            _check_name(name)
            entry = _object(entry, f"style {name}")
            styles[name] = _vector(entry.get("vector"), z_size, f"style {name}")
            windows[f"style:{name}"] = _count(entry.get("windows", 0))
        scaled = {}
        for name, entry in _object(d.get("scaled", {}), "scaled").items():
            if name not in SCALED:
                continue  # a later version's attribute: not offered, not an error
            entry = _object(entry, name)
            low, high = (_finite(entry.get(k), f"{name} {k}") for k in ("low", "high"))
            scaled[name] = Scaled(_vector(entry.get("vector"), z_size, name), low, high,
                                  SCALED[name])
            windows[name] = _count(entry.get("windows", 0))
        fill = None
        if "fill" in d:
            entry = _object(d["fill"], "fill")
            fill = _vector(entry.get("vector"), z_size, "fill")
            windows[FILL] = _count(entry.get("windows", 0))
        return cls(z_size, styles, scaled, fill, windows, source)


def check_amount(x: object, name: str, lo: float, hi: float) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not lo <= x <= hi \
            or not math.isfinite(x):  # range first: a huge int never reaches isfinite
        raise AttributesError(f"{name} must be a number in [{lo:g}, {hi:g}], got {_show(x)}")
    return float(x)


def _check_name(name: object) -> None:
    # Style names travel in OSC replies and on command lines: short plain words only.
    if not isinstance(name, str) or DRUM_NAME.fullmatch(name) is None:
        raise AttributesError(f"attribute vectors name the style {_show(name)}, not a plain "
                              f"word (letters, digits, '.', '_', '-'; at most 32)")


def _object(value: object, what: str) -> dict:
    if not isinstance(value, dict):
        raise AttributesError(f"attribute vectors: {what} is {_show(value)}, not an object")
    return value


def _finite(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(float(value) if abs(value) < 1e300 else math.inf):
        raise AttributesError(f"attribute vectors: {what} is {_show(value)}, not a number")
    return float(value)


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _vector(value: object, z_size: int, what: str) -> np.ndarray:
    if not isinstance(value, list) or len(value) != z_size:
        n = len(value) if isinstance(value, list) else _show(value)
        raise AttributesError(f"attribute vectors: {what} has {n} values, the model's z size "
                              f"is {z_size}")
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value):
        raise AttributesError(f"attribute vectors: {what} holds something other than numbers")
    try:
        v = np.asarray(value, np.float64)
    except OverflowError:  # an int beyond float range (JSON ints are unbounded)
        v = np.array([np.inf])
    if not np.isfinite(v).all() or np.linalg.norm(v) > MAX_VECTOR_NORM:
        raise AttributesError(f"attribute vectors: {what} is not finite or longer than "
                              f"{MAX_VECTOR_NORM:g}")
    return v.astype(np.float32)


def read_attributes(metadata: dict[str, str], z_size: int) -> Attributes | None:
    """The attribute vectors a model file's metadata holds, None when it holds none."""
    if ATTRIBUTES_KEY not in metadata:
        return None
    return Attributes.from_json(metadata[ATTRIBUTES_KEY], z_size)


# --- the measures (shared with the export that computes the vectors and the benchmark) -----
# Off-beat weight per 16th position in a beat: the beat, the "e", the "and", the "a".
OFFBEAT_WEIGHTS = (0.0, 1.0, 0.5, 1.0)
SYNCOPATION_VOICES = ("kick", "snare")


def hits_per_bar(hits: np.ndarray, bars: int) -> np.ndarray:
    """(N,) mean hits per bar of (N, steps, voices) hits."""
    return hits.reshape(len(hits), -1).sum(axis=1) / bars


def syncopation(hits: np.ndarray, velocities: np.ndarray, drum_names: tuple[str, ...],
                steps_per_beat: int = 4) -> np.ndarray:
    """(N,) syncopation in [0, 1] of each pattern: the velocity-weighted mean off-beat weight
    (OFFBEAT_WEIGHTS) of its kick and snare hits; 0 for a pattern with none. Kick and snare
    only: hi-hats on every 16th are busy, not syncopated. Patterns whose beat is not 4
    sixteenths use the 8th weights (0 on the beat, 1 elsewhere)."""
    voices = [drum_names.index(v) for v in SYNCOPATION_VOICES if v in drum_names]
    if not voices:
        return np.zeros(len(hits))
    steps = hits.shape[1]
    if steps_per_beat == 4:
        w = np.asarray(OFFBEAT_WEIGHTS)[np.arange(steps) % 4]
    else:
        w = (np.arange(steps) % max(steps_per_beat, 1) != 0).astype(np.float64)
    weight = (hits[:, :, voices] * np.maximum(velocities[:, :, voices], 1e-3)).sum(axis=2)
    total = weight.sum(axis=1)
    return np.where(total > 0, (weight * w).sum(axis=1) / np.maximum(total, 1e-9), 0.0)
