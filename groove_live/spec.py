"""The model spec: the one description of a groove model shared by train, export and runtime.

Pure Python on purpose: training writes it next to the weights, export embeds it as JSON in
the ONNX metadata, and the runtime reads it back with onnxruntime alone. It is the only
statement of a model's kind and shape: data caches, training configs, export and the engine
derive theirs from it (see docs/adding-a-model.md).
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field

# Schema 2 added `kind` and `controls`. Schema 1 specs (the bundled model, older exports) are
# still read: they describe what schema 2 calls kind "groovae" with no controls.
SCHEMA_VERSION = 2
READABLE_SCHEMAS = (1, 2)

# The ONNX metadata keys of a groove-live model file; stated here only, so train, export and the
# runtime cannot drift apart.
METADATA_KEY = "groove_live.spec"  # the spec JSON (also spec.json in run folders)
ROLE_KEY = "groove_live.role"  # "decoder" or "encoder"
ENCODER_KEY = "groove_live.encoder"  # the decoder's encoder file name, relative to it
VARIANT_KEY = "groove_live.variant"  # "fp32" / "int8"
EXPORT_KEY = "groove_live.export"  # JSON: how and from what the file was exported
# JSON: latent attribute vectors (styles, density, syncopation, fill) of a sampling GrooVAE's
# decoder, added by `groove-export attributes`; read by groove_live/attributes.py.
ATTRIBUTES_KEY = "groove_live.attributes"
METADATA_KEYS = (METADATA_KEY, ROLE_KEY, ENCODER_KEY, VARIANT_KEY, EXPORT_KEY, ATTRIBUTES_KEY)

# Model kinds: what the decoder outputs and so which decode path a consumer needs.
KINDS = {
    "groovae": "continuous: per-step hits, velocities and timing offsets per drum voice",
    "categorical": "MusicVAE drums: one class out of 2^voices per step (which voices hit), "
                   "quantized, one flat autoregressive decoder",
    "hierarchical": "MusicVAE hierarchical drums: classes as 'categorical', a conductor RNN "
                    "emitting one embedding per bar, each bar decoded from its embedding",
    "conditioned": "GrooVAE humanize/drumify/infill: the decoder also takes the task's input "
                   "pattern as a per-step control",
    "pitched": "pitched voices (a chorale harmonizer GAN): a melody's piano roll in, one piano "
               "roll per voice out",
}
# Kinds whose decoder takes per-step controls (and must name at least one).
CONTROLLED_KINDS = ("conditioned", "pitched")
# Kinds that model a step as one class out of 2^voices (bit k set = voice k hits). Their
# decoder graphs still return the standard (hits, velocities, offsets) tensors: hits from the
# class, velocities at one fixed level, offsets 0 (a quantized pattern), so every consumer plays
# them as it plays a GrooVAE. Their hit noise is one uniform per step (inverse-CDF sampling).
CATEGORICAL_KINDS = ("categorical", "hierarchical")
# 2^12 classes per step at most: the output layer and the per-step noise grow as 2^voices.
MAX_CATEGORICAL_DRUMS = 12
# GrooVAE's tasks, each a model of kind "conditioned": the runtime turns a user's pattern into
# the model's control with the task's transformation (groove_live/transforms.py), and the graph
# returns the finished pattern (humanize keeps the control's hits; infill keeps every voice but
# the hi-hats).
TASKS = {
    "humanize": "quantized, flat-velocity pattern -> the same notes with a drummer's velocity "
                "and timing",
    "drumify": "taps on one voice -> a full kit (GrooVAE's Tap2Drum)",
    "infill": "a pattern without hi-hats -> the hi-hats a drummer would add",
}
# The control every task model takes: its input pattern in the flat layout (hits, velocities,
# offsets per voice, so 3 x voices channels).
TASK_CONTROL = "input"
# Fields that fix the data a model reads and writes: a data cache and a model must agree on all.
DATA_SHAPE_FIELDS = ("kind", "task", "steps_per_bar", "bars", "beats_per_bar", "drums",
                     "controls")

# A spec comes from a model file, which may come from anyone: every field is checked before
# use, and these bounds are far above any real model yet small enough that a hostile file
# cannot make the runtime allocate gigabytes or write where it should not.
MAX_STEPS_PER_BAR = 96
MAX_BARS = 64
MAX_BEATS_PER_BAR = 32
MAX_Z_SIZE = 4096
MAX_DRUMS = 128  # one per MIDI pitch
MAX_TEXT_CHARS = 256  # preset, run id, training data, tensor names
MAX_CONTROLS = 8
MAX_CONTROL_CHANNELS = 1024
MAX_SPEC_JSON_CHARS = 1 << 20
# model_name becomes part of output file names: a plain name, never a path ("..", "/", "C:").
PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# Drum names are OSC arguments and labels: short words.
DRUM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
VELOCITY_ENCODINGS = ("unit",)
OFFSET_ENCODINGS = ("step_fraction",)
CONTINUOUS_HEADS = ("mean", "gaussian")
# How many tensors each graph has, in the order the engine feeds and reads them (the drum
# kinds; tensor_counts(kind) gives any kind's).
TENSOR_COUNTS = {"decoder_inputs": 4, "decoder_outputs": 3, "encoder_inputs": 1,
                 "encoder_outputs": 2}

# Kind "pitched": a harmonizer. It writes `voices` (each a Voice: name, MIDI channel, pitch
# range) under a melody the user gives. Tensors, channels last as in the piano rolls:
#   decoder input  z        (batch, steps / 16, ROLL_PITCHES / 16, z_size): standard normal
#                           noise, one z_size vector per cell of the generator's bottleneck
#                           (a U-Net that halves steps and pitches four times);
#   decoder input  CONTROL  (batch, steps, ROLL_PITCHES): the melody's piano roll, +1 where the
#                           melody sounds that MIDI pitch, -1 elsewhere (its one control);
#   decoder output rolls    (batch, steps, ROLL_PITCHES, voices) in [-1, 1]: one roll per voice
#                           in `voices` order; a voice sounds, at each step, its highest cell
#                           when that cell is above 0 (else it rests).
# There is no encoder (a GAN has none) and no temperature or per-step noise input. The melody
# itself is not among the outputs: it is the user's, played as given.
ROLL_PITCHES = 128  # a roll's pitch axis: every MIDI pitch 0..127
PITCHED_DOWNSAMPLING = 16  # steps and pitches per bottleneck cell: 2^4
PITCHED_TENSOR_COUNTS = {"decoder_inputs": 1, "decoder_outputs": 1, "encoder_inputs": 0,
                         "encoder_outputs": 0}
MAX_VOICES = 16  # one per MIDI channel


def tensor_counts(kind: str) -> dict[str, int]:
    """How many tensor names each graph part of a model of `kind` has."""
    return PITCHED_TENSOR_COUNTS if kind == "pitched" else TENSOR_COUNTS


def is_plain_name(name: object) -> bool:
    """A file name with no folder part, not hidden, not "." or ".." (the pattern's first
    character cannot be a dot), of at most 64 characters."""
    return isinstance(name, str) and PLAIN_NAME.fullmatch(name) is not None


def _show(value: object) -> str:
    # repr() escapes newlines and control characters, so a hostile value stays on one line.
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _show_long(text: str) -> str:
    return text if len(text) <= 80 else text[:77] + "..."


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is not 1 here


def _is_text(value: object, max_chars: int = MAX_TEXT_CHARS) -> bool:
    return (isinstance(value, str) and len(value) <= max_chars
            and all(c.isprintable() for c in value))


@dataclass(frozen=True)
class DrumClass:
    name: str
    out_pitch: int  # GM pitch written when this class is played
    in_pitches: tuple[int, ...]  # GM / Roland TD-11 pitches mapped to this class when reading


# Magenta's GrooveConverter 9-class map. Order is the tensor channel order.
# One deliberate difference: Magenta writes the toms as GM 45/48/50, but under its own Roland
# read map 45 is the mid tom and 48 the high tom, so its files do not read back as themselves.
# We write 43/47/50 (GM high floor, low-mid and high tom): still ascending GM toms, and a
# written pattern reads back into the same classes.
GROOVAE_DRUMS: tuple[DrumClass, ...] = (
    DrumClass("kick", 36, (36,)),
    DrumClass("snare", 38, (38, 37, 40)),
    DrumClass("closed_hihat", 42, (42, 22, 44)),
    DrumClass("open_hihat", 46, (46, 26)),
    DrumClass("low_tom", 43, (43, 58)),
    DrumClass("mid_tom", 47, (47, 45)),
    DrumClass("high_tom", 50, (50, 48)),
    DrumClass("crash", 49, (49, 52, 55, 57)),
    DrumClass("ride", 51, (51, 53, 59)),
)


@dataclass(frozen=True)
class Control:
    """A per-step input the decoder takes besides z, fed as a (batch, steps, channels) tensor
    named `name`: e.g. Control("hit_pattern", 9) for drumify, or a melody's piano roll."""
    name: str
    channels: int


@dataclass(frozen=True)
class Voice:
    """One voice a pitched model writes: its name, the 0-based MIDI channel it plays on (0 is
    what a synth calls channel 1) and the MIDI pitches it may sound, low..high inclusive."""
    name: str
    midi_channel: int
    low_pitch: int
    high_pitch: int


class SpecError(ValueError):
    """A spec that this runtime cannot use (unknown schema, missing fields, wrong types)."""


def _check_plain_word(value: object, what: str) -> None:
    """Names of voices and controls travel into OSC replies and file names: plain words only."""
    if not isinstance(value, str) or DRUM_NAME.fullmatch(value) is None:
        raise SpecError(f"model spec {what} {_show(value)} is not a plain word "
                        f"(letters, digits, '.', '_', '-'; at most 32)")


@dataclass(frozen=True)
class ModelSpec:
    """What a consumer must know to use a groove model without its training code."""

    kind: str = "groovae"  # a key of KINDS: which decode path the model needs
    steps_per_bar: int = 16
    bars: int = 4
    beats_per_bar: int = 4
    drums: tuple[DrumClass, ...] = GROOVAE_DRUMS
    z_size: int = 256
    # Per-step inputs the decoder takes besides z (kinds in CONTROLLED_KINDS only).
    controls: tuple[Control, ...] = ()
    # Kind "conditioned" only: which of TASKS the model does ("" for every other kind).
    task: str = ""
    # Kind "pitched" only: the voices the decoder writes, in its output's channel order. A
    # pitched spec has no drums (the field is then empty).
    voices: tuple[Voice, ...] = ()
    # How the continuous outputs are encoded in the decoder's output tensors.
    velocity_encoding: str = "unit"  # velocity in [0, 1] = midi_velocity / 127
    offset_encoding: str = "step_fraction"  # (onset - grid) / step length in [-0.5, 0.5), + = late
    # "mean": velocity/offset are the decoder's mean (Magenta); "gaussian": sampled from a
    # learned per-cell Gaussian with the decoder's normal-noise input.
    continuous_head: str = "mean"
    # ONNX tensor names (inputs then outputs) of each graph.
    decoder_inputs: tuple[str, ...] = ("z", "temperature", "hit_noise", "cont_noise")
    decoder_outputs: tuple[str, ...] = ("hits", "velocities", "offsets")
    encoder_inputs: tuple[str, ...] = ("pattern",)
    encoder_outputs: tuple[str, ...] = ("mu", "sigma")
    model_name: str = "groovae_4bar"
    preset: str = ""
    training_data: str = ""
    run_id: str = ""
    schema_version: int = SCHEMA_VERSION
    extra: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def steps(self) -> int:
        return self.steps_per_bar * self.bars

    @property
    def n_drums(self) -> int:
        return len(self.drums)

    @property
    def step_size(self) -> int:
        """Values per step in the flat model representation: hits, velocities, offsets."""
        return 3 * self.n_drums

    @property
    def steps_per_beat(self) -> int:
        return self.steps_per_bar // self.beats_per_bar

    @property
    def drum_names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.drums)

    @property
    def out_pitches(self) -> tuple[int, ...]:
        return tuple(d.out_pitch for d in self.drums)

    def pitch_to_class(self) -> dict[int, int]:
        """GM pitch -> channel index, for reading performances."""
        table: dict[int, int] = {}
        for index, drum in enumerate(self.drums):
            for pitch in drum.in_pitches:
                table.setdefault(pitch, index)
        return table

    def replace(self, **changes) -> "ModelSpec":
        return dataclasses.replace(self, **changes)

    def _data_shape_fields(self) -> tuple[str, ...]:
        # voices exist for kind "pitched" only; a drum spec's data shape is what it always was
        return DATA_SHAPE_FIELDS + (("voices",) if self.kind == "pitched" else ())

    def data_shape(self) -> dict:
        """The fields a data cache and a model must agree on, as plain data."""
        d = self.to_dict()
        return {name: d.get(name, []) for name in self._data_shape_fields()}

    @property
    def n_classes(self) -> int:
        """Classes per step of a categorical kind: every subset of the voices."""
        return 1 << self.n_drums

    def window_spec(self) -> "ModelSpec":
        """The spec of the played windows this model learns from. Every drum kind reads the
        same cached windows as a GrooVAE of its shape: a task model makes its controls from
        them, a categorical or hierarchical model keeps their hits (quantizes them)."""
        if self.kind in ("groovae", "pitched"):  # a pitched model reads its own windows
            return self
        return self.replace(kind="groovae", controls=(), task="")

    def data_shape_mismatch(self, other: "ModelSpec") -> tuple[str, str, str] | None:
        """The first data-shape field where `other` differs: (field, other's, ours) as short
        text for a one-line refusal, or None when the two describe the same data."""
        mine, theirs = self.data_shape(), other.data_shape()
        for name in self._data_shape_fields():
            if mine[name] != theirs.get(name, []):
                show = {"drums": lambda s: ",".join(f"{d.name}:{d.out_pitch}" for d in s.drums),
                        "controls": lambda s: ",".join(f"{c.name}:{c.channels}"
                                                       for c in s.controls) or "none",
                        "voices": lambda s: ",".join(
                            f"{v.name}:{v.low_pitch}-{v.high_pitch}" for v in s.voices)}
                text = show.get(name, lambda s: str(getattr(s, name)))
                return name, _show_long(text(other)), _show_long(text(self))
        return None

    def io_shapes(self, batch: int | None = None) -> dict[str, dict[str, tuple]]:
        """The shape of every graph tensor, by graph part ("decoder_inputs", ...) then tensor
        name, in feeding order; `batch` None stands for the dynamic batch dimension. The one
        statement of tensor shapes: export's checks and the engine's read it from here."""
        if self.kind == "pitched":
            return self._pitched_io_shapes(batch)
        if self.kind not in ("groovae", "conditioned", *CATEGORICAL_KINDS):
            raise SpecError(f"model spec kind {self.kind!r} has no tensor shape rules yet")
        b, t, c, z = batch, self.steps, self.n_drums, self.z_size
        # A categorical step draws one class by inverse CDF: one uniform per step.
        hit_noise = (b, t, 1) if self.kind in CATEGORICAL_KINDS else (b, t, c)
        decoder_inputs = dict(zip(self.decoder_inputs, ((b, z), (b,), hit_noise, (b, t, 2 * c))))
        decoder_inputs.update({ctl.name: (b, t, ctl.channels) for ctl in self.controls})
        return {
            "decoder_inputs": decoder_inputs,
            "decoder_outputs": {name: (b, t, c) for name in self.decoder_outputs},
            "encoder_inputs": {self.encoder_inputs[0]: (b, t, self.step_size)},
            "encoder_outputs": {name: (b, z) for name in self.encoder_outputs},
        }

    def _pitched_io_shapes(self, batch: int | None) -> dict[str, dict[str, tuple]]:
        """Kind "pitched" (see ROLL_PITCHES above for what each tensor holds)."""
        b, t, p = batch, self.steps, ROLL_PITCHES
        grid = (t // PITCHED_DOWNSAMPLING, p // PITCHED_DOWNSAMPLING)
        decoder_inputs = {self.decoder_inputs[0]: (b, *grid, self.z_size)}
        decoder_inputs.update({ctl.name: (b, t, ctl.channels) for ctl in self.controls})
        return {"decoder_inputs": decoder_inputs,
                "decoder_outputs": {self.decoder_outputs[0]: (b, t, p, len(self.voices))},
                "encoder_inputs": {}, "encoder_outputs": {}}

    # --- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["drums"] = [dataclasses.asdict(x) for x in self.drums]
        d["controls"] = [dataclasses.asdict(x) for x in self.controls]
        d["voices"] = [dataclasses.asdict(x) for x in self.voices]
        if self.kind != "pitched" and not self.voices:
            del d["voices"]  # a drum spec's JSON stays what it was before voices existed
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        """A spec from untrusted JSON data: types are checked, never coerced ("16" is refused)."""
        if not isinstance(d, dict):
            raise SpecError("model spec is not a JSON object")
        version = d.get("schema_version")
        if version not in READABLE_SCHEMAS or not _is_int(version):
            raise SpecError(
                f"model spec schema {_show(version)} is not supported (this groove-live reads "
                f"schema {', '.join(map(str, READABLE_SCHEMAS))})"
            )
        if version == 1:
            d = migrate_v1(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        kwargs = {k: v for k, v in d.items() if k in known}
        if "drums" not in d:
            raise SpecError("model spec is malformed: no 'drums'")
        kwargs["drums"] = _drums_from(d["drums"])
        kwargs["controls"] = _controls_from(d.get("controls", []))
        kwargs["voices"] = _voices_from(d.get("voices", []))
        for name in TENSOR_COUNTS:
            if name in kwargs:
                if not isinstance(kwargs[name], list):
                    raise SpecError(f"model spec {name} is {_show(kwargs[name])}, not a list")
                kwargs[name] = tuple(kwargs[name])
        extra = kwargs.get("extra", {})
        if not isinstance(extra, dict):
            raise SpecError(f"model spec extra is {_show(extra)}, not an object")
        # Forward-compatible within a schema version: keep what we don't know.
        kwargs["extra"] = {**extra, **{k: d[k] for k in unknown}}
        spec = cls(**kwargs)
        spec.validate()
        return spec

    @classmethod
    def from_json(cls, text: str) -> "ModelSpec":
        if not isinstance(text, str):
            raise SpecError("model spec is not text")
        if len(text) > MAX_SPEC_JSON_CHARS:
            raise SpecError(f"model spec is {len(text)} characters long (at most "
                            f"{MAX_SPEC_JSON_CHARS})")
        try:
            d = json.loads(text)
        except (ValueError, RecursionError) as e:  # ValueError: JSONDecodeError, huge ints
            raise SpecError(f"model spec is not valid JSON: {_first_line(e)}") from None
        return cls.from_dict(d)

    def validate(self) -> None:
        """Refuse, with one line naming the field, anything the runtime could not use safely."""
        if self.schema_version != SCHEMA_VERSION or not _is_int(self.schema_version):
            raise SpecError(f"model spec schema {_show(self.schema_version)} is not supported")
        if not isinstance(self.kind, str) or self.kind not in KINDS:
            raise SpecError(f"model spec kind {_show(self.kind)} is unknown; known: "
                            f"{', '.join(KINDS)}")
        for name, most in (("steps_per_bar", MAX_STEPS_PER_BAR), ("bars", MAX_BARS),
                           ("beats_per_bar", MAX_BEATS_PER_BAR), ("z_size", MAX_Z_SIZE)):
            value = getattr(self, name)
            if not _is_int(value):
                raise SpecError(f"model spec {name} is {_show(value)}, not an integer")
            if not 1 <= value <= most:
                raise SpecError(f"model spec {name} is {value}, outside 1..{most}")
        if self.steps_per_bar % self.beats_per_bar:
            raise SpecError(f"model spec steps_per_bar ({self.steps_per_bar}) must be a "
                            f"multiple of beats_per_bar ({self.beats_per_bar})")
        if self.kind == "pitched":
            self._validate_pitched()
        else:
            if self.voices != ():
                raise SpecError(f"model spec voices are only for kind 'pitched', not "
                                f"{_show(self.kind)}")
            self._validate_drums()
        if self.kind in CATEGORICAL_KINDS and self.n_drums > MAX_CATEGORICAL_DRUMS:
            raise SpecError(f"model spec of kind {self.kind!r} has {self.n_drums} drum classes; "
                            f"at most {MAX_CATEGORICAL_DRUMS} (2^voices classes per step)")
        if self.kind == "hierarchical" and self.bars < 2:
            raise SpecError("model spec of kind 'hierarchical' needs at least 2 bars")
        for name, values in (("continuous_head", CONTINUOUS_HEADS),
                             ("velocity_encoding", VELOCITY_ENCODINGS),
                             ("offset_encoding", OFFSET_ENCODINGS)):
            value = getattr(self, name)
            if not isinstance(value, str) or value not in values:
                raise SpecError(f"model spec {name} {_show(value)} is unknown; known: "
                                f"{', '.join(values)}")
        counts = tensor_counts(self.kind)
        for graph in ("decoder", "encoder"):
            seen: set[str] = set()
            for name in (f"{graph}_inputs", f"{graph}_outputs"):
                names = getattr(self, name)
                if not isinstance(names, tuple) or len(names) != counts[name]:
                    raise SpecError(f"model spec {name} is {_show(names)}, not "
                                    f"{counts[name]} tensor names")
                for tensor in names:
                    if not _is_text(tensor) or not tensor:
                        raise SpecError(f"model spec {name} has a bad tensor name "
                                        f"{_show(tensor)}")
                    if tensor in seen:
                        raise SpecError(f"model spec names the {graph} tensor {tensor!r} twice")
                    seen.add(tensor)
        self._validate_controls()  # after the tensor names, which control names must not repeat
        if self.kind == "pitched" and (len(self.controls) != 1
                                       or self.controls[0].channels != ROLL_PITCHES):
            raise SpecError(f"model spec of kind 'pitched' must take one control: the melody's "
                            f"piano roll of {ROLL_PITCHES} channels")
        if self.kind == "conditioned":
            if not isinstance(self.task, str) or self.task not in TASKS:
                raise SpecError(f"model spec task {_show(self.task)} is unknown; known: "
                                f"{', '.join(TASKS)}")
            want = Control(TASK_CONTROL, self.step_size)
            if self.controls != (want,):
                raise SpecError(f"model spec of a {self.task} model must take one control "
                                f"{TASK_CONTROL!r} of {self.step_size} channels")
        elif self.task != "":
            raise SpecError(f"model spec task {_show(self.task)} is only for kind 'conditioned'")
        if not is_plain_name(self.model_name):
            raise SpecError(f"model spec model_name {_show(self.model_name)} is not a plain name "
                            f"(letters, digits, '.', '_', '-'; at most 64; not starting with '.')")
        for name in ("preset", "training_data", "run_id"):
            if not _is_text(getattr(self, name)):
                raise SpecError(f"model spec {name} is {_show(getattr(self, name))}, not a line "
                                f"of at most {MAX_TEXT_CHARS} printable characters")
        if not isinstance(self.extra, dict):
            raise SpecError(f"model spec extra is {_show(self.extra)}, not an object")

    def _validate_controls(self) -> None:
        if not isinstance(self.controls, tuple) or len(self.controls) > MAX_CONTROLS:
            raise SpecError(f"model spec controls is {_show(self.controls)}, not at most "
                            f"{MAX_CONTROLS} controls")
        takes = self.kind in CONTROLLED_KINDS
        if takes and not self.controls:
            raise SpecError(f"model spec kind {self.kind!r} needs at least one control")
        if self.controls and not takes:
            raise SpecError(f"model spec kind {self.kind!r} takes no controls; only "
                            f"{', '.join(CONTROLLED_KINDS)} do")
        names = set(self.decoder_inputs)
        for control in self.controls:
            if not isinstance(control, Control):
                raise SpecError(f"model spec control {_show(control)} is not a control")
            _check_plain_word(control.name, "control name")
            if control.name in names:
                raise SpecError(f"model spec names the decoder input {control.name!r} twice")
            names.add(control.name)
            if not _is_int(control.channels) or not 1 <= control.channels <= MAX_CONTROL_CHANNELS:
                raise SpecError(f"model spec control {control.name!r} has "
                                f"{_show(control.channels)} channels, not 1..{MAX_CONTROL_CHANNELS}")

    def _validate_pitched(self) -> None:
        """Voices instead of drums; steps the generator can halve four times."""
        if self.drums != ():
            raise SpecError("model spec of kind 'pitched' has voices, not drums (drums must be "
                            "empty)")
        if not isinstance(self.voices, tuple) or not 1 <= len(self.voices) <= MAX_VOICES:
            raise SpecError(f"model spec of kind 'pitched' needs 1..{MAX_VOICES} voices")
        names: set[str] = set()
        for voice in self.voices:
            if not isinstance(voice, Voice):
                raise SpecError(f"model spec voice {_show(voice)} is not a voice")
            _check_plain_word(voice.name, "voice name")
            if voice.name in names:
                raise SpecError(f"model spec names the voice {voice.name!r} twice")
            names.add(voice.name)
            if not _is_int(voice.midi_channel) or not 0 <= voice.midi_channel <= 15:
                raise SpecError(f"model spec voice {voice.name!r} has MIDI channel "
                                f"{_show(voice.midi_channel)}, not 0..15")
            for pitch in (voice.low_pitch, voice.high_pitch):
                if not _is_int(pitch) or not 0 <= pitch < ROLL_PITCHES:
                    raise SpecError(f"model spec voice {voice.name!r} has pitch {_show(pitch)}, "
                                    f"not a MIDI pitch 0..{ROLL_PITCHES - 1}")
            if voice.low_pitch > voice.high_pitch:
                raise SpecError(f"model spec voice {voice.name!r} has an empty pitch range "
                                f"{voice.low_pitch}..{voice.high_pitch}")
        if self.steps % PITCHED_DOWNSAMPLING:
            raise SpecError(f"model spec of kind 'pitched' has {self.steps} steps, not a multiple "
                            f"of {PITCHED_DOWNSAMPLING} (the generator halves them four times)")

    def _validate_drums(self) -> None:
        if not isinstance(self.drums, tuple) or not 1 <= len(self.drums) <= MAX_DRUMS:
            raise SpecError(f"model spec needs 1..{MAX_DRUMS} drum classes")
        names: set[str] = set()
        for drum in self.drums:
            if not isinstance(drum, DrumClass):
                raise SpecError(f"model spec drum {_show(drum)} is not a drum class")
            _check_plain_word(drum.name, "drum name")
            if drum.name in names:
                raise SpecError(f"model spec names the drum {drum.name!r} twice")
            names.add(drum.name)
            pitches = drum.in_pitches if isinstance(drum.in_pitches, tuple) else None
            if pitches is None or len(pitches) > 128:
                raise SpecError(f"model spec drum {drum.name!r} in_pitches is "
                                f"{_show(drum.in_pitches)}, not a list of MIDI pitches")
            for pitch in (drum.out_pitch, *pitches):
                if not _is_int(pitch) or not 0 <= pitch <= 127:
                    raise SpecError(f"model spec drum {drum.name!r} has pitch {_show(pitch)}, "
                                    f"not a MIDI pitch 0..127")


def _drums_from(items: object) -> tuple[DrumClass, ...]:
    """Drum classes from JSON, types left as found for validate() to judge."""
    if not isinstance(items, list):
        raise SpecError(f"model spec drums is {_show(items)}, not a list")
    if len(items) > MAX_DRUMS:
        raise SpecError(f"model spec has {len(items)} drum classes (at most {MAX_DRUMS})")
    drums = []
    for item in items:
        if not isinstance(item, dict) or not {"name", "out_pitch", "in_pitches"} <= set(item):
            raise SpecError(f"model spec drum {_show(item)} is not an object with name, "
                            f"out_pitch and in_pitches")
        in_pitches = item["in_pitches"]
        if not isinstance(in_pitches, list):
            raise SpecError(f"model spec drum {_show(item['name'])} in_pitches is "
                            f"{_show(in_pitches)}, not a list")
        drums.append(DrumClass(item["name"], item["out_pitch"], tuple(in_pitches)))
    return tuple(drums)


def _voices_from(items: object) -> tuple[Voice, ...]:
    """Voices from JSON, types left as found for validate() to judge."""
    if not isinstance(items, list):
        raise SpecError(f"model spec voices is {_show(items)}, not a list")
    if len(items) > MAX_VOICES:
        raise SpecError(f"model spec has {len(items)} voices (at most {MAX_VOICES})")
    fields = {"name", "midi_channel", "low_pitch", "high_pitch"}
    voices = []
    for item in items:
        if not isinstance(item, dict) or set(item) != fields:
            raise SpecError(f"model spec voice {_show(item)} is not an object with name, "
                            f"midi_channel, low_pitch and high_pitch")
        voices.append(Voice(item["name"], item["midi_channel"], item["low_pitch"],
                            item["high_pitch"]))
    return tuple(voices)


def _controls_from(items: object) -> tuple[Control, ...]:
    """Controls from JSON, types left as found for validate() to judge."""
    if not isinstance(items, list):
        raise SpecError(f"model spec controls is {_show(items)}, not a list")
    if len(items) > MAX_CONTROLS:
        raise SpecError(f"model spec has {len(items)} controls (at most {MAX_CONTROLS})")
    controls = []
    for item in items:
        if not isinstance(item, dict) or set(item) != {"name", "channels"}:
            raise SpecError(f"model spec control {_show(item)} is not an object with name and "
                            f"channels")
        controls.append(Control(item["name"], item["channels"]))
    return tuple(controls)


def migrate_v1(d: dict) -> dict:
    """A schema 1 spec dict as schema 2: every schema 1 model is a GrooVAE without controls.
    Fields schema 1 never had are refused rather than guessed at."""
    for name in ("kind", "controls", "voices"):
        if name in d:
            raise SpecError(f"model spec schema 1 has no field {name!r}")
    if "task" in d:
        raise SpecError("model spec schema 1 has no field 'task'")
    return {**d, "schema_version": SCHEMA_VERSION, "kind": "groovae", "controls": []}


def _first_line(e: Exception) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


DEFAULT_SPEC = ModelSpec()


# The tensor names a pitched model's graph uses (see ROLL_PITCHES for their shapes).
PITCHED_DECODER_INPUTS = ("z",)
PITCHED_DECODER_OUTPUTS = ("rolls",)
MELODY_CONTROL = "melody"


def pitched_fields(voices: tuple[Voice, ...], melody: str = MELODY_CONTROL) -> dict:
    """The ModelSpec fields of a harmonizer writing `voices` under a melody roll named
    `melody`: ModelSpec(**pitched_fields(...), bars=2) is a complete pitched spec."""
    return {"kind": "pitched", "drums": (), "voices": tuple(voices),
            "controls": (Control(melody, ROLL_PITCHES),),
            "decoder_inputs": PITCHED_DECODER_INPUTS, "decoder_outputs": PITCHED_DECODER_OUTPUTS,
            "encoder_inputs": (), "encoder_outputs": ()}
