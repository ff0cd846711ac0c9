"""The models shipped inside the package, and how a `--model NAME|PATH` argument finds its file.

A bundled model is a decoder `NAME.onnx` in groove_live/models/ (its encoder
`NAME.encoder.onnx` beside it is part of the same model, not a model of its own). A plain name
("humanize") means a bundled model; anything with a folder part or an .onnx ending is a path,
so a user's own export never shadows, and is never shadowed by, a bundled one.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .engine import ENCODER_SUFFIX, EngineError
from .spec import SpecError

MODELS_DIR = Path(__file__).resolve().parent / "models"
DEFAULT_MODEL = "groovae"  # the sampling GrooVAE: sample, info and serve
# interpolate's: of the bundled models, the one whose fitted endpoints reproduce hand-written
# beats best (docs/results.md, "Hand-written beats").
INTERPOLATE_MODEL = "cat_drums_2bar"
MODEL_SUFFIX = ".onnx"
# The names a groove-live release bundles, and what each is; an install may lack some (a slim
# build, a model not trained yet), so the lookup says so rather than "unknown".
KNOWN_MODELS = {
    "groovae": "GrooVAE sampling model with velocity and timing",
    "humanize": "GrooVAE humanize task",
    "drumify": "GrooVAE drumify task, Tap2Drum",
    "infill": "GrooVAE hi-hat infill task",
    "cat_drums_2bar": "MusicVAE categorical drums, 2 bars quantized",
    "hierdec_drums_16bar": "MusicVAE hierarchical drums, 16 bars quantized",
    "chorale_harmonizer": "JSB chorale harmonizer (alto, tenor, bass under a melody)",
}


def bundled_models(models_dir: Path | None = None) -> list[tuple[str, Path]]:
    """(name, decoder path) of every bundled model, sorted by name."""
    folder = MODELS_DIR if models_dir is None else models_dir
    found = []
    for path in folder.glob(f"*{MODEL_SUFFIX}"):
        if path.name.endswith(ENCODER_SUFFIX) or path.name.startswith(".") or not path.is_file():
            continue  # an encoder, or a hidden temp file left by an interrupted write
        found.append((path.name[:-len(MODEL_SUFFIX)], path))
    return sorted(found)


def is_model_name(text: str) -> bool:
    """A bundled model's name rather than a path: no folder part and no .onnx ending."""
    return bool(text) and "/" not in text and "\\" not in text \
        and not text.endswith(MODEL_SUFFIX) and text not in (".", "..")


def resolve_model(name_or_path: str | Path | None, default: str = DEFAULT_MODEL,
                  models_dir: Path | None = None) -> Path:
    """The decoder file a `--model` argument means: None is `default`, a plain name a bundled
    model, anything else a path. EngineError (one line) for an unknown name or a missing file;
    the name error lists what is bundled."""
    if name_or_path is None:
        name_or_path = default
    text = str(name_or_path)
    if not text:
        raise EngineError("--model is empty; give a bundled model's name or an .onnx file")
    if not isinstance(name_or_path, Path) and is_model_name(text):
        models = dict(bundled_models(models_dir))
        if text in models:
            return models[text]
        names = ", ".join(models) or "none (this install has no bundled model)"
        what = f"no bundled model {text!r}" + (
            f" ({KNOWN_MODELS[text]}: not in this install)" if text in KNOWN_MODELS else "")
        raise EngineError(f"{what}; bundled: {names} (or give the path of an .onnx file)")
    path = Path(text)
    if not path.is_file():
        raise EngineError(f"{path}: no such model file")
    return path


@dataclass(frozen=True)
class BundledInfo:
    """One line of `groove-live info`'s list: what a bundled model is, or why it cannot load."""

    name: str
    path: Path
    size_bytes: int  # decoder and encoder together: what the model costs on disk
    kind: str = ""
    task: str = ""
    bars: int = 0
    error: str = ""

    def line(self, name_width: int = 12) -> str:
        size = f"{self.size_bytes / 1e6:5.1f} MB"
        if self.error:
            return f"  {self.name:<{name_width}} {size}  unusable: {self.error}"
        what = f"{self.task} (conditioned)" if self.task else self.kind
        return f"  {self.name:<{name_width}} {size}  {what}, {self.bars} bars"

    def to_dict(self) -> dict:
        return {"name": self.name, "path": str(self.path), "size_bytes": self.size_bytes,
                "kind": self.kind, "task": self.task, "bars": self.bars, "error": self.error}


def bundled_info(models_dir: Path | None = None) -> list[BundledInfo]:
    """Every bundled model loaded and described; one that does not load is listed with its
    one-line reason rather than hiding the others."""
    from .engine import Engine, encoder_path_for

    items = []
    for name, path in bundled_models(models_dir):
        encoder = encoder_path_for(path)
        size = path.stat().st_size + (encoder.stat().st_size if encoder.is_file() else 0)
        try:
            spec = Engine.load(path).spec
        except (EngineError, SpecError) as e:
            items.append(BundledInfo(name, path, size, error=str(e)))
            continue
        items.append(BundledInfo(name, path, size, spec.kind, spec.task, spec.bars))
    return items
