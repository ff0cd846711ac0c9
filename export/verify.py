"""Export's self-check: exported files against the torch model, and a variant against fp32."""
from __future__ import annotations

import time

import numpy as np
import torch

from groove_live.engine import Engine
from groove_live.pattern import Patterns

CONTINUOUS_TOLERANCE = 1e-4  # fp32 graph vs torch: velocities, offsets, mu, sigma
# A quantized variant decodes other patterns than fp32 once a hit flips (the flip is fed back,
# and from there on the two patterns differ), so it is compared on shared latents and noise
# over each pattern's shared history only: the steps up to and including its first flip.
# There a hit decision flips when the uniform noise falls between the two hit probabilities,
# so the flip rate estimates how far quantization moved the hit probabilities.
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
    and compare with the torch model: hits identical, continuous values within tolerance."""
    spec = engine.spec
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, spec.z_size)).astype(np.float32)
    temperature = np.linspace(0.25, 1.5, n).astype(np.float32)
    hit_noise, cont_noise = engine.noise(n, rng)
    got = engine.decode_noise(z, temperature, hit_noise, cont_noise)
    with torch.no_grad():
        ref = [t.numpy() for t in model.decoder.sample(
            torch.from_numpy(z), torch.from_numpy(temperature)[:, None],
            hit_noise=torch.from_numpy(hit_noise), cont_noise=torch.from_numpy(cont_noise))]
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
    if engine.has_encoder:
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
    if flips:
        raise VerificationError(f"{flips} of {ref[0].size} hits differ from torch")
    worst = max(v for k, v in report.items() if k.endswith("_max_abs"))
    if not worst <= CONTINUOUS_TOLERANCE:  # `not <=` also catches NaN
        raise VerificationError(
            "continuous outputs differ from torch by more than "
            f"{CONTINUOUS_TOLERANCE:g}: " + ", ".join(
                f"{k} {v:.2e}" for k, v in report.items() if k.endswith("_max_abs")))
    return report


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
