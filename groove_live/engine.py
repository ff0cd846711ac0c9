"""The inference engine: a groove model's ONNX decoder (and encoder) run with onnxruntime alone.

Never imports torch. A model is `NAME.onnx` (the decoder, which names its encoder file in its
metadata, normally `NAME.encoder.onnx` beside it). Both carry the ModelSpec JSON under
`groove_live.spec.METADATA_KEY`; a file without it, with a schema this runtime does not
know, or of a model kind it cannot decode, is refused with one clear line (EngineError). Model
files may come from anyone, so every metadata entry is checked before use: the spec field by
field, the encoder name as a plain file name beside the decoder, the role and variant as known
words. Tensor names and shapes are the spec's (`ModelSpec.io_shapes`), never restated here.

Sampling models (`sample`, `decode`, `interpolate`) are a GrooVAE (kind "groovae") and
MusicVAE's drum models (kinds "categorical" and "hierarchical": one class out of 2^voices per
step, a quantized pattern out, velocity fixed and offsets 0). GrooVAE's task models (kind
"conditioned", `task` humanize / drumify / infill) `transform` a user's pattern into the
finished pattern. Each refuses the other's calls with one line saying which command fits.

A chorale harmonizer (kind "pitched") has a decoder only (a GAN has no encoder, and its file
names none): `accompany` writes its voices under users' melodies; every drum call refuses it
in one line, and it refuses them.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from .attributes import Attributes, AttributesError, read_attributes
from .chorale import REST, ChoraleError, check_melody, melody_roll, roll_to_voices
from .latent import random_latents, slerp_path
from .latent_fit import FIT_ROUNDS, fit_latents
from .limits import DEFAULT_TEMPERATURE, NOISE_EPS
from .ort import ort  # onnxruntime, telemetry off (see ort.py)
from .pattern import Patterns
from .spec import (CATEGORICAL_KINDS, ENCODER_KEY, EXPORT_KEY, METADATA_KEY,
                   PITCHED_DOWNSAMPLING, ROLE_KEY, ROLL_PITCHES, VARIANT_KEY, ModelSpec,
                   SpecError, Voice)
from .transforms import FIXED_VELOCITY, task_input

# The model shipped inside the package (written by `groove-export onnx`, see MODEL_CARD.md).
BUNDLED_MODEL_PATH = Path(__file__).resolve().parent / "models" / "groovae.onnx"
ENCODER_SUFFIX = ".encoder.onnx"
ROLES = ("decoder", "encoder")
# Metadata is untrusted: the encoder name must be a file beside the decoder, never a path, and
# the variant is a short word (it is printed and compared, never used as a path).
MAX_FILE_NAME_CHARS = 255
VARIANT_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,16}")

# A harmonizer's warm-up melody: one held C5, inside every soprano's range.
WARM_UP_PITCH = 72

PROVIDER_ALIASES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


class EngineError(RuntimeError):
    """A model that cannot be used (missing, corrupt, foreign, unknown schema): one clear line."""


def encoder_path_for(decoder_path: str | Path) -> Path:
    """Where a decoder's encoder lives by default: NAME.onnx -> NAME.encoder.onnx."""
    p = Path(decoder_path)
    stem = p.name[:-len(".onnx")] if p.name.endswith(".onnx") else p.name
    return p.with_name(stem + ENCODER_SUFFIX)


def _show(value: object) -> str:
    # repr() keeps a hostile value on one line; long ones are cut.
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _encoder_name_ok(name: str) -> bool:
    """A plain file name ending in .onnx: no folder part, not hidden (so never "." or ".."),
    nothing unprintable."""
    return (0 < len(name) <= MAX_FILE_NAME_CHARS and name.endswith(".onnx")
            and not name.startswith(".") and "/" not in name and "\\" not in name
            and name.isprintable())


def _encoder_candidate(path: Path, meta: dict[str, str]) -> Path:
    """The encoder file a decoder names (or the default name), refused unless it is beside it."""
    name = meta.get(ENCODER_KEY)
    if not name:
        return encoder_path_for(path)
    if not _encoder_name_ok(name):
        raise EngineError(f"{path}: its metadata names the encoder {_show(name)}, not a plain "
                          f".onnx file name beside it")
    return path.with_name(name)


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _resolve_providers(providers) -> list[str]:
    """Requested providers as onnxruntime names, CPU last as the fallback for unplaced nodes."""
    if providers is None:
        return ["CPUExecutionProvider"]
    if isinstance(providers, str):
        providers = [providers]
    names = [PROVIDER_ALIASES.get(p.lower(), p) for p in providers]
    available = ort.get_available_providers()
    for name in names:
        if name not in available:
            hint = (" (install onnxruntime-gpu instead of onnxruntime)"
                    if name.startswith("CUDA") else "")
            raise EngineError(f"execution provider {name} is not available in this onnxruntime; "
                              f"available: {', '.join(available)}{hint}")
    if "CPUExecutionProvider" not in names:
        names.append("CPUExecutionProvider")
    return names


def _session(path: Path, providers: list[str], intra_op_threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    # One thread by default: a 4-bar decode is a chain of small steps, where waking a thread
    # pool costs more than it saves, and the live server runs beside an audio host.
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # The decoder's step loop makes thousands of tiny allocations per call; plain malloc beat
    # the arena by ~7% at batch 1 (equal at batch 32) on the benchmark machine.
    options.enable_cpu_mem_arena = False
    options.log_severity_level = 3  # errors only: initializer-cleanup warnings are noise here
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as e:  # onnxruntime raises several pybind types for unreadable files
        raise EngineError(f"{path}: not a loadable ONNX model ({_first_line(e)})") from None


def _read_spec(session: ort.InferenceSession, path: Path, role: str) -> tuple[ModelSpec, dict]:
    meta = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in meta:
        raise EngineError(f"{path}: not a groove-live model (no '{METADATA_KEY}' metadata)")
    try:
        spec = ModelSpec.from_json(meta[METADATA_KEY])
    except SpecError as e:
        raise EngineError(f"{path}: {e}") from None
    found = meta.get(ROLE_KEY, "")
    if found not in ROLES:
        raise EngineError(f"{path}: has the unknown groove-live role {_show(found)}, not "
                          f"{role}")
    if found != role:
        raise EngineError(f"{path}: is a groove-live {found} file, not a {role}"
                          + (f"; load {path.name.replace(ENCODER_SUFFIX, '.onnx')} instead"
                             if found == "encoder" else ""))
    variant = meta.get(VARIANT_KEY)
    if variant is not None and VARIANT_PATTERN.fullmatch(variant) is None:
        raise EngineError(f"{path}: its metadata names the variant {_show(variant)}, not a "
                          f"short word")
    return spec, meta


def _check_io(session: ort.InferenceSession, path: Path, inputs: dict, outputs: dict) -> None:
    """Names and static dimensions of the graph against what the spec promises (None in a
    promised shape is the dynamic batch)."""
    for kind, args, expected in (("input", session.get_inputs(), inputs),
                                 ("output", session.get_outputs(), outputs)):
        found = {a.name: a.shape for a in args}
        for name, dims in expected.items():
            if name not in found:
                raise EngineError(f"{path}: the graph has no {kind} '{name}' that its spec names")
            shape = found[name]
            ok = len(shape) == len(dims) and all(
                d is None or s == d for s, d in zip(shape, dims))
            if not ok:
                raise EngineError(f"{path}: {kind} '{name}' has shape {shape}, the spec says "
                                  f"{['batch' if d is None else d for d in dims]}")


class Engine:
    """Sample, decode, encode and interpolate grooves. Thread-safe: onnxruntime sessions may be
    run concurrently and every call draws from its own random generator."""

    def __init__(self, decoder: ort.InferenceSession, encoder: ort.InferenceSession | None,
                 spec: ModelSpec, path: Path, encoder_path: Path | None,
                 metadata: dict[str, str]) -> None:
        self._decoder = decoder
        self._encoder = encoder
        self.spec = spec
        self.path = path
        self.encoder_path = encoder_path
        self.metadata = metadata
        self.providers: list[str] = decoder.get_providers()
        self._attributes: Attributes | None = None

    # --- loading ----------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path | None = None, providers=None,
             intra_op_threads: int = 1) -> "Engine":
        """Load a model (None: the bundled one), check it against its spec and warm it up.

        providers: None (CPU), or names/aliases such as ["cuda"] / ["CUDAExecutionProvider"];
        a provider that is asked for must be available and actually used, else EngineError.
        """
        bundled = path is None
        path = Path(path) if path is not None else BUNDLED_MODEL_PATH
        if not path.is_file():
            if bundled:
                raise EngineError(f"no bundled model at {path} (this install has no model); "
                                  "pass --model PATH")
            raise EngineError(f"{path}: no such model file")
        if intra_op_threads < 1:
            raise EngineError("intra_op_threads must be at least 1")
        names = _resolve_providers(providers)
        decoder = _session(path, names, intra_op_threads)
        spec, meta = _read_spec(decoder, path, "decoder")
        decode_path(spec, path)  # refuse a kind this runtime cannot decode before its shapes
        shapes = spec.io_shapes()
        _check_io(decoder, path, shapes["decoder_inputs"], shapes["decoder_outputs"])
        _confirm_providers(decoder, names, path)

        encoder, encoder_path = None, None
        # A kind whose spec names no encoder tensors has none: no file is looked for, so a
        # stray NAME.encoder.onnx beside a harmonizer is never opened.
        candidate = _encoder_candidate(path, meta) if spec.encoder_inputs else None
        if candidate is not None and candidate.is_file():
            encoder = _session(candidate, names, intra_op_threads)
            encoder_spec, _ = _read_spec(encoder, candidate, "encoder")
            if encoder_spec.to_dict() != spec.to_dict():
                raise EngineError(f"{candidate}: its spec differs from {path.name}'s; they are "
                                  "not from the same export")
            _check_io(encoder, candidate, shapes["encoder_inputs"], shapes["encoder_outputs"])
            encoder_path = candidate
        engine = cls(decoder, encoder, spec, path, encoder_path, dict(meta))
        try:  # untrusted like the spec: checked whole at load, refused with one line
            engine._attributes = read_attributes(meta, spec.z_size)
        except AttributesError as e:
            raise EngineError(f"{path}: {e}") from None
        engine._warm_up()
        return engine

    def _warm_up(self) -> None:
        # The first run allocates and plans; doing it here keeps it off the first live request.
        if self.spec.kind == "pitched":
            melody = np.full((1, self.spec.steps), WARM_UP_PITCH, np.int64)
            self.generate_rolls(self.latents(1, np.random.default_rng(0)),
                                melody_roll(melody)[..., 0])
            return
        if self.task:
            self.transform(Patterns.empty(1, self.spec), seed=0)
        else:
            self.sample(1, seed=0)
        if self._encoder is not None:
            self.encode(Patterns.empty(1, self.spec))

    @property
    def attributes(self) -> Attributes | None:
        """The latent attribute vectors stored in the decoder (styles, density, syncopation,
        fill; see groove_live/attributes.py), None when it has none."""
        return self._attributes

    @property
    def has_encoder(self) -> bool:
        return self._encoder is not None

    @property
    def task(self) -> str:
        """"" for a sampling GrooVAE, else the task model's task (humanize, drumify, infill)."""
        return self.spec.task

    @property
    def what(self) -> str:
        """The model in a few words, for messages: "a sampling GrooVAE", "a humanize model",
        "a hierarchical MusicVAE drum model (16 bars)"."""
        s = self.spec
        if s.kind == "pitched":
            return "a chorale harmonizer (kind pitched)"
        if s.task:
            return f"a {s.task} model"
        if s.kind in CATEGORICAL_KINDS:
            return f"a {s.kind} MusicVAE drum model ({s.bars} bars)"
        return "a sampling GrooVAE"

    def _refuse_task_model(self, call: str) -> None:
        """Sampling calls: refused for task models and harmonizers, naming what fits."""
        self._refuse_pitched(call)
        if self.task:
            raise EngineError(f"{self.path}: a {self.task} model, which transforms patterns "
                              f"rather than {call} them (use groove-live {self.task})")

    def _refuse_pitched(self, call: str) -> None:
        if self.spec.kind == "pitched":
            raise EngineError(f"{self.path}: {self.what}, which writes voices under a melody "
                              f"rather than {call} drum patterns (use groove-live accompany)")

    @property
    def variant(self) -> str:
        return self.metadata.get(VARIANT_KEY, "fp32")

    @property
    def export_info(self) -> dict[str, str]:
        """How the file was exported, for display only: a malformed entry reads as none, and
        each value as one printable line."""
        try:
            info = json.loads(self.metadata.get(EXPORT_KEY, "{}"))
        except (ValueError, RecursionError):  # ValueError: JSONDecodeError, huge ints
            return {}
        if not isinstance(info, dict):
            return {}
        return {str(k): "".join(c for c in str(v) if c.isprintable())[:200]
                for k, v in info.items()}

    # --- decoding ---------------------------------------------------------------------------
    def sample(self, n: int, temperature: float = DEFAULT_TEMPERATURE,
               seed: int | None = None) -> Patterns:
        """n patterns from the prior; the same seed gives the same patterns.

        z comes from the prior N(0, I), unscaled: for a sampling GrooVAE z is what makes a new
        groove, so the temperature acts on the decoding only (hits, velocity and timing
        noise) and temperature 0 is the most likely pattern of each z."""
        self._refuse_task_model("sampling")
        if n < 1:
            raise ValueError("n must be at least 1")
        rng = np.random.default_rng(seed)
        z = random_latents(n, self.spec.z_size, rng)
        return self._decode(z, temperature, rng)

    def decode(self, z: np.ndarray, temperature: float = DEFAULT_TEMPERATURE,
               seed: int | None = None) -> Patterns:
        """Patterns from latents z (B, z_size) or (z_size,); seed fixes the sampling noise."""
        self._refuse_task_model("decoding")
        return self._decode(self._latents(z), temperature, np.random.default_rng(seed))

    def noise(self, batch: int, rng: np.random.Generator | None
              ) -> tuple[np.ndarray, np.ndarray]:
        """The decoder's sampling noise: uniform (B, T, C) for hits, normal (B, T, 2C).

        A categorical kind draws one class per step by inverse CDF, so its hit noise is one
        uniform per step, shaped as the spec's io_shapes says, (B, T, 1); it has no velocity or
        timing to draw, so its (B, T, 2C) continuous noise, an input nothing in its graph reads,
        is zeros. rng None (a categorical kind only): zero hit noise too, for a decode at
        temperature 0, which ignores it."""
        spec = self.spec
        self._refuse_pitched("drawing noise for")
        shape = (batch, spec.steps, spec.n_drums)
        if spec.kind in CATEGORICAL_KINDS:
            hit_shape = spec.io_shapes(batch)["decoder_inputs"][spec.decoder_inputs[2]]
            cont_noise = np.zeros((*shape[:2], 2 * shape[2]), np.float32)
            if rng is None:
                return np.zeros(hit_shape, np.float32), cont_noise
            # [0, 1): the graph clamps the top itself (its inverse CDF needs u * total below
            # the total), so no clip pass here.
            return rng.random(hit_shape, dtype=np.float32), cont_noise
        hit_noise = rng.random(shape, dtype=np.float32)
        np.clip(hit_noise, NOISE_EPS, 1.0 - NOISE_EPS, out=hit_noise)
        cont_noise = rng.standard_normal((*shape[:2], 2 * shape[2]), dtype=np.float32)
        return hit_noise, cont_noise

    def decode_noise(self, z: np.ndarray, temperature, hit_noise: np.ndarray,
                     cont_noise: np.ndarray, control: np.ndarray | None = None) -> Patterns:
        """Decode with explicit noise (what export verification compares with torch).

        temperature: a float or one per pattern (B,); 0 means greedy hits. The noise is fed
        as given, exactly as the torch model takes it (a task model's graph scales it by the
        temperature itself; for a sampling GrooVAE see tempered_noise). control: a task
        model's input pattern in the flat layout (B, T, 3C), as `transform` makes it; None for
        a sampling GrooVAE.
        """
        self._refuse_pitched("decoding")
        z = self._latents(z)
        t = np.broadcast_to(np.asarray(temperature, np.float32), (z.shape[0],))
        if not np.all(np.isfinite(t)) or np.any(t < 0):
            raise ValueError(f"temperature must be finite and >= 0, got {temperature}")
        return DECODE_PATHS[self.spec.kind](self, z, t, hit_noise, cont_noise, control)

    def _feed(self, z: np.ndarray, t: np.ndarray, hit_noise: np.ndarray,
              cont_noise: np.ndarray) -> dict[str, np.ndarray]:
        """The decoder inputs every kind takes (z, temperature, noise), by the spec's names."""
        return dict(zip(self.spec.decoder_inputs, (
            z, np.ascontiguousarray(t), np.asarray(hit_noise, np.float32),
            np.asarray(cont_noise, np.float32))))

    def _decode_groovae(self, z: np.ndarray, t: np.ndarray, hit_noise: np.ndarray,
                        cont_noise: np.ndarray, control: np.ndarray | None) -> Patterns:
        """Kind "groovae": z, temperature and noise in; hits, velocities, offsets out. The
        noise goes in as given (see tempered_noise for how sampling scales it)."""
        if control is not None:
            raise EngineError(f"{self.path}: a sampling GrooVAE takes no control pattern")
        feed = self._feed(z, t, hit_noise, cont_noise)
        hits, velocities, offsets = self._decoder.run(list(self.spec.decoder_outputs), feed)
        return Patterns(hits, velocities, offsets)

    def _decode_conditioned(self, z: np.ndarray, t: np.ndarray, hit_noise: np.ndarray,
                            cont_noise: np.ndarray, control: np.ndarray | None) -> Patterns:
        """Kind "conditioned": z, temperature, noise and the task's input pattern (flat) in;
        the finished pattern out (the graph applies the task's rules: humanize keeps the
        input's hits, infill every voice but the hi-hats)."""
        spec = self.spec
        want = (z.shape[0], spec.steps, spec.step_size)
        if control is None or np.shape(control) != want:
            raise EngineError(f"{self.path}: a {spec.task} model needs its input pattern as "
                              f"{want}, got {None if control is None else np.shape(control)}")
        feed = self._feed(z, t, hit_noise, cont_noise)
        feed[spec.controls[0].name] = np.ascontiguousarray(control, np.float32)
        outputs = self._decoder.run(list(spec.decoder_outputs), feed)
        # Callers play these as they are (a finished pattern), so a graph that returns anything
        # else (a hostile or broken file) is refused here rather than sent to a synth.
        if any(a.shape != want[:2] + (spec.n_drums,) or not np.isfinite(a).all()
               for a in outputs):
            raise EngineError(f"{self.path}: the decoder returned something other than "
                              f"{want[0]} finished patterns (wrong shape or non-finite values)")
        return Patterns(*outputs)

    def _decode_classes(self, z: np.ndarray, t: np.ndarray, hit_noise: np.ndarray,
                        cont_noise: np.ndarray, control: np.ndarray | None) -> Patterns:
        """Kinds "categorical" and "hierarchical": z, temperature and one uniform per step in
        (the class is drawn by inverse CDF); the quantized pattern out (hits of the drawn class,
        velocity fixed, offsets 0). Temperature 0 is the most likely class at every step,
        whatever the noise."""
        spec = self.spec
        if control is not None:
            raise EngineError(f"{self.path}: a {spec.kind} model takes no control pattern")
        want = (z.shape[0], spec.steps, spec.n_drums)
        outputs = self._decoder.run(list(spec.decoder_outputs),
                                    self._feed(z, t, hit_noise, cont_noise))
        # Played as they are, so a hostile or broken graph is refused rather than sent on.
        if any(a.shape != want or not np.isfinite(a).all() for a in outputs):
            raise EngineError(f"{self.path}: the decoder returned something other than "
                              f"{want[0]} patterns of {want[1]} x {want[2]} (wrong shape or "
                              f"non-finite values)")
        return Patterns(*outputs)

    def _decode_pitched(self, z: np.ndarray, t: np.ndarray, hit_noise: np.ndarray,
                        cont_noise: np.ndarray, control: np.ndarray | None) -> Patterns:
        """Kind "pitched" decodes no drum patterns (decode_noise refuses it before calling
        this); its calls are accompany and generate_rolls."""
        self._refuse_pitched("decoding")
        raise AssertionError("decode_noise refuses a pitched model before its decode path")

    # --- harmonizing (kind "pitched") --------------------------------------------------------
    def latents(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """A harmonizer's noise: (n, steps/16, 8, z_size) standard normal float32, one z_size
        vector per cell of the generator's bottleneck (see spec.ROLL_PITCHES)."""
        spec = self.spec
        if spec.kind != "pitched":
            raise EngineError(f"{self.path}: {self.what}, not a harmonizer")
        grid = (spec.steps // PITCHED_DOWNSAMPLING, ROLL_PITCHES // PITCHED_DOWNSAMPLING)
        return rng.standard_normal((n, *grid, spec.z_size), dtype=np.float32)

    def generate_rolls(self, z: np.ndarray, melody: np.ndarray) -> np.ndarray:
        """The generator as it is: noise (B, steps/16, 8, z) and melody rolls (B, steps, 128)
        in {-1, +1} -> voice rolls (B, steps, 128, voices) in [-1, 1] (what export verification
        compares with torch). `accompany` is the call for pitches."""
        spec = self.spec
        shapes = spec.io_shapes(len(z) if np.ndim(z) else None)["decoder_inputs"]
        z_name, melody_name = spec.decoder_inputs[0], spec.controls[0].name
        for name, array in ((z_name, z), (melody_name, melody)):
            if np.shape(array) != shapes[name] or len(array) == 0:
                raise EngineError(f"{self.path}: the harmonizer's {name} must be "
                                  f"{['batch' if d is None else d for d in shapes[name]]} "
                                  f"with batch >= 1, got {list(np.shape(array))}")
        feed = {z_name: np.ascontiguousarray(z, np.float32),
                melody_name: np.ascontiguousarray(melody, np.float32)}
        (rolls,) = self._decoder.run(list(spec.decoder_outputs), feed)
        want = spec.io_shapes(len(z))["decoder_outputs"][spec.decoder_outputs[0]]
        # Read into notes and played, so a hostile or broken graph is refused here.
        if rolls.shape != want or not np.isfinite(rolls).all():
            raise EngineError(f"{self.path}: the generator returned something other than "
                              f"{want[0]} voice rolls of {want[1:]} (wrong shape or non-finite "
                              f"values)")
        return rolls

    def accompany(self, melody: np.ndarray, seed: int | None = None) -> np.ndarray:
        """The voices a harmonizer writes under melodies: (N, steps) int MIDI pitches (REST
        -1 where the melody is silent) -> (N, steps, voices) int pitches in spec.voices order,
        REST where a voice rests. Each voice is brought into its spec range by whole octaves
        (its pitch class kept; clipped only when the range is under an octave). The same seed
        gives the same voices. EngineError for a wrong shape; ChoraleError for a melody the
        model cannot take (silent, not integer pitches, outside the soprano range)."""
        spec = self.spec
        if spec.kind != "pitched":
            raise EngineError(f"{self.path}: {self.what}, not a harmonizer; it cannot "
                              f"accompany a melody")
        m = np.asarray(melody)
        if m.ndim != 2 or m.shape[1] != spec.steps or m.shape[0] == 0:
            raise EngineError(f"a harmonizer takes melodies as (N, {spec.steps}) pitches "
                              f"(16ths, {spec.bars} bars), got shape {list(m.shape)}")
        rows = []
        for i, row in enumerate(m):
            try:
                rows.append(check_melody(row, spec.steps))
            except ChoraleError as e:
                raise ChoraleError(f"melody {i}: {e}" if len(m) > 1 else str(e)) from None
        rng = np.random.default_rng(seed)
        rolls = self.generate_rolls(self.latents(len(rows), rng),
                                    melody_roll(np.stack(rows))[..., 0])
        return fold_into_ranges(roll_to_voices(rolls), spec.voices)

    def transform(self, patterns: Patterns, temperature: float = DEFAULT_TEMPERATURE,
                  seed: int | None = None,
                  z: np.ndarray | None = None) -> Patterns:
        """A task model's finished patterns (N, steps, voices) from a user's patterns.

        patterns: as the user gave them, played or quantized; the task's input is made from
        them here (groove_live.transforms.task_input), exactly as in training. z: (N, z_size)
        or (z_size,) latents, e.g. a groove's encoded feel; None draws them from the prior with
        `seed`, which also fixes the sampling noise (the same seed gives the same patterns).
        temperature scales every random part, the prior's z among them (see feel_latents); 0
        gives the most likely pattern.
        """
        spec = self.spec
        if not self.task:
            raise EngineError(f"{self.path}: {self.what}, not a task model "
                              f"(humanize, drumify or infill); it cannot transform patterns")
        if not isinstance(patterns, Patterns):
            raise EngineError(f"a {self.task} model transforms Patterns, not "
                              f"{type(patterns).__name__}")
        want = (spec.steps, spec.n_drums)
        if patterns.hits.ndim != 3 or patterns.hits.shape[1:] != want or len(patterns) == 0:
            raise EngineError(f"a {self.task} model takes patterns of {spec.steps} steps x "
                              f"{spec.n_drums} voices ({spec.bars} bars), got "
                              f"{'x'.join(map(str, patterns.hits.shape))}")
        if not all(np.isfinite(a).all() for a in (patterns.hits, patterns.velocities,
                                                   patterns.offsets)):
            raise EngineError(f"the patterns to {self.task} hold NaN or infinite values")
        n = len(patterns)
        rng = np.random.default_rng(seed)
        if z is None:
            z = self.feel_latents(n, temperature, rng)
        else:
            z = np.asarray(z, np.float32)
            z = z[None] if z.ndim == 1 else z
            if z.shape != (n, spec.z_size) or not np.isfinite(z).all():
                raise EngineError(f"z must be {n} x {spec.z_size} finite latents (one per "
                                  f"pattern), got {'x'.join(map(str, z.shape))}")
            z = np.ascontiguousarray(z)
        control = task_input(self.task, patterns, spec).to_flat()
        hit_noise, cont_noise = self.noise(n, rng)
        return self.decode_noise(z, temperature, hit_noise, cont_noise, control)

    def feel_latents(self, n: int, temperature: float, rng: np.random.Generator) -> np.ndarray:
        """(n, z_size) latents of a task model drawn from its prior N(0, T^2 I). A task model's
        latent is the drummer's feel, the one random part besides the per-step noise, so
        temperature scales it like the rest: 0 is the most likely performance of a pattern,
        the same for every seed; 1 a drummer drawn at random."""
        scale = float(temperature) if np.isfinite(temperature) and temperature >= 0 else 1.0
        return random_latents(n, self.spec.z_size, rng) * np.float32(scale)

    def tempered_noise(self, cont_noise: np.ndarray, temperature) -> np.ndarray:
        """The velocity/timing noise a sampling call feeds: scaled by the temperature.

        The sampling GrooVAE's graph divides the hit logits by the temperature but adds its
        Gaussian head's noise as fed (as Magenta's model does), so sample/decode/interpolate
        scale that noise here: every sampled part then follows the temperature, and 0 is the
        most likely pattern of a z, the same whatever the seed. A task model's graph does this
        itself, and a mean-head model ignores the noise either way."""
        if self.spec.kind != "groovae":
            return cont_noise
        t = np.asarray(temperature, np.float32)
        if not np.all(np.isfinite(t)) or np.any(t < 0):
            return cont_noise  # decode_noise refuses this temperature with its own message
        t = np.broadcast_to(t, (cont_noise.shape[0],))
        return (cont_noise * t[:, None, None]).astype(np.float32)

    def _decode(self, z: np.ndarray, temperature, rng: np.random.Generator) -> Patterns:
        if self.spec.kind in CATEGORICAL_KINDS and np.all(np.asarray(temperature) == 0):
            # Greedy: the graph multiplies the noise by 0, so skip drawing 2^C values per step.
            hit_noise, cont_noise = self.noise(z.shape[0], None)
        else:
            hit_noise, cont_noise = self.noise(z.shape[0], rng)
        return self.decode_noise(z, temperature, hit_noise,
                                 self.tempered_noise(cont_noise, temperature))

    def _latents(self, z) -> np.ndarray:
        z = np.asarray(z, np.float32)
        if z.ndim == 1:
            z = z[None]
        if z.ndim != 2 or z.shape[1] != self.spec.z_size:
            raise ValueError(f"latents must be (B, {self.spec.z_size}), got {z.shape}")
        if z.shape[0] == 0:
            raise ValueError("no latents to decode")
        return np.ascontiguousarray(z)

    # --- encoding ---------------------------------------------------------------------------
    def encode(self, patterns: Patterns) -> tuple[np.ndarray, np.ndarray]:
        """(mu, sigma), each (B, z_size), of the posterior of each pattern."""
        self._refuse_pitched("encoding")
        if self._encoder is None:
            raise EngineError(f"{self.path}: this model has no encoder "
                              f"({encoder_path_for(self.path).name} not found beside it)")
        patterns.check_spec(self.spec)
        flat = np.ascontiguousarray(patterns.cleaned().to_flat(), np.float32)
        mu, sigma = self._encoder.run(list(self.spec.encoder_outputs),
                                      {self.spec.encoder_inputs[0]: flat})
        return mu, sigma

    def interpolate(self, a: Patterns, b: Patterns, steps: int,
                    temperature: float = DEFAULT_TEMPERATURE,
                    seed: int | None = None, fit_rounds: int = FIT_ROUNDS) -> Patterns:
        """`steps` patterns from a's to b's latent (slerp), a and b themselves at the ends.

        The end latents are fitted (latent_fit.fit_latents, `fit_rounds` rounds; 0: the
        posterior means) so that their decodes reproduce a and b, and the ends are decoded at
        temperature 0: the morph starts and ends on the user's patterns. `temperature` applies
        to the steps between. One noise draw is shared by every step, so the patterns change
        only where the latent moves them.
        """
        self._refuse_task_model("interpolating")
        if len(a) != 1 or len(b) != 1:
            raise ValueError("interpolate takes one pattern at each end")
        if steps < 2:
            raise ValueError("an interpolation needs at least 2 steps")
        ends = fit_latents(self, Patterns.concat([a, b]), rounds=fit_rounds).z
        z = slerp_path(ends[0], ends[1], steps)  # (steps, z)
        t = np.full(steps, temperature, np.float32)
        t[[0, -1]] = 0.0
        hit_noise, cont_noise = self.noise(1, np.random.default_rng(seed))
        return self.decode_noise(z, t, np.repeat(hit_noise, steps, 0),
                                 self.tempered_noise(np.repeat(cont_noise, steps, 0), t))

    def _describe_heads(self) -> list[str]:
        s = self.spec
        if s.kind in CATEGORICAL_KINDS:
            return [f"heads       one class of {s.n_classes} per step (which voices hit), "
                    f"drawn by inverse CDF at T (0 = most likely); quantized: velocity "
                    f"{FIXED_VELOCITY:g} on every hit, offsets 0"
                    + ("; a conductor RNN emits one embedding per bar, bars decoded from it"
                       if s.kind == "hierarchical" else "")]
        return [f"heads       hits Bernoulli(sigmoid(logit / T)); velocity/offset "
                + ("drawn from a learned Gaussian, noise x T" if s.continuous_head == "gaussian"
                   else "the mean (Magenta)"),
                *self._describe_threshold(),
                f"encoding    velocity {s.velocity_encoding}, offset {s.offset_encoding}"]

    def _describe_threshold(self) -> list[str]:
        """A task model's calibrated hit threshold, from the spec's extra (metadata: shown
        only when it is a finite number)."""
        found = self.spec.extra.get("hit_threshold")
        bias = found.get("hit_bias") if isinstance(found, dict) else None
        if isinstance(bias, bool) or not isinstance(bias, (int, float)) or not math.isfinite(bias):
            return []
        return [f"threshold   hit logit + {bias:g} at T = 0, fading out by T = 1 (chosen for "
                f"hit F1 on {str(found.get('split', '?'))[:20]} data)"]

    def _describe_pitched(self) -> list[str]:
        s = self.spec
        return [
            f"model       {self.path}",
            f"name        {s.model_name} (preset {s.preset or '?'}, run {s.run_id or '?'})",
            f"data        {s.training_data or '?'}",
            f"schema      {s.schema_version}, variant {self.variant}, "
            f"providers {', '.join(self.providers)}",
            f"kind        pitched (a harmonizer: voices under a melody), control "
            f"{s.controls[0].name} ({s.controls[0].channels} pitches)",
            f"phrase      {s.bars} bars x {s.steps_per_bar} steps ({s.beats_per_bar}/4), "
            f"noise {s.steps // PITCHED_DOWNSAMPLING} x {ROLL_PITCHES // PITCHED_DOWNSAMPLING}"
            f" x {s.z_size}",
            f"decoder     {', '.join((*s.decoder_inputs, *(c.name for c in s.controls)))} -> "
            f"{', '.join(s.decoder_outputs)}; no encoder",
            "voices      " + ", ".join(f"{v.name} ch {v.midi_channel + 1} "
                                       f"{v.low_pitch}-{v.high_pitch}" for v in s.voices),
        ]

    def describe(self) -> str:
        """The spec and where the model came from, for `groove-live info`."""
        s = self.spec
        info = self.export_info
        if s.kind == "pitched":
            lines = self._describe_pitched()
            if info:
                lines.append(f"exported    {info.get('exported', '?')} from "
                             f"{info.get('source', '?')} ({info.get('route', '?')})")
            return "\n".join(lines)
        lines = [
            f"model       {self.path}",
            f"encoder     {self.encoder_path or 'none (encode/interpolate unavailable)'}",
            f"name        {s.model_name} (preset {s.preset or '?'}, run {s.run_id or '?'})",
            f"data        {s.training_data or '?'}",
            f"schema      {s.schema_version}, variant {self.variant}, "
            f"providers {', '.join(self.providers)}",
            f"kind        {s.kind}" + (f" ({s.task})" if s.task else "")
            + (f", controls {', '.join(f'{c.name} ({c.channels})' for c in s.controls)}"
               if s.controls else ""),
            f"phrase      {s.bars} bars x {s.steps_per_bar} steps ({s.beats_per_bar}/4), "
            f"{s.n_drums} drums, z size {s.z_size}",
            *self._describe_heads(),
            f"decoder     {', '.join((*s.decoder_inputs, *(c.name for c in s.controls)))} -> "
            f"{', '.join(s.decoder_outputs)}",
            f"encoder     {', '.join(s.encoder_inputs)} -> {', '.join(s.encoder_outputs)}",
            "drums       " + ", ".join(f"{d.name} {d.out_pitch}" for d in s.drums),
        ]
        if info:
            lines.append(f"exported    {info.get('exported', '?')} from {info.get('source', '?')}"
                         f" ({info.get('route', '?')})")
        return "\n".join(lines)


def _confirm_providers(session: ort.InferenceSession, asked: list[str], path: Path) -> None:
    active = session.get_providers()
    missing = [p for p in asked if p not in active]
    if missing:
        raise EngineError(f"{path}: onnxruntime did not enable {', '.join(missing)} "
                          f"(active: {', '.join(active)}); check the driver/CUDA install")



# The decode path of each model kind this runtime implements (spec.KINDS names them all). A new
# kind adds its method to Engine and a line here; see docs/adding-a-model.md.
DECODE_PATHS = {
    "groovae": Engine._decode_groovae,
    "conditioned": Engine._decode_conditioned,
    "categorical": Engine._decode_classes,
    "hierarchical": Engine._decode_classes,
    "pitched": Engine._decode_pitched,
}


def fold_into_ranges(pitches: np.ndarray, voices: tuple[Voice, ...]) -> np.ndarray:
    """(..., voices) int pitches with each voice's sounding pitches moved by whole octaves
    into its low..high range (the pitch class, so the harmony, kept). In a range narrower than
    an octave a pitch may have no octave inside; it is clipped to the nearer end instead.
    REST stays REST."""
    out = np.array(pitches, np.int64)
    for i, voice in enumerate(voices):
        p = out[..., i]
        sounding = p != REST
        low, high = voice.low_pitch, voice.high_pitch
        moved = p.copy()
        up = sounding & (p < low)
        moved[up] += 12 * -((p[up] - low) // 12)  # ceil((low - p) / 12) octaves up
        down = sounding & (p > high)
        moved[down] -= 12 * -((high - p[down]) // 12)  # ceil((p - high) / 12) octaves down
        outside = sounding & ((moved < low) | (moved > high))
        moved[outside] = np.clip(p[outside], low, high)
        p[sounding] = moved[sounding]
    return out


def decode_path(spec: ModelSpec, path: Path | str = "model"):
    """The decode function for the spec's kind, or EngineError naming what this runtime has."""
    try:
        return DECODE_PATHS[spec.kind]
    except KeyError:
        raise EngineError(f"{path}: a {spec.kind!r} model, which this groove-live cannot decode "
                          f"(it decodes: {', '.join(DECODE_PATHS)})") from None
