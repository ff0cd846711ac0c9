"""How Bach-like a set of harmonizations is: numpy metrics on (windows, steps, 4) voice pitches.

Voices are in groove_live.chorale.VOICES order, the melody (soprano) first; REST (-1) is silence.
Every count is of 16th steps (the data has no onsets), so "notes" below are weighted by duration.
The accompaniment is alto, tenor and bass: the voices a harmonizer writes.

- empty_bar_rate: per voice, the share of bars (16 steps) where that voice never sounds.
- pc_js: Jensen-Shannon divergence (base 2, so 0 = same, 1 = disjoint) between the generated and
  the reference 12-bin pitch-class histograms of a voice, pooled over all windows. JS rather than
  L1 because it is bounded, symmetric and weighs a class nobody uses at all more than a shift
  between two used ones.
- pc_js_key: the same on 24-bin histograms of pitch classes relative to the tonic of the key of
  each window's melody, major and minor keys apart. Pooling absolute pitch classes over windows in
  every key flattens Bach's histogram so much that uniform noise scores close to it; relative to
  the melody's key his tonic, dominant and leading tone stand out, and noise does not.
- in_scale_ratio: the share of accompaniment steps whose pitch class is in the scale of the key
  found from that window's melody (chorale_key: Krumhansl-Schmuckler on the melody's duration-
  weighted histogram); minor scales include the raised seventh.
- polyphony: mean number of voices sounding per step (4 for a full chorale texture).
- range/<voice>/{min,max,mean} of sounding pitches, and out_of_range_rate: the share of
  accompaniment steps outside that voice's range in Bach (chorale.VOICE_RANGES).
- voice_crossing_rate: the share of steps (with at least two voices sounding) where some lower
  voice sits above a higher one.
"""
from __future__ import annotations

import numpy as np

from groove_live.chorale import REST, STEPS_PER_BAR, VOICE_RANGES, VOICES, check_voices
from groove_live.train.chorale_key import find_key, pitch_class_histogram, scale_mask

ACCOMPANIMENT = VOICES[1:]


def _batch(voices: np.ndarray) -> np.ndarray:
    v = check_voices(voices)
    return v[None] if v.ndim == 2 else v


def empty_bar_rate(voices: np.ndarray) -> np.ndarray:
    """(4,) per voice: the share of whole bars where it never sounds (a trailing part bar is
    left out)."""
    v = _batch(voices)
    bars = v.shape[1] // STEPS_PER_BAR
    if bars == 0 or len(v) == 0:
        return np.full(len(VOICES), np.nan)
    by_bar = v[:, :bars * STEPS_PER_BAR].reshape(len(v), bars, STEPS_PER_BAR, -1)
    return (by_bar == REST).all(axis=2).mean(axis=(0, 1))


def pitch_class_distributions(voices: np.ndarray) -> np.ndarray:
    """(4, 12) per voice: its pitch-class histogram pooled over windows, summing to 1 (0s for a
    voice that never sounds)."""
    v = _batch(voices)
    h = pitch_class_histogram(np.moveaxis(v, -1, 0).reshape(len(VOICES), -1))
    total = h.sum(axis=1, keepdims=True)
    return np.divide(h, total, out=np.zeros_like(h), where=total > 0)


def key_relative_distributions(voices: np.ndarray) -> np.ndarray:
    """(4, 24) per voice: the distribution of (mode, pitch class above the tonic) over its
    sounding steps, the key found from each window's melody; bins 0-11 major, 12-23 minor."""
    v = _batch(voices)
    keys = np.atleast_1d(find_key(v[:, :, 0]))  # (n,)
    sounding = v != REST
    rel = (v - (keys % 12)[:, None, None]) % 12 + 12 * (keys >= 12)[:, None, None]
    h = np.stack([np.bincount(rel[..., i][sounding[..., i]], minlength=24)
                  for i in range(len(VOICES))]).astype(np.float64)
    total = h.sum(axis=1, keepdims=True)
    return np.divide(h, total, out=np.zeros_like(h), where=total > 0)


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence in bits between two distributions (each summing to 1, or all 0
    for "no notes": two empty ones are equal, an empty one is 1 from anything else)."""
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    if not p.any() or not q.any():
        return 0.0 if not p.any() and not q.any() else 1.0
    m = (p + q) / 2

    def kl(a):
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))
    return max(0.0, (kl(p) + kl(q)) / 2)


def in_scale_ratio(voices: np.ndarray) -> float:
    """Share of accompaniment steps in the scale of the key of the same window's melody."""
    v = _batch(voices)
    keys = np.atleast_1d(find_key(v[:, :, 0]))
    in_scale = scale_mask(keys)  # (n, 12)
    acc = v[:, :, 1:]
    sounding = acc != REST
    hit = np.take_along_axis(in_scale, (np.where(sounding, acc, 0) % 12).reshape(len(v), -1),
                             axis=1).reshape(acc.shape)
    n = sounding.sum()
    return float((hit & sounding).sum() / n) if n else float("nan")


def polyphony(voices: np.ndarray) -> float:
    v = _batch(voices)
    return float((v != REST).sum(axis=-1).mean()) if v.size else float("nan")


def voice_crossing_rate(voices: np.ndarray) -> float:
    """Share of steps with two or more voices sounding where a lower voice (later in VOICES)
    sits strictly above a higher one, any pair (a rest in between still counts)."""
    v = _batch(voices).reshape(-1, len(VOICES))
    sounding = v != REST
    crossed = np.zeros(len(v), bool)
    for hi in range(len(VOICES)):
        for lo in range(hi + 1, len(VOICES)):
            crossed |= sounding[:, hi] & sounding[:, lo] & (v[:, lo] > v[:, hi])
    counted = sounding.sum(axis=1) >= 2
    return float(crossed[counted].mean()) if counted.any() else float("nan")


def voice_ranges(voices: np.ndarray) -> dict[str, float]:
    """range/<voice>/{min,max,mean} of sounding pitches (nan for a silent voice), and
    out_of_range_rate over the accompaniment against Bach's ranges."""
    v = _batch(voices).reshape(-1, len(VOICES))
    out: dict[str, float] = {}
    outside = total = 0
    for i, name in enumerate(VOICES):
        p = v[:, i][v[:, i] != REST]
        for stat, f in (("min", np.min), ("max", np.max), ("mean", np.mean)):
            out[f"range/{name}/{stat}"] = float(f(p)) if len(p) else float("nan")
        if name in ACCOMPANIMENT:
            low, high = VOICE_RANGES[name]
            outside += int(((p < low) | (p > high)).sum())
            total += len(p)
    out["out_of_range_rate"] = outside / total if total else float("nan")
    return out


def chorale_metrics(voices: np.ndarray) -> dict[str, float]:
    """Every metric of one set of windows, as a flat dict of floats (ready for a logger)."""
    empty = empty_bar_rate(voices)
    out = {f"empty_bar_rate/{name}": float(e) for name, e in zip(VOICES, empty)}
    out["empty_bar_rate"] = float(np.mean(empty[1:]))  # the accompaniment's
    out["in_scale_ratio"] = in_scale_ratio(voices)
    out["polyphony"] = polyphony(voices)
    out["voice_crossing_rate"] = voice_crossing_rate(voices)
    out.update(voice_ranges(voices))
    return out


def compare(generated: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """The generated windows' metrics, the reference's under "ref/", and pc_js/<voice> and
    pc_js_key/<voice> (plus pc_js and pc_js_key, the accompaniment's means) between the two.
    The windows need not pair up: the reference is usually Bach's own voices for the same
    melodies, or the training split."""
    out = chorale_metrics(generated)
    out.update({f"ref/{k}": v for k, v in chorale_metrics(reference).items()})
    gen_pc, ref_pc = pitch_class_distributions(generated), pitch_class_distributions(reference)
    js = {name: js_divergence(gen_pc[i], ref_pc[i]) for i, name in enumerate(VOICES)}
    out.update({f"pc_js/{name}": d for name, d in js.items()})
    out["pc_js"] = float(np.mean([js[name] for name in ACCOMPANIMENT]))
    gen_k, ref_k = key_relative_distributions(generated), key_relative_distributions(reference)
    js = {name: js_divergence(gen_k[i], ref_k[i]) for i, name in enumerate(VOICES)}
    out.update({f"pc_js_key/{name}": d for name, d in js.items()})
    out["pc_js_key"] = float(np.mean([js[name] for name in ACCOMPANIMENT]))
    return out
