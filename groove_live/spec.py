"""The model spec: the one description of a groove model shared by train, export and runtime.

Pure Python on purpose: training writes it next to the weights, export embeds it as JSON in
the ONNX metadata, and the runtime reads it back with onnxruntime alone.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

SCHEMA_VERSION = 1
# Key under which the spec JSON is stored in ONNX `metadata_props` and in run folders.
METADATA_KEY = "groove_live.spec"


@dataclass(frozen=True)
class DrumClass:
    name: str
    out_pitch: int  # GM pitch written when this class is played
    in_pitches: tuple[int, ...]  # GM / Roland TD-11 pitches mapped to this class when reading


# Magenta's GrooveConverter 9-class map (REFERENCE.md). Order is the tensor channel order.
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


class SpecError(ValueError):
    """A spec that this runtime cannot use (unknown schema, missing fields, wrong types)."""


@dataclass(frozen=True)
class ModelSpec:
    """What a consumer must know to use a groove model without its training code."""

    steps_per_bar: int = 16
    bars: int = 4
    beats_per_bar: int = 4
    drums: tuple[DrumClass, ...] = GROOVAE_DRUMS
    z_size: int = 256
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

    # --- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["drums"] = [dataclasses.asdict(x) for x in self.drums]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        if not isinstance(d, dict):
            raise SpecError("model spec is not a JSON object")
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            raise SpecError(
                f"model spec schema {version!r} is not supported (this groove-live reads "
                f"schema {SCHEMA_VERSION})"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        kwargs = {k: v for k, v in d.items() if k in known}
        try:
            kwargs["drums"] = tuple(
                DrumClass(str(x["name"]), int(x["out_pitch"]), tuple(int(p) for p in x["in_pitches"]))
                for x in d["drums"]
            )
            for name in ("decoder_inputs", "decoder_outputs", "encoder_inputs", "encoder_outputs"):
                if name in kwargs:
                    kwargs[name] = tuple(str(x) for x in kwargs[name])
            spec = cls(**kwargs)
        except (KeyError, TypeError, ValueError) as e:
            raise SpecError(f"model spec is malformed: {e}") from None
        if unknown:
            # Forward-compatible within a schema version: keep what we don't know.
            spec = dataclasses.replace(spec, extra={**spec.extra, **{k: d[k] for k in unknown}})
        spec.validate()
        return spec

    @classmethod
    def from_json(cls, text: str) -> "ModelSpec":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise SpecError(f"model spec is not valid JSON: {e}") from None
        return cls.from_dict(d)

    def validate(self) -> None:
        if self.steps_per_bar <= 0 or self.bars <= 0 or self.z_size <= 0:
            raise SpecError("model spec has non-positive sizes")
        if self.steps_per_bar % self.beats_per_bar:
            raise SpecError("steps_per_bar must be a multiple of beats_per_bar")
        if not self.drums:
            raise SpecError("model spec has no drum classes")
        if self.continuous_head not in ("mean", "gaussian"):
            raise SpecError(f"unknown continuous_head {self.continuous_head!r}")
        for pitch in self.out_pitches:
            if not 0 <= pitch <= 127:
                raise SpecError(f"drum pitch {pitch} outside MIDI range")


DEFAULT_SPEC = ModelSpec()
