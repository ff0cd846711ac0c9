"""Latents that reproduce a user's own pattern: a search around the encoder's answer.

The encoder gives each pattern a posterior N(mu, sigma), and decoding mu at temperature 0 is the
model's reconstruction of it. But the encoder is an amortized guess, trained on the played
grooves of the dataset: for a hand-written drum-machine beat, the decode of mu can lose a quarter
of its hits (a 2-bar categorical model on thirteen typed beats: mean hit F1 0.76), while other
latents of the same posterior decode to the beat itself. `fit_latents` looks for those, with
decodes only (onnxruntime gives no gradients): a cross-entropy-method search. Each round draws
candidates around the best latent so far, spread like the previous round's best few (the
posterior's sigma in the first round), decodes them all at temperature 0 in one batch, and keeps
the closest. Closest means the highest hit F1 against the pattern over its (step, voice) cells,
with the share of exactly right steps breaking ties.

mu is the first round's first candidate and the best latent stays a candidate in every round, so
a fit is never worse than the plain reconstruction; the search stops as soon as a decode matches
every hit. The draws come from their own fixed seed and the pattern's hits: the same pattern
always fits to the same latent, alone or in a batch, whatever sampling seed the caller uses
afterwards, and more rounds only ever add to what fewer found.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .pattern import Patterns

if TYPE_CHECKING:
    from .engine import Engine

FIT_ROUNDS = 4  # 4 x 128 decodes: ~0.3 s per 2-bar pattern on one core; see docs/results.md
FIT_CANDIDATES = 128
FIT_ELITE = 8  # the next round's spread is that of this many best candidates
FIT_SEED = 0
MIN_SPREAD = 1e-3  # keeps a round that collapsed onto one latent still searching
TIE_BREAK = 0.01  # step accuracy's weight in the score: never outweighs one hit of F1


def hit_f1(real: np.ndarray, pred: np.ndarray) -> float:
    """F1 of the hit cells of two boolean (T, C) patterns; 1.0 when neither has a hit."""
    return float(_scores(real, pred[None])[0][0])


def _scores(real: np.ndarray, decoded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(hit F1, step accuracy) of each decoded (N, T, C) boolean pattern against real (T, C);
    F1 is 1.0 where neither has a hit."""
    tp = np.sum(decoded & real, axis=(1, 2)).astype(np.float64)
    fp = np.sum(decoded & ~real, axis=(1, 2))
    fn = np.sum(~decoded & real, axis=(1, 2))
    denominator = 2 * tp + fp + fn
    f1 = np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 1.0)
    steps_right = np.all(decoded == real, axis=-1).mean(axis=-1)
    return f1, steps_right


@dataclass(frozen=True)
class LatentFit:
    """z (B, z_size): the fitted latents; hit_f1 (B,): how well each decodes to its pattern
    at temperature 0; mu_hit_f1 (B,): the same for the posterior mean (before the search)."""

    z: np.ndarray
    hit_f1: np.ndarray
    mu_hit_f1: np.ndarray


def fit_latents(engine: Engine, patterns: Patterns, rounds: int = FIT_ROUNDS,
                candidates: int = FIT_CANDIDATES, seed: int = FIT_SEED) -> LatentFit:
    """For each pattern, the latent (of those tried) whose temperature-0 decode reproduces its
    hits best. rounds 0: the posterior means, unsearched."""
    if rounds < 0 or candidates < 2:
        raise ValueError("a fit needs rounds >= 0 and at least 2 candidates per round")
    mu, sigma = engine.encode(patterns)
    real = patterns.hits > 0.5
    greedy = engine.decode(mu, temperature=0.0, seed=seed).hits > 0.5
    mu_f1 = np.array([hit_f1(real[i], greedy[i]) for i in range(len(patterns))])
    best_z = np.array(mu, np.float32)
    best_f1 = mu_f1.copy()
    for i in range(len(patterns)):
        # Seeded by the pattern itself: the same pattern fits to the same latent alone or in a
        # batch, wherever it stands in it.
        rng = np.random.default_rng([seed, zlib.crc32(np.packbits(real[i]).tobytes())])
        best_score = best_f1[i] + TIE_BREAK * float(np.all(greedy[i] == real[i], axis=-1).mean())
        spread = np.asarray(sigma[i], np.float32)
        for _ in range(rounds):
            if best_f1[i] >= 1.0:
                break
            draws = rng.standard_normal((candidates, mu.shape[1])).astype(np.float32)
            draws[0] = 0.0  # the best so far stays in the running
            z = best_z[i] + spread * draws
            decoded = engine.decode(z, temperature=0.0, seed=seed).hits > 0.5
            f1, steps_right = _scores(real[i], decoded)
            score = f1 + TIE_BREAK * steps_right
            order = np.argsort(-score, kind="stable")
            if score[order[0]] > best_score:
                best_score = float(score[order[0]])
                best_z[i], best_f1[i] = z[order[0]], f1[order[0]]
            spread = np.maximum(z[order[:FIT_ELITE]].std(axis=0), MIN_SPREAD).astype(np.float32)
    return LatentFit(best_z, best_f1, mu_f1)
