"""Two harmonizers without learning, the floor a trained model must clear, and the table that
scores them next to Bach.

- rule: for each melody note (a run of one pitch; the data has no onsets) a root-position triad of
  the melody's key (Krumhansl-Schmuckler, chorale_key) that contains the melody's pitch class,
  voiced below the melody inside Bach's alto, tenor and bass ranges, the voicing that moves the
  voices least from the previous chord's. Tonic, dominant and subdominant are preferred over the
  other degrees; a note outside the scale gets any major or minor triad that holds it.
- random: alto, tenor and bass each take a uniformly random pitch in their Bach range every beat,
  blind to the melody: what the metrics give to noise that only knows the ranges.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from groove_live.chorale import REST, VOICE_RANGES, VOICES, check_voices
from groove_live.train.chorale_key import diatonic_triads, find_key
from groove_live.train.chorale_metrics import compare

# Semitones of total voice movement that choosing ii, iii, vi or vii over I, V or IV costs:
# the value of 0, 2, 4, 8 whose harmonizations of the validation melodies come closest to the
# training split's key-relative pitch classes (pc_js_key).
OTHER_DEGREE_COST = 2.0
MAX_GAP = 12  # soprano-alto and alto-tenor at most an octave apart, as in the textbook rule
BEAT_STEPS = 4


@lru_cache(maxsize=None)
def _voicings(chord: tuple[int, ...]) -> np.ndarray:
    """(n, 3) every (alto, tenor, bass) in range with the bass on the root, the upper voices on
    chord tones, and bass < tenor < alto."""
    tones = set(chord)
    cands = {v: [p for p in range(VOICE_RANGES[v][0], VOICE_RANGES[v][1] + 1) if p % 12 in tones]
             for v in VOICES[1:]}
    basses = [p for p in cands["bass"] if p % 12 == chord[0]]
    a, t, b = np.meshgrid(cands["alto"], cands["tenor"], basses, indexing="ij")
    v = np.stack([a.ravel(), t.ravel(), b.ravel()], axis=1)
    return v[(v[:, 2] < v[:, 1]) & (v[:, 1] < v[:, 0])]


def _chromatic_triads(pc: int) -> list[tuple[int, int, int]]:
    return [((pc - d) % 12, (pc - d + third) % 12, (pc - d + 7) % 12)
            for third in (4, 3) for d in (0, third, 7)]


def _best_voicing(soprano: int, chords: list[tuple[tuple[int, int, int], float]],
                  previous: np.ndarray | None) -> np.ndarray:
    """The cheapest (alto, tenor, bass) over chords, given as (triad, extra cost) pairs."""
    centre = np.array([sum(VOICE_RANGES[v]) / 2 for v in VOICES[1:]])
    best, best_cost = None, np.inf
    for chord, chord_cost in chords:
        v = _voicings(chord)
        below = v[v[:, 0] < soprano]
        spaced = below[(soprano - below[:, 0] <= MAX_GAP) & (below[:, 0] - below[:, 1] <= MAX_GAP)]
        # a complete triad between the four voices: root (the bass), third and fifth
        pcs = np.concatenate([spaced % 12, np.full((len(spaced), 1), soprano % 12)], axis=1)
        full = spaced[np.all([(pcs == tone).any(axis=1) for tone in chord], axis=0)]
        for pool in (full, spaced, below, v):  # relax the rules only when nothing meets them
            if len(pool):
                break
        if not len(pool):
            continue
        move = np.abs(pool - (centre if previous is None else previous)).sum(axis=1)
        # Preferring complete, spaced voicings over relaxed ones outweighs any movement.
        cost = move + chord_cost + 100.0 * (pool is not full)
        i = int(np.argmin(cost))
        if cost[i] < best_cost:
            best, best_cost = pool[i], cost[i]
    return best


def harmonize_rule(melody: np.ndarray, key: int | None = None) -> np.ndarray:
    """(steps,) melody -> (steps, 4) voices: the melody on top, the rule's chords below; all
    voices rest where the melody does."""
    m = check_voices(np.asarray(melody)[:, None], n_voices=1)[:, 0]
    key = find_key(m) if key is None else key
    out = np.full((len(m), len(VOICES)), REST, np.int64)
    out[:, 0] = m
    previous = None
    starts = np.flatnonzero(np.r_[True, m[1:] != m[:-1]])
    for start, end in zip(starts, np.r_[starts[1:], len(m)]):
        pitch = int(m[start])
        if pitch == REST:
            continue
        # I, V and IV come first in diatonic_triads; the other degrees cost extra
        chords = ([(c, OTHER_DEGREE_COST * (rank >= 3))
                   for rank, c in enumerate(diatonic_triads(key)) if pitch % 12 in c]
                  or [(c, 0.0) for c in _chromatic_triads(pitch % 12)])
        previous = _best_voicing(pitch, chords, previous)
        out[start:end, 1:] = previous
    return out


def harmonize_random(melody: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(steps,) melody -> (steps, 4) voices: the melody on top, a random pitch in each lower
    voice's range every beat."""
    m = check_voices(np.asarray(melody)[:, None], n_voices=1)[:, 0]
    out = np.empty((len(m), len(VOICES)), np.int64)
    out[:, 0] = m
    beats = -(-len(m) // BEAT_STEPS)
    for i, name in enumerate(VOICES[1:], start=1):
        low, high = VOICE_RANGES[name]
        out[:, i] = np.repeat(rng.integers(low, high + 1, beats), BEAT_STEPS)[:len(m)]
    return out


def baseline_table(test: np.ndarray, train: np.ndarray,
                   seed: int = 0) -> dict[str, dict[str, float]]:
    """Metrics of Bach's own test voices, the rule and the random harmonizer on the test
    melodies, each compared with the training split (Bach's row is the floor for pc_js)."""
    rng = np.random.default_rng(seed)
    melodies = test[:, :, 0]
    return {"bach": compare(test, train),
            "rule": compare(np.stack([harmonize_rule(m) for m in melodies]), train),
            "random": compare(np.stack([harmonize_random(m, rng) for m in melodies]), train)}


TABLE_COLUMNS = ("pc_js", "pc_js_key", "in_scale_ratio", "empty_bar_rate", "polyphony",
                 "voice_crossing_rate", "out_of_range_rate")


def format_table(rows: dict[str, dict[str, float]], columns=TABLE_COLUMNS) -> str:
    width = max([len("harmonizer")] + [len(name) for name in rows])
    lines = [f"{'harmonizer':<{width}}  " + "  ".join(f"{c:>{max(len(c), 8)}}" for c in columns)]
    for name, m in rows.items():
        lines.append(f"{name:<{width}}  " + "  ".join(f"{m[c]:>{max(len(c), 8)}.4f}" for c in columns))
    return "\n".join(lines)
