"""Frozen model and training configs, and the named presets that mirror the seeds.

The data's shape (kind, bars, steps per bar, drum voices, controls) is not restated here: a
preset names its spec fields and the model is built from (spec, ModelConfig). ModelConfig holds
only the network's hyper-parameters; z_size and continuous_head are copied into the spec by
`spec_for`, the one place a training spec is made.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from groove_live.spec import DEFAULT_SPEC, TASK_CONTROL, Control, ModelSpec


@dataclass(frozen=True)
class ModelConfig:
    enc_rnn_sizes: tuple[int, ...] = (512,)  # bidirectional: units per direction
    dec_rnn_sizes: tuple[int, ...] = (256, 256)
    z_size: int = 256
    # Probability of dropping an LSTM input unit. Magenta's keep_prob 0.3 means p = 0.7.
    dropout: float = 0.7
    # "mean": velocity/offset regress to the mean with MSE (Magenta). "gaussian": a learned
    # per-cell Gaussian (NLL on true hits) that sampling draws from, to keep the groove's spread.
    continuous_head: str = "mean"
    free_bits: float = 48.0  # in bits, over the whole z (not per dimension)
    beta: float = 0.2
    # Scheduled sampling (categorical kinds): k of Magenta's inverse-sigmoid schedule, the share
    # of decoder inputs taken from the model's own draws being 1 - k / (k + exp(step / k));
    # 0 = always teacher forcing.
    sampling_rate: float = 0.0
    # The hierarchical model's conductor LSTM (one step per bar); empty for every other kind.
    conductor_rnn_sizes: tuple[int, ...] = ()
    # Task models: weight of the "centre" term, the squared error of the velocity and timing
    # decoded at z = 0 (the prior's centre, what temperature 0 plays) against the played take.
    # It makes the centre the score's expected performance (a regression to the conditional
    # mean), which the VAE terms alone do not: they train the decoder on posterior latents,
    # where z already says how this take was played. 0 = off (the models trained before it).
    centre_weight: float = 0.0

    @property
    def free_nats(self) -> float:
        return self.free_bits * math.log(2.0)


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 512
    learning_rate: float = 1e-3
    min_learning_rate: float = 1e-5
    decay_rate: float = 0.9999  # lr = (lr0 - lr_min) * decay_rate ** step + lr_min
    grad_clip_norm: float = 1.0
    grad_norm_reset: float = 1e4  # Magenta zeroes the update when the global norm exceeds this
    max_steps: int = 50_000
    max_minutes: float = 0.0  # 0 = no wall-clock limit
    eval_every: int = 200
    eval_batches: int = 0  # 0 = the whole validation split
    checkpoint_every: int = 200
    keep_last: int = 3
    log_every: int = 10
    seed: int = 1234


# Spec fields of the 4-bar GrooVAE presets: the data every one of them reads and writes.
GROOVAE_4BAR = {"kind": "groovae", "bars": 4, "steps_per_bar": 16}
# GrooVAE's task models read 2-bar windows, as Magenta's task models (groovae_2bar_humanize,
# _tap_fixed_velocity, _add_closed_hh) do: a live coder's loop is one or two bars (a 1-bar
# pattern is repeated), two bars of taps are quick to play in, and a shorter phrase means a
# request is heard sooner (the next 2-bar boundary rather than the next 4-bar one).
TASK_BARS = 2


def task_fields(task: str) -> dict:
    """Spec fields of a task model: kind "conditioned", its task, the task's one control."""
    n_voices = DEFAULT_SPEC.n_drums
    return {"kind": "conditioned", "task": task, "bars": TASK_BARS, "steps_per_bar": 16,
            "controls": (Control(TASK_CONTROL, 3 * n_voices),)}


@dataclass(frozen=True)
class Preset:
    name: str
    model: ModelConfig
    train: TrainConfig
    # ModelSpec fields fixing the data's shape; the drum voices are the spec's default map.
    spec_fields: dict = field(default_factory=lambda: dict(GROOVAE_4BAR), hash=False)
    # The exported file's name (NAME.onnx) and the name `--model NAME` finds it by.
    model_name: str = "groovae"

    def spec(self, model: ModelConfig | None = None, **fields) -> ModelSpec:
        """The spec of a model trained with this preset (and `model`, default its own)."""
        return spec_for(model or self.model, DEFAULT_SPEC.replace(**self.spec_fields),
                        preset=self.name, **fields)


PRESETS: dict[str, Preset] = {
    # The original GrooVAE sizes (~4.1 M parameters).
    "groovae_4bar": Preset("groovae_4bar", ModelConfig(), TrainConfig()),
    # ~1 M parameters, trainable on 2 CPU cores in an hour. Lighter dropout than the original
    # 0.7: at CPU budgets (tens of epochs) heavier dropout costs more than it saves. Measured
    # (Gaussian head, 2 threads): at step 4,800 validation loss was 67.9 with 0.3 and 74.5 with
    # 0.5. With 0.3 the train/validation gap opens from ~2,000 steps, yet validation loss keeps
    # improving slowly to ~7,000 steps; that is where the bundled model is selected.
    "groovae_4bar_small": Preset(
        "groovae_4bar_small",
        ModelConfig(enc_rnn_sizes=(256,), dec_rnn_sizes=(128, 128), z_size=128, dropout=0.3),
        TrainConfig(batch_size=128),
    ),
    # For tests and smoke runs: seconds on a laptop. Validation every 100 steps on 4 batches:
    # the whole GMD validation split every 5 steps made 300 steps take minutes.
    "groovae_tiny": Preset(
        "groovae_tiny",
        ModelConfig(enc_rnn_sizes=(32,), dec_rnn_sizes=(32, 32), z_size=16, dropout=0.0),
        TrainConfig(batch_size=16, eval_every=100, eval_batches=4, checkpoint_every=100,
                    log_every=10),
    ),
}


# Task models (humanize, drumify, infill): a conditional VAE with a bidirectional decoder (see
# train/conditioned.py); the Gaussian head, so sampled velocity and timing keep a drummer's spread
# instead of regressing to the mean.
def _task_presets() -> dict[str, Preset]:
    presets = {}
    for task in ("humanize", "drumify", "infill"):
        fields = task_fields(task)
        # Humanize is scored on how close its temperature-0 take comes to the drummer's; the
        # centre term trains that take to the score's expected one (train/conditioned.py).
        # Weight 10: its pull on a mean is then about the Gaussian heads' (whose gradient is
        # scaled by 1 / std^2, ~0.07 of a step for timing).
        centre = 10.0 if task == "humanize" else 0.0
        # GrooVAE's sizes, for a GPU.
        presets[f"groovae_2bar_{task}"] = Preset(
            f"groovae_2bar_{task}",
            ModelConfig(continuous_head="gaussian", centre_weight=centre), TrainConfig(),
            fields, model_name=task)
        # Trains on 2 CPU cores in well under 90 minutes (see MODEL_CARD.md for the runs).
        presets[f"groovae_2bar_{task}_small"] = Preset(
            f"groovae_2bar_{task}_small",
            ModelConfig(enc_rnn_sizes=(128,), dec_rnn_sizes=(128, 128), z_size=32, dropout=0.2,
                        continuous_head="gaussian", free_bits=16.0, centre_weight=centre),
            TrainConfig(batch_size=128, max_steps=4000, eval_every=250, eval_batches=8,
                        checkpoint_every=250),
            fields, model_name=task)
        presets[f"groovae_2bar_{task}_tiny"] = Preset(
            f"groovae_2bar_{task}_tiny",
            ModelConfig(enc_rnn_sizes=(16,), dec_rnn_sizes=(16,), z_size=8, dropout=0.0,
                        continuous_head="gaussian"),
            TrainConfig(batch_size=16, eval_every=100, eval_batches=4, checkpoint_every=100,
                        log_every=10),
            fields, model_name=task)
    return presets


PRESETS.update(_task_presets())


# MusicVAE's drum models (train/categorical.py, train/hierarchical.py): quantized hits, one class
# out of 2^9 per step. "Paper" presets have Magenta's sizes (for a GPU); "_cpu" ones train on 2
# CPU cores in under 90 minutes and are sized so their exported files fit the wheel's budget
# (about 3 MB each in fp32); "_tiny" ones are for tests.
CAT_2BAR = {"kind": "categorical", "bars": 2, "steps_per_bar": 16}
FLAT_16BAR = {"kind": "categorical", "bars": 16, "steps_per_bar": 16}
HIER_16BAR = {"kind": "hierarchical", "bars": 16, "steps_per_bar": 16}
_TINY_TRAIN = TrainConfig(batch_size=16, eval_every=100, eval_batches=4, checkpoint_every=100,
                          log_every=10)


def _musicvae_presets() -> dict[str, Preset]:
    return {
        # Magenta's cat-drums_2bar_small: BiLSTM 512, decoder 2 x 256, z 256, free bits 48,
        # beta 0.2, no dropout, inverse-sigmoid scheduled sampling with rate 1000, batch 512.
        "cat_drums_2bar_small": Preset(
            "cat_drums_2bar_small",
            ModelConfig(enc_rnn_sizes=(512,), dec_rnn_sizes=(256, 256), z_size=256, dropout=0.0,
                        sampling_rate=1000.0),
            TrainConfig(), dict(CAT_2BAR), model_name="cat_drums_2bar"),
        "cat_drums_2bar_cpu": Preset(
            "cat_drums_2bar_cpu",
            ModelConfig(enc_rnn_sizes=(192,), dec_rnn_sizes=(128, 128), z_size=128, dropout=0.0,
                        sampling_rate=1000.0),
            TrainConfig(batch_size=128, max_steps=8000, eval_every=250, eval_batches=8,
                        checkpoint_every=250),
            dict(CAT_2BAR), model_name="cat_drums_2bar"),
        "cat_drums_2bar_tiny": Preset(
            "cat_drums_2bar_tiny",
            ModelConfig(enc_rnn_sizes=(16,), dec_rnn_sizes=(16,), z_size=8, dropout=0.0,
                        sampling_rate=100.0),
            _TINY_TRAIN, dict(CAT_2BAR), model_name="cat_drums_2bar"),
        # The paper's hierarchical model: encoder 2-layer BiLSTM 2048, z 512, conductor and
        # bottom decoder 2 x 1024, free bits 256 (Magenta's hierdec configs).
        "hierdec_drums_16bar": Preset(
            "hierdec_drums_16bar",
            ModelConfig(enc_rnn_sizes=(2048, 2048), dec_rnn_sizes=(1024, 1024), z_size=512,
                        dropout=0.0, free_bits=256.0, conductor_rnn_sizes=(1024, 1024)),
            TrainConfig(batch_size=256), dict(HIER_16BAR), model_name="hierdec_drums_16bar"),
        "hierdec_drums_16bar_cpu": Preset(
            "hierdec_drums_16bar_cpu",
            ModelConfig(enc_rnn_sizes=(160,), dec_rnn_sizes=(128, 128), z_size=128, dropout=0.0,
                        free_bits=64.0, conductor_rnn_sizes=(128,)),
            TrainConfig(batch_size=64, max_steps=8000, eval_every=250, eval_batches=8,
                        checkpoint_every=250),
            dict(HIER_16BAR), model_name="hierdec_drums_16bar"),
        "hierdec_drums_16bar_tiny": Preset(
            "hierdec_drums_16bar_tiny",
            ModelConfig(enc_rnn_sizes=(16,), dec_rnn_sizes=(16,), z_size=8, dropout=0.0,
                        conductor_rnn_sizes=(16,)),
            _TINY_TRAIN, dict(HIER_16BAR), model_name="hierdec_drums_16bar"),
        # The flat 16-bar baseline of the paper's comparison: the same encoder and bottom
        # decoder size, one decoder over all 256 steps, no conductor.
        "flat_drums_16bar": Preset(
            "flat_drums_16bar",
            ModelConfig(enc_rnn_sizes=(2048, 2048), dec_rnn_sizes=(1024, 1024), z_size=512,
                        dropout=0.0, free_bits=256.0),
            TrainConfig(batch_size=256), dict(FLAT_16BAR), model_name="flat_drums_16bar"),
        "flat_drums_16bar_cpu": Preset(
            "flat_drums_16bar_cpu",
            ModelConfig(enc_rnn_sizes=(160,), dec_rnn_sizes=(128, 128), z_size=128, dropout=0.0,
                        free_bits=64.0),
            TrainConfig(batch_size=64, max_steps=8000, eval_every=250, eval_batches=8,
                        checkpoint_every=250),
            dict(FLAT_16BAR), model_name="flat_drums_16bar"),
        "flat_drums_16bar_tiny": Preset(
            "flat_drums_16bar_tiny",
            ModelConfig(enc_rnn_sizes=(16,), dec_rnn_sizes=(16,), z_size=8, dropout=0.0),
            _TINY_TRAIN, dict(FLAT_16BAR), model_name="flat_drums_16bar"),
    }


PRESETS.update(_musicvae_presets())


class PresetError(ValueError):
    """An unknown preset name: one line listing the known ones."""


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise PresetError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None


def spec_for(model: ModelConfig, data: ModelSpec = DEFAULT_SPEC, **fields) -> ModelSpec:
    """The runtime spec of a model with this config reading data of `data`'s shape."""
    spec = data.replace(z_size=model.z_size, continuous_head=model.continuous_head, **fields)
    spec.validate()
    return spec


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


# ModelConfig fields of older run folders that the spec now states; ignored when read.
LEGACY_SHAPE_FIELDS = ("steps_per_bar", "bars", "n_drums")


def model_config_from_dict(d: dict) -> ModelConfig:
    d = {k: v for k, v in d.items() if k not in LEGACY_SHAPE_FIELDS}
    for key in ("enc_rnn_sizes", "dec_rnn_sizes", "conductor_rnn_sizes"):
        if key in d:
            d[key] = tuple(d[key])
    return ModelConfig(**d)


def train_config_from_dict(d: dict) -> TrainConfig:
    return TrainConfig(**d)


# The chorale harmonizer (train/chorale_gan.py): a conditional WGAN-GP writing alto, tenor and
# bass under a soprano melody, 2 bars of 16ths. ModelConfig has no GAN fields, so the model reads
# enc_rnn_sizes as the generator's four down-block filters, dec_rnn_sizes as the critic's conv
# filters and z_size as the noise channels per bottleneck cell (2 x 8 cells); the other fields
# are unused. The learning rate stays constant (decay_rate 1); Adam's betas, 5 critic updates
# per step and the penalty weight 10 are the model's constants. A step is one generator update
# and takes 6 batches (5 for the critic, 1 for the generator).
def _chorale_fields() -> dict:
    from groove_live.chorale import VOICE_RANGES
    from groove_live.spec import Voice, pitched_fields
    # MIDI channels 1-3 (0-based), the soprano's channel 0 left to the user's melody.
    voices = tuple(Voice(name, channel, *VOICE_RANGES[name])
                   for channel, name in enumerate(("alto", "tenor", "bass"), start=1))
    return {**pitched_fields(voices), "bars": 2, "steps_per_bar": 16, "beats_per_bar": 4}


CHORALE_2BAR = _chorale_fields()


def _chorale_gan(name: str, filters: tuple[int, ...], z_size: int, train: TrainConfig) -> Preset:
    return Preset(name, ModelConfig(enc_rnn_sizes=filters, dec_rnn_sizes=filters, z_size=z_size,
                                    dropout=0.0),
                  train, dict(CHORALE_2BAR), model_name="chorale_harmonizer")


_GAN_TRAIN = TrainConfig(batch_size=64, learning_rate=1e-3, min_learning_rate=0.0, decay_rate=1.0,
                         max_steps=20_000, eval_every=250, eval_batches=4, checkpoint_every=250)
PRESETS.update({
    # The seed's sizes: filters 64..512, noise (2, 8, 512); ~11 M parameters, for a GPU.
    "chorale_wgan_gp": _chorale_gan("chorale_wgan_gp", (64, 128, 256, 512), 512, _GAN_TRAIN),
    # Trains on 2 CPU cores within 90 minutes: a quarter of the filters and of the noise
    # (~0.7 M parameters) and batches of 16. Measured with one thread on a loaded 2-core
    # machine: 1.0 s per step (the seed's sizes at batch 64: 35 s), so 4,000 steps take about
    # 67 minutes; the time budget stops it at 85 minutes whatever the machine.
    "chorale_wgan_gp_cpu": _chorale_gan(
        "chorale_wgan_gp_cpu", (16, 32, 64, 128), 128,
        dataclasses.replace(_GAN_TRAIN, batch_size=16, max_steps=4000, max_minutes=85.0,
                            eval_every=200, eval_batches=2, checkpoint_every=200)),
    "chorale_wgan_gp_tiny": _chorale_gan(
        "chorale_wgan_gp_tiny", (4, 4, 8, 8), 4,
        dataclasses.replace(_TINY_TRAIN, batch_size=4, learning_rate=1e-3, min_learning_rate=0.0,
                            decay_rate=1.0)),
})
