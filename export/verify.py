"""Export's self-check: exported files against the torch model, and a variant against fp32."""
from __future__ import annotations

import time

import numpy as np
import torch

from groove_live.chorale import REST, VOICE_RANGES, melody_roll, roll_to_voices
from groove_live.engine import Engine
from groove_live.pattern import Patterns
from groove_live.transforms import FIXED_VELOCITY, generated_voices, task_input

CONTINUOUS_TOLERANCE = 1e-4  # fp32 graph vs torch: velocities, offsets, mu, sigma, rolls
# A task model is checked at these temperatures: 0 (the most likely pattern, no noise at all),
# and two where the noise is drawn, so a graph that drops or misscales it is caught.
TASK_TEMPERATURES = (0.0, 0.5, 1.0)
# A quantized variant decodes other patterns than fp32 once a hit flips (the flip is fed back,
# and from there on the two patterns differ), so it is compared on shared latents and noise
# over each pattern's shared history only: the steps up to and including its first flip.
# There a hit decision flips when the uniform noise falls between the two hit probabilities,
# so the flip rate estimates how far quantization moved the hit probabilities.
# A categorical model's step draws one of 2^voices classes by inverse CDF: u times the total of
# the tempered class weights, compared with their running sum (the argmax at temperature 0).
# The running sum is computed to the same bits in both (train/categorical.py draw_class), but
# the logits differ by float rounding (~1e-6; onnxruntime's and torch's matrix products sum in
# other orders), so when u falls that close to a class boundary, or two logits nearly tie at
# T = 0, the class can differ, and from there on the pattern does (the class is fed back). On
# the bundled 16-bar model that is ~1 phrase in 300 at T = 1: a handful of diverged patterns
# says nothing; more than this share of the decoded patterns does.
CLASS_MAX_DIVERGED_SHARE = 0.03  # 1 of the 48 patterns a default check decodes
VARIANT_MAX_HIT_FLIP_RATE = 0.005  # of hit decisions made from the same history
VARIANT_MAX_VELOCITY_MAE = 0.01  # ~1.3 MIDI velocity units, on hits both make from it
VARIANT_MAX_OFFSET_MAE = 0.01  # of a step (~1.3 ms at 120 bpm), likewise


class VerificationError(AssertionError):
    """The exported file does not compute what the torch model computes."""


def _random_patterns(n: int, engine: Engine, rng: np.random.Generator) -> Patterns:
    shape = (n, engine.spec.steps, engine.spec.n_drums)
    hits = (rng.random(shape) < 0.2).astype(np.float32)
    return Patterns(hits, rng.random(shape, dtype=np.float32),
                    rng.uniform(-0.5, 0.49, shape).astype(np.float32)).cleaned()


def verify_against_torch(engine: Engine, model, n: int = 16, seed: int = 0) -> dict:
    """Decode fixed latents with fixed noise at several temperatures, encode fixed patterns,
    and compare with the torch model: hits identical, continuous values within tolerance.
    Each model kind has its own decoder check (VERIFIERS); the encoder's is shared."""
    return VERIFIERS[engine.spec.kind](engine, model, n, seed)


def decode_both_groovae(engine: Engine, model, temperature: np.ndarray,
                        rng: np.random.Generator):
    """(onnxruntime's Patterns, torch's [hits, velocities, offsets] arrays) of a sampling
    GrooVAE decoding the same random z, per-pattern temperatures and noise."""
    n = len(temperature)
    z = rng.standard_normal((n, engine.spec.z_size)).astype(np.float32)
    hit_noise, cont_noise = engine.noise(n, rng)
    got = engine.decode_noise(z, temperature, hit_noise, cont_noise)
    with torch.no_grad():
        ref = [t.numpy() for t in model.decoder.sample(
            torch.from_numpy(z), torch.from_numpy(temperature)[:, None],
            hit_noise=torch.from_numpy(hit_noise), cont_noise=torch.from_numpy(cont_noise))]
    return got, ref


def _verify_groovae(engine: Engine, model, n: int, seed: int) -> dict:
    spec = engine.spec
    rng = np.random.default_rng(seed)
    got, ref = decode_both_groovae(engine, model,
                                   np.linspace(0.25, 1.5, n).astype(np.float32), rng)
    shapes = spec.io_shapes(n)
    for (name, want), array in zip(shapes["decoder_outputs"].items(),
                                   (got.hits, got.velocities, got.offsets)):
        if array.shape != want:
            raise VerificationError(f"decoder output {name} is {array.shape}, the spec says {want}")
    flips = int((got.hits != ref[0]).sum())
    report = {
        "decoded": n, "hit_cells": int(ref[0].size), "hit_mismatches": flips,
        "hit_rate": round(float(ref[0].mean()), 4),
        "velocity_max_abs": float(np.abs(got.velocities - ref[1]).max()),
        "offset_max_abs": float(np.abs(got.offsets - ref[2]).max()),
    }
    _verify_encoder(engine, model, n, rng, report)
    if flips:
        raise VerificationError(f"{flips} of {ref[0].size} hits differ from torch")
    _check_tolerance(report)
    return report


def _verify_encoder(engine: Engine, model, n: int, rng: np.random.Generator,
                    report: dict) -> None:
    """Encode fixed played patterns in both; adds mu/sigma max abs differences to `report`."""
    if not engine.has_encoder:
        return
    shapes = engine.spec.io_shapes(n)
    patterns = _random_patterns(n, engine, rng)
    mu, sigma = engine.encode(patterns)
    with torch.no_grad():
        ref_mu, ref_sigma = (t.numpy() for t in model.encoder(
            torch.from_numpy(patterns.to_flat())))
    for (name, want), array in zip(shapes["encoder_outputs"].items(), (mu, sigma)):
        if array.shape != want:
            raise VerificationError(f"encoder output {name} is {array.shape}, the spec "
                                    f"says {want}")
    report["mu_max_abs"] = float(np.abs(mu - ref_mu).max())
    report["sigma_max_abs"] = float(np.abs(sigma - ref_sigma).max())


def _check_tolerance(report: dict) -> None:
    worst = max(v for k, v in report.items() if k.endswith("_max_abs"))
    if not worst <= CONTINUOUS_TOLERANCE:  # `not <=` also catches NaN
        raise VerificationError(
            "continuous outputs differ from torch by more than "
            f"{CONTINUOUS_TOLERANCE:g}: " + ", ".join(
                f"{k} {v:.2e}" for k, v in report.items() if k.endswith("_max_abs")))


def _verify_conditioned(engine: Engine, model, n: int, seed: int) -> dict:
    """A task model: the task's inputs made from fixed played patterns (as `Engine.transform`
    makes them), fixed z and noise, at TASK_TEMPERATURES. Besides agreeing with torch, the
    output must be a finished pattern that keeps what the task promises to keep: humanize
    the user's hits, infill every voice but the hi-hats (hits, velocities and timing)."""
    spec, task = engine.spec, engine.spec.task
    rng = np.random.default_rng(seed)
    played = _random_patterns(n, engine, rng)
    control = task_input(task, played, spec).to_flat()
    z = rng.standard_normal((n, spec.z_size)).astype(np.float32)
    hit_noise, cont_noise = engine.noise(n, rng)
    shapes = spec.io_shapes(n)
    kept = generated_voices(task, spec) == 0  # (C,) voices the output copies from the input
    report = {"decoded": n * len(TASK_TEMPERATURES), "hit_cells": 0, "hit_mismatches": 0,
              "velocity_max_abs": 0.0, "offset_max_abs": 0.0, "task": task,
              "temperatures": list(TASK_TEMPERATURES), "hit_rate": []}
    for temperature in TASK_TEMPERATURES:
        t = np.full(n, temperature, np.float32)
        got = engine.decode_noise(z, t, hit_noise, cont_noise, control)
        with torch.no_grad():
            ref = [a.numpy() for a in model.sample(*(torch.from_numpy(a) for a in (
                z, t, hit_noise, cont_noise, control)))]
        for (name, want), array in zip(shapes["decoder_outputs"].items(),
                                       (got.hits, got.velocities, got.offsets)):
            if array.shape != want:
                raise VerificationError(f"decoder output {name} is {array.shape}, the spec "
                                        f"says {want}")
        report["hit_cells"] += int(ref[0].size)
        report["hit_mismatches"] += int((got.hits != ref[0]).sum())
        report["hit_rate"].append(round(float(ref[0].mean()), 4))
        for key, a, b in (("velocity_max_abs", got.velocities, ref[1]),
                          ("offset_max_abs", got.offsets, ref[2])):
            report[key] = max(report[key], float(np.abs(a - b).max()))
        _check_task_rules(task, played.cleaned(), got, kept, temperature)
    _verify_encoder(engine, model, n, rng, report)
    if report["hit_mismatches"]:
        raise VerificationError(f"{report['hit_mismatches']} of {report['hit_cells']} hits "
                                f"differ from torch")
    _check_tolerance(report)
    return report


def _check_task_rules(task: str, played: Patterns, got: Patterns, kept: np.ndarray,
                      temperature: float) -> None:
    """What every consumer relies on, checked on the exported graph's own output."""
    at = f"at temperature {temperature:g}"
    finished = got.cleaned()
    if not all(np.array_equal(a, b) for a, b in zip(
            (got.hits, got.velocities, got.offsets),
            (finished.hits, finished.velocities, finished.offsets))):
        raise VerificationError(f"the {task} decoder's output is not a finished pattern {at} "
                                f"(hits 0/1, velocity and timing only on hits, in range)")
    if task == "humanize" and not np.array_equal(got.hits, played.hits):
        raise VerificationError(f"the humanize decoder changed the input's hits {at}")
    if kept.any():
        for name, a, b in (("hits", got.hits, played.hits),
                           ("velocities", got.velocities, played.velocities),
                           ("offsets", got.offsets, played.offsets)):
            if not np.array_equal(a[..., kept], b[..., kept]):
                raise VerificationError(f"the {task} decoder changed the {name} of voices it "
                                        f"must keep from its input {at}")


def compare_variant(reference: Engine, variant: Engine, n: int = 256, seed: int = 1) -> dict:
    """A variant against the verified fp32 model on shared latents and noise."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, reference.spec.z_size)).astype(np.float32)
    noise = reference.noise(n, rng)
    a = reference.decode_noise(z, 1.0, *noise)
    b = variant.decode_noise(z, 1.0, *noise)
    flipped = (a.hits != b.hits).any(axis=-1)  # (n, steps)
    first_flip = np.where(flipped.any(1), flipped.argmax(1), a.steps)  # (n,)
    same_history = np.broadcast_to(
        (np.arange(a.steps)[None, :] <= first_flip[:, None])[..., None], a.hits.shape)
    shared = (a.hits > 0) & (b.hits > 0) & same_history
    both = (a.hits > 0) & (b.hits > 0)
    report = {
        "hit_flip_rate": float((a.hits != b.hits)[same_history].mean()),
        "velocity_mae": float(np.abs(a.velocities - b.velocities)[shared].mean()),
        "offset_mae": float(np.abs(a.offsets - b.offsets)[shared].mean()),
        # for the record, not gated: whole patterns and their statistics
        "identical_patterns": float((first_flip == a.steps).mean()),
        "hit_agreement_all": float((a.hits == b.hits).mean()),
        "velocity_mae_all": float(np.abs(a.velocities - b.velocities)[both].mean()),
        "hit_rate": [float(a.hits.mean()), float(b.hits.mean())],
        "velocity_mean": [float(a.velocities[a.hits > 0].mean()),
                          float(b.velocities[b.hits > 0].mean())],
    }
    if not (report["hit_flip_rate"] <= VARIANT_MAX_HIT_FLIP_RATE
            and report["velocity_mae"] <= VARIANT_MAX_VELOCITY_MAE
            and report["offset_mae"] <= VARIANT_MAX_OFFSET_MAE):
        raise VerificationError(
            f"{variant.variant} is outside its tolerance against fp32 (same history): hit "
            f"flips {report['hit_flip_rate']:.4f} (<= {VARIANT_MAX_HIT_FLIP_RATE}), velocity "
            f"MAE {report['velocity_mae']:.4f} (<= {VARIANT_MAX_VELOCITY_MAE}), offset MAE "
            f"{report['offset_mae']:.4f} (<= {VARIANT_MAX_OFFSET_MAE})")
    return report


def median_latency_s(engines: dict[str, Engine], batch: int, rounds: int = 5,
                     runs: int = 20) -> dict[str, float]:
    """Median CPU time of a decode per engine (one intra-op thread runs on the calling
    thread). CPU time, not wall time: export often runs beside training, and waiting for the
    core says nothing about which variant is faster. Runs are interleaved for the same reason."""
    times: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(rounds):
        for name, engine in engines.items():
            rng = np.random.default_rng(0)
            z = rng.standard_normal((batch, engine.spec.z_size)).astype(np.float32)
            noise = engine.noise(batch, rng)
            engine.decode_noise(z, 1.0, *noise)
            for _ in range(runs):
                t0 = time.thread_time()
                engine.decode_noise(z, 1.0, *noise)
                times[name].append(time.thread_time() - t0)
    return {name: float(np.median(t)) for name, t in times.items()}


def _verify_classes(engine: Engine, model, n: int, seed: int) -> dict:
    """A categorical or hierarchical model: fixed z and the same uniform noise (one per step)
    at TASK_TEMPERATURES (0 is the argmax at every step). Hits must be torch's; the output must
    be the quantized pattern (velocity FIXED_VELOCITY on every hit, offsets 0)."""
    spec = engine.spec
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, spec.z_size)).astype(np.float32)
    hit_noise, cont_noise = engine.noise(n, rng)
    shapes = spec.io_shapes(n)
    report = {"decoded": n * len(TASK_TEMPERATURES), "hit_cells": 0, "hit_mismatches": 0,
              "diverged_patterns": 0, "velocity_max_abs": 0.0, "offset_max_abs": 0.0,
              "temperatures": list(TASK_TEMPERATURES), "hit_rate": []}
    for temperature in TASK_TEMPERATURES:
        t = np.full(n, temperature, np.float32)
        got = engine.decode_noise(z, t, hit_noise, cont_noise)
        with torch.no_grad():
            ref_hits = model.sample(*(torch.from_numpy(a) for a in (
                z, t, hit_noise, cont_noise)))[0].numpy()
        for (name, want), array in zip(shapes["decoder_outputs"].items(),
                                       (got.hits, got.velocities, got.offsets)):
            if array.shape != want:
                raise VerificationError(f"decoder output {name} is {array.shape}, the spec "
                                        f"says {want}")
        at = f"at temperature {temperature:g}"
        if not np.isin(got.hits, (0.0, 1.0)).all():
            raise VerificationError(f"the decoder's hits are not 0 or 1 {at}")
        # The quantized pattern exactly: these are the graph's own arithmetic on its hits.
        report["velocity_max_abs"] = max(report["velocity_max_abs"], float(
            np.abs(got.velocities - np.float32(FIXED_VELOCITY) * got.hits).max()))
        report["offset_max_abs"] = max(report["offset_max_abs"],
                                       float(np.abs(got.offsets).max()))
        differ = got.hits != ref_hits
        report["hit_cells"] += int(ref_hits.size)
        report["hit_mismatches"] += int(differ.sum())
        report["diverged_patterns"] += int(differ.any(axis=(1, 2)).sum())
        report["hit_rate"].append(round(float(ref_hits.mean()), 4))
    _verify_encoder(engine, model, n, rng, report)
    if report["velocity_max_abs"] > 0.0 or report["offset_max_abs"] > 0.0:
        raise VerificationError(f"the decoder's output is not the quantized pattern (velocity "
                                f"{FIXED_VELOCITY:g} on hits: off by up to "
                                f"{report['velocity_max_abs']:.2e}; offsets 0: up to "
                                f"{report['offset_max_abs']:.2e})")
    if report["diverged_patterns"] > CLASS_MAX_DIVERGED_SHARE * report["decoded"]:
        raise VerificationError(f"{report['diverged_patterns']} of {report['decoded']} patterns "
                                f"differ from torch ({report['hit_mismatches']} of "
                                f"{report['hit_cells']} hits)")
    _check_tolerance(report)
    return report


def _random_melodies(n: int, steps: int, rng: np.random.Generator) -> np.ndarray:
    """(n, steps) monophonic melodies in the soprano's range, a tenth of the steps rests, so
    the graph sees sounding and silent steps as a user's melody has them."""
    low, high = VOICE_RANGES["soprano"]
    melody = rng.integers(low, high + 1, (n, steps))
    melody[rng.random((n, steps)) < 0.1] = REST
    melody[:, 0] = low  # never a silent melody
    return melody


def _verify_pitched(engine: Engine, model, n: int, seed: int) -> dict:
    """A pitched harmonizer: the generator's rolls for fixed random melodies and noise, in
    onnxruntime and in torch, within CONTINUOUS_TOLERANCE; the voice pitches read from them
    are reported (a cell within rounding of another can read differently, so they are not
    gated beyond the rolls' tolerance)."""
    spec = engine.spec
    rng = np.random.default_rng(seed)
    melody = melody_roll(_random_melodies(n, spec.steps, rng))[..., 0]  # (n, T, P)
    z = engine.latents(n, rng)
    got = engine.generate_rolls(z, melody)
    with torch.no_grad():
        ref = model(torch.from_numpy(z), torch.from_numpy(melody)).numpy()
    want = spec.io_shapes(n)["decoder_outputs"][spec.decoder_outputs[0]]
    if got.shape != want:
        raise VerificationError(f"decoder output {spec.decoder_outputs[0]} is {got.shape}, the "
                                f"spec says {want}")
    pitches, ref_pitches = roll_to_voices(got), roll_to_voices(ref)
    report = {"decoded": n, "rolls_max_abs": float(np.abs(got - ref).max()),
              "pitch_cells": int(ref_pitches.size),
              "pitch_mismatches": int((pitches != ref_pitches).sum()),
              "rest_rate": round(float((ref_pitches == REST).mean()), 4)}
    _check_tolerance(report)
    return report


# The decoder check of each model kind export can write; a new kind adds a line.
VERIFIERS = {"groovae": _verify_groovae, "conditioned": _verify_conditioned,
             "categorical": _verify_classes, "hierarchical": _verify_classes,
             "pitched": _verify_pitched}
