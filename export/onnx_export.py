"""A run folder -> a self-describing, self-checked ONNX decoder and encoder for the runtime.

Writes MODEL.onnx (the decoder: z, temperature and noise, plus a task model's input pattern ->
hits, velocities, offsets for every step) and MODEL.encoder.onnx (pattern -> mu, sigma), both
with dynamic batch and the ModelSpec JSON in their metadata. How the decoder is built depends on
the spec's kind (DECODER_EXPORTS); the encoder is the same for every kind that has one. A kind
whose spec names no encoder tensors (a pitched harmonizer: a GAN has no encoder) gets the
decoder file only, and its metadata names no encoder. Before anything is moved into place, the
files are loaded by the runtime's own Engine (spec and shape checks included) and compared with
the torch model.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import onnx
import torch

from groove_live import atomic_io
from groove_live.engine import Engine, EngineError, decode_path, encoder_path_for
from groove_live.ort import ort as onnxruntime  # telemetry off before import (see ort.py)
from groove_live.spec import (ENCODER_KEY, EXPORT_KEY, METADATA_KEY, ROLE_KEY, VARIANT_KEY,
                              ModelSpec)

from ..train.average import averaged_steps, describe_average
from ..train.calibrate import CalibrationError, calibration_for
from ..train.run import RunError, load_model, weights_path
from .decoder_graph import OPSET, VARIANTS, build_decoder
from .traced_graph import build_traced_decoder
from .verify import VerificationError, compare_variant, median_latency_s, verify_against_torch

ROUTE = "hand-built Scan over steps (layer 0 z-share precomputed, LSTM ops above)"


@dataclass(frozen=True)
class DecoderExport:
    """How one spec kind's decoder becomes ONNX: build(model, spec, variant) and what it offers."""
    build: Callable
    route: str
    variants: tuple[str, ...]
    describe: Callable[[onnx.ModelProto], str]  # the graph's size, for the log


def _loop_size(graph: onnx.ModelProto) -> str:
    return (f"{len(graph.graph.node)} nodes, "
            f"{sum(len(a.g.node) for n in graph.graph.node for a in n.attribute if a.g.node)}"
            f" per step")


def _unrolled_size(graph: onnx.ModelProto) -> str:
    lstm = sum(node.op_type == "LSTM" for node in graph.graph.node)
    return f"{len(graph.graph.node)} nodes (the step loop unrolled), {lstm} LSTM nodes"


# The decoder export of each model kind; a new kind adds a line (see docs/adding-a-model.md).
DECODER_EXPORTS = {
    "groovae": DecoderExport(lambda model, spec, variant: build_decoder(model.decoder, spec,
                                                                        variant),
                             ROUTE, VARIANTS, _loop_size),
    # Task models are fp32 only for now: an int8 decoder would need its own tolerance check
    # against fp32 (the int8 route above is built for GrooVAE's step loop), and its speed-up
    # is unmeasured.
    "conditioned": DecoderExport(lambda model, spec, variant: build_traced_decoder(
                                     model, spec, f"{spec.task}_decoder"),
                                 "torch.onnx TorchScript export of ConditionedVAE.sample "
                                 "(one bidirectional LSTM pass)", ("fp32",),
                                 lambda graph: f"{len(graph.graph.node)} nodes, no step loop"),
    # MusicVAE drums: the traced step loop unrolls (its LSTM cells written out as matrix
    # products, train/categorical.py ClassDecoder.sample; export/traced_graph.py). fp32
    # only: an int8 class decoder would need its own check of how often the drawn class
    # changes against fp32, and its speed-up is unmeasured.
    "categorical": DecoderExport(lambda model, spec, variant: build_traced_decoder(
                                     model, spec, f"{spec.model_name}_decoder"),
                                 "torch.onnx TorchScript export of CategoricalVAE.sample "
                                 "(the step loop unrolled)", ("fp32",), _unrolled_size),
    "hierarchical": DecoderExport(lambda model, spec, variant: build_traced_decoder(
                                      model, spec, f"{spec.model_name}_decoder"),
                                  "torch.onnx TorchScript export of HierarchicalVAE.sample "
                                  "(conductor, then one bar's step loop unrolled, bars side by "
                                  "side)", ("fp32",), _unrolled_size),
    # The harmonizer GAN's generator (a U-Net of convolutions, no loop). fp32 only: an int8
    # generator would need its own check of how often a voice's pitch changes against fp32.
    "pitched": DecoderExport(lambda model, spec, variant: build_traced_decoder(
                                 model, spec, f"{spec.model_name}_generator", method="forward"),
                             "torch.onnx TorchScript export of ChoraleGAN's generator (U-Net "
                             "convolutions, no loop)", ("fp32",),
                             lambda graph: f"{len(graph.graph.node)} nodes, no step loop"),
}


def has_encoder(spec: ModelSpec) -> bool:
    """Whether the kind has an encoder graph to export (a pitched GAN names no encoder
    tensors)."""
    return bool(spec.encoder_inputs)


class ExportError(ValueError):
    """Bad export input (missing run, inconsistent config, unknown variant): one clear line."""


@dataclass
class ExportResult:
    decoder_path: Path
    encoder_path: Path | None  # None for a kind without an encoder (pitched)
    spec: ModelSpec
    checks: dict
    variant: str = "fp32"
    variant_checks: dict = field(default_factory=dict)
    seconds: float = 0.0


def _load(run_dir: Path, which: str):
    """The model rebuilt from its checkpoint's own spec (nothing to reconcile afterwards)."""
    try:
        model, cfg, spec = load_model(run_dir, which)
        source = weights_path(run_dir, which)
        decode_path(spec, source)  # only kinds the runtime can decode are worth exporting
        if spec.kind not in DECODER_EXPORTS:
            raise ExportError(f"{source}: a {spec.kind!r} model, which groove-export cannot "
                              f"export (it exports: {', '.join(DECODER_EXPORTS)})")
    except RunError as e:  # load_model reads weights only as plain data, and turns a torn,
        # foreign or code-carrying file, or weights that do not fit their spec, into one line
        raise ExportError(str(e)) from None
    except EngineError as e:
        raise ExportError(str(e)) from None
    return model, cfg, _calibrated(model, spec, run_dir), source


def _calibrated(model, spec: ModelSpec, run_dir: Path) -> ModelSpec:
    """A task model's hit threshold from RUN/calibration.json (train/calibrate.py), applied to
    the model before tracing and recorded in the spec's extra; the spec unchanged without one."""
    if spec.kind != "conditioned":
        return spec
    try:
        calibration = calibration_for(run_dir, spec.run_id)
    except CalibrationError as e:
        raise ExportError(str(e)) from None
    if calibration is None:
        return spec
    model.hit_bias.fill_(calibration["hit_bias"])
    return spec.replace(extra={**spec.extra, "hit_threshold": calibration})


def _encoder_model(model, spec: ModelSpec) -> onnx.ModelProto:
    """The encoder through torch's TorchScript exporter: one bidirectional LSTM op, fine as is."""
    buffer = io.BytesIO()
    example = torch.zeros(2, spec.steps, spec.step_size)
    names = (*spec.encoder_inputs, *spec.encoder_outputs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and RNN notes
        torch.onnx.export(model.encoder.eval(), (example,), buffer, dynamo=False,
                          opset_version=OPSET, input_names=list(spec.encoder_inputs),
                          output_names=list(spec.encoder_outputs),
                          dynamic_axes={name: {0: "batch"} for name in names})
    return onnx.load_from_string(buffer.getvalue())


def _describe(model: onnx.ModelProto, spec: ModelSpec, role: str, extra: dict[str, str]) -> None:
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {METADATA_KEY: spec.to_json(), ROLE_KEY: role, **extra})
    model.doc_string = (f"groove-live {spec.model_name} {role} ({spec.preset}, run "
                        f"{spec.run_id}); the spec JSON is under metadata '{METADATA_KEY}'")


def _cannot_write(path: Path, e: OSError) -> ExportError:
    return ExportError(f"{path}: cannot write ({e.strerror or type(e).__name__})")


def _save(model: onnx.ModelProto, staged: Path, final: Path) -> None:
    """Write a graph into the staging folder; a failure (a full disk) names the file it was for."""
    try:
        onnx.save(model, staged)
    except OSError as e:
        raise _cannot_write(final, e) from None


def default_out_path(run_dir: str | Path, spec: ModelSpec, variant: str) -> Path:
    """Where an export goes unless told: inside its run folder, named by model and variant
    (RUN/groovae.int8.onnx), so exports never litter the current folder or overwrite each
    other."""
    return Path(run_dir) / f"{spec.model_name}.{variant}.onnx"


def export_run(run_dir: str | Path, out_path: str | Path | None = None, which: str = "best",
               variant: str = "fp32", log: Callable[[str], None] | None = None) -> ExportResult:
    """Export, verify, then move into place. Nothing is written at out_path on failure.
    out_path None: `default_out_path` in the run folder."""
    log = log or (lambda message: None)
    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    if variant not in VARIANTS:
        raise ExportError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    if out_path is not None and Path(out_path).suffix != ".onnx":
        raise ExportError(f"{out_path}: the model path must end in .onnx")
    stages = 5 if variant == "fp32" else 6

    model, cfg, spec, source = _load(run_dir, which)
    how = DECODER_EXPORTS[spec.kind]
    if variant not in how.variants:
        raise ExportError(f"{source}: a {spec.task or spec.kind} model exports as "
                          f"{', '.join(how.variants)} only, not {variant}")
    out_path = Path(out_path) if out_path is not None else default_out_path(run_dir, spec, variant)
    log(f"[1/{stages}] run {run_dir}: {source.name} ({spec.run_id}), preset {spec.preset or '?'}"
        f", kind {spec.kind}"
        + (f", {cfg.continuous_head} head" if spec.kind in ("groovae", "conditioned") else "")
        + (f", z {cfg.z_size} per bottleneck cell, generator {list(cfg.enc_rnn_sizes)}"
           if spec.kind == "pitched" else f", z {cfg.z_size}, decoder {list(cfg.dec_rnn_sizes)}")
        + (f", hit threshold bias {spec.extra['hit_threshold']['hit_bias']:g} at T = 0 "
           f"(calibration.json)" if "hit_threshold" in spec.extra else ""))

    averaged = averaged_steps(run_dir, source)
    if averaged:
        log(f"[1/{stages}] {source.name} is {describe_average(averaged)} (averaged.json)")
    info = {"route": how.route, "source": f"{run_dir.resolve().name}/{source.name}"
            + (f" ({describe_average(averaged)})" if averaged else ""),
            "exported": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "opset": OPSET}
    encoder_path = encoder_path_for(out_path) if has_encoder(spec) else None
    decoder_meta = {EXPORT_KEY: json.dumps(info, sort_keys=True)}
    if encoder_path is not None:  # no encoder named: the engine then looks for none
        decoder_meta[ENCODER_KEY] = encoder_path.name
    decoder = how.build(model, spec, "fp32")
    _describe(decoder, spec, "decoder", {**decoder_meta, VARIANT_KEY: "fp32"})
    log(f"[2/{stages}] decoder graph: {how.describe(decoder)}")
    encoder = None
    if encoder_path is not None:
        encoder = _encoder_model(model, spec)
        _describe(encoder, spec, "encoder", {EXPORT_KEY: json.dumps(info, sort_keys=True)})
        log(f"[3/{stages}] encoder graph: {len(encoder.graph.node)} nodes")
    else:
        log(f"[3/{stages}] encoder graph: none (a {spec.kind} model has no encoder)")

    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        # Staged beside the targets: the final renames stay on one filesystem, so atomic.
        staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out_path.parent))
    except OSError as e:
        raise _cannot_write(out_path, e) from None
    try:
        staged = staging / out_path.name
        _save(decoder, staged, out_path)
        if encoder is not None:
            _save(encoder, staging / encoder_path.name, encoder_path)
        try:
            reference = Engine.load(staged)
            checks = verify_against_torch(reference, model)
        except (EngineError, VerificationError) as e:
            raise VerificationError(f"export failed its check: {e}") from None
        if "rolls_max_abs" in checks:
            log(f"[4/{stages}] verified in onnxruntime: {checks['decoded']} melodies, rolls "
                f"{checks['rolls_max_abs']:.1e} (max abs, tolerance 1e-4), "
                f"{checks['pitch_mismatches']} of {checks['pitch_cells']} voice pitches differ")
        else:
            log(f"[4/{stages}] verified in onnxruntime: {checks['decoded']} patterns, "
                f"{checks['hit_mismatches']} of {checks['hit_cells']} hits differ, velocity "
                f"{checks['velocity_max_abs']:.1e}, offset {checks['offset_max_abs']:.1e}, "
                f"mu {checks.get('mu_max_abs', float('nan')):.1e}, sigma "
                f"{checks.get('sigma_max_abs', float('nan')):.1e} (max abs, tolerance 1e-4)")

        variant_checks: dict = {}
        if variant != "fp32":
            try:
                quantized = how.build(model, spec, variant)
            except ValueError as e:
                raise ExportError(f"{run_dir}: {e}") from None
            _describe(quantized, spec, "decoder", {**decoder_meta, VARIANT_KEY: variant})
            reference_path = staging / ("fp32-" + out_path.name)
            os.replace(staged, reference_path)
            _save(quantized, staged, out_path)
            reference = Engine.load(reference_path)
            try:
                candidate = Engine.load(staged)
                variant_checks = compare_variant(reference, candidate)
            except (EngineError, VerificationError) as e:
                raise VerificationError(f"export failed its check: {e}") from None
            p50 = {b: median_latency_s({"fp32": reference, variant: candidate}, b)
                   for b in (1, 32)}
            variant_checks.update({f"p50_ms_batch{b}_{k}": round(v * 1e3, 3)
                                   for b, d in p50.items() for k, v in d.items()})
            speedup = p50[1]["fp32"] / p50[1][variant]
            variant_checks["speedup_batch1"] = round(speedup, 2)
            log(f"[5/{stages}] {variant} vs fp32 on shared latents and noise, from the same "
                f"history: hit flips {variant_checks['hit_flip_rate']:.4f}, velocity MAE "
                f"{variant_checks['velocity_mae']:.4f}, offset MAE "
                f"{variant_checks['offset_mae']:.4f} (within tolerance); whole patterns "
                f"{variant_checks['identical_patterns']:.0%} identical, hit rate "
                f"{variant_checks['hit_rate'][1]:.3f} vs {variant_checks['hit_rate'][0]:.3f}; "
                f"CPU p50 batch 1 "
                f"{p50[1][variant] * 1e3:.2f} vs {p50[1]['fp32'] * 1e3:.2f} ms, batch 32 "
                f"{p50[32][variant] * 1e3:.1f} vs {p50[32]['fp32'] * 1e3:.1f} ms"
                + ("" if speedup > 1.0 else "; NOT faster here: prefer fp32"))
            reference_path.unlink()

        moves = [(staged, out_path)]
        if encoder_path is not None:
            moves.append((staging / encoder_path.name, encoder_path))
        for staged_file, final in moves:
            try:
                atomic_io.replace(staged_file, final)  # fsync, rename, fsync the folder
            except OSError as e:
                raise _cannot_write(final, e) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    size_mb = (out_path.stat().st_size
               + (encoder_path.stat().st_size if encoder_path is not None else 0)) / 1e6
    seconds = time.perf_counter() - t0
    log(f"[{stages}/{stages}] wrote {out_path}"
        + (f" + {encoder_path.name}" if encoder_path is not None else " (no encoder)")
        + f" ({size_mb:.1f} MB, {variant}) in {seconds:.1f} s")
    return ExportResult(out_path, encoder_path, spec, checks, variant, variant_checks, seconds)
