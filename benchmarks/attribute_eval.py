"""Do the latent attribute vectors steer what a model plays? Prints numbers (docs/attributes.md).

    python benchmarks/attribute_eval.py --model /tmp/attr/groovae.onnx --data data_cache/gmd_4bar
        [--data-2bar data_cache/gmd_2bar] [--samples 256] [--seed 0]

1. Density and syncopation: the same `samples` prior latents (and noise) decoded at amounts
   -1, -0.5, 0, 0.5, 1 of each vector (runtime x = -2..2; x = +-1 is +-0.5): mean hits per
   bar and syncopation of each batch, which should rise monotonically.
2. Style: a softmax-regression classifier on mu of the training split (class-balanced),
   evaluated held out on the test split (accuracy, balanced accuracy, chance levels). Then, per
   style, `samples` latents steered by +1 style vector, decoded, encoded again and classified:
   the share recognised as the target style, next to the share of unsteered samples the
   classifier gives that style.
3. Fill: tom and crash share of hits and hits per bar, of fill-steered vs unsteered samples
   (whole phrase and last bar, which is what /groove/fill plays), next to GMD's fill windows
   vs beat windows (the 4-bar cache; the 2-bar cache too when given, it has more fills).
Torch-free: the model's ONNX encoder and decoder through groove_live.engine.Engine.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from groove_live.attributes import SCALED_AMOUNT_PER_UNIT, hits_per_bar, syncopation
from groove_live.engine import Engine
from groove_live.export.attributes import encode_all, load_windows, window_labels
from groove_live.latent import random_latents
from groove_live.pattern import Patterns

TOMS = ("low_tom", "mid_tom", "high_tom")
CRASH = ("crash",)


def decode(engine: Engine, z: np.ndarray, temperature: float, seed: int) -> Patterns:
    return engine.decode(z.astype(np.float32), temperature=temperature, seed=seed)


def share(p: Patterns, names: tuple[str, ...], drum_names: tuple[str, ...]) -> float:
    idx = [drum_names.index(n) for n in names]
    total = p.hits.sum()
    return float(p.hits[:, :, idx].sum() / total) if total else 0.0


def fit_softmax(x: np.ndarray, y: np.ndarray, k: int, iters: int = 500, lr: float = 0.5,
                l2: float = 1e-3) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Class-balanced multinomial logistic regression on standardised features (full batch
    gradient descent): returns (mean, std, W, b)."""
    mean, std = x.mean(0), x.std(0) + 1e-6
    xs = (x - mean) / std
    counts = np.bincount(y, minlength=k).astype(np.float64)
    weight = (len(y) / (k * np.maximum(counts, 1)))[y]
    w = np.zeros((x.shape[1], k))
    b = np.zeros(k)
    onehot = np.eye(k)[y]
    for _ in range(iters):
        logits = xs @ w + b
        logits -= logits.max(1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(1, keepdims=True)
        g = (p - onehot) * weight[:, None] / weight.sum()
        w -= lr * (xs.T @ g + l2 * w)
        b -= lr * g.sum(0)
    return mean, std, w, b


def predict(model, x: np.ndarray) -> np.ndarray:
    mean, std, w, b = model
    return np.argmax(((x - mean) / std) @ w + b, axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True, help="prepared cache with the model's bars")
    ap.add_argument("--data-2bar", default=None, help="a 2-bar cache, for GMD's fill stats")
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    engine = Engine.load(args.model)
    attributes = engine.attributes
    if attributes is None:
        sys.exit(f"{args.model}: no attribute vectors (groove-export attributes)")
    spec, names = engine.spec, engine.spec.drum_names
    n, t = args.samples, args.temperature
    rng = np.random.default_rng(args.seed)
    z = random_latents(n, spec.z_size, rng).astype(np.float64)
    noise_seed = args.seed + 1
    base = decode(engine, z, t, noise_seed)
    print(f"model {args.model}; {n} samples per row, temperature {t:g}, seed {args.seed}")

    print("\n1. along the density and syncopation vectors (same latents and noise per row)")
    print(f"{'vector':<12} {'amount':>7} {'x':>5} {'hits/bar':>9} {'syncopation':>12}")
    for name, scaled in sorted(attributes.scaled.items()):
        for amount in (-1.0, -0.5, 0.0, 0.5, 1.0):
            p = decode(engine, z + amount * scaled.vector, t, noise_seed)
            print(f"{name:<12} {amount:>7.2f} {amount / SCALED_AMOUNT_PER_UNIT:>5.1f} "
                  f"{hits_per_bar(p.hits, spec.bars).mean():>9.2f} "
                  f"{syncopation(p.hits, p.velocities, names, spec.steps_per_beat).mean():>12.3f}")
        print(f"{'':<12} (training quartiles: {scaled.low:.3f} bottom, {scaled.high:.3f} top)")

    print("\n2. style: classifier on mu (train split), held out on the test split")
    styles = attributes.style_names
    index = {s: i for i, s in enumerate(styles)}
    train_p, train_src = load_windows(args.data, spec, "train")
    test_p, test_src = load_windows(args.data, spec, "test")
    train_styles, _ = window_labels(train_src)
    test_styles, _ = window_labels(test_src)
    keep = np.array([s in index for s in train_styles])
    x_train = encode_all(engine, Patterns(train_p.hits[keep], train_p.velocities[keep],
                                          train_p.offsets[keep]))
    y_train = np.array([index[s] for s in np.asarray(train_styles)[keep]])
    model = fit_softmax(x_train, y_train, len(styles))
    keep_t = np.array([s in index for s in test_styles])
    x_test = encode_all(engine, Patterns(test_p.hits[keep_t], test_p.velocities[keep_t],
                                         test_p.offsets[keep_t]))
    y_test = np.array([index[s] for s in np.asarray(test_styles)[keep_t]])
    pred = predict(model, x_test)
    present = np.unique(y_test)
    per_class = [float((pred[y_test == c] == c).mean()) for c in present]
    majority = np.bincount(y_test).max() / len(y_test)
    print(f"train windows {len(y_train)}, {len(styles)} classes; test windows {len(y_test)} "
          f"of {len(present)} of those classes ({(~keep_t).sum()} test windows of other "
          f"styles left out)")
    print(f"held-out accuracy {float((pred == y_test).mean()):.3f} (chance: majority class "
          f"{majority:.3f}); balanced accuracy {np.mean(per_class):.3f} (chance "
          f"{1 / len(styles):.3f})")
    base_pred = predict(model, encode_all(engine, base))
    print(f"{'style':<14} {'train win':>9} {'steered->style':>15} {'unsteered->style':>17}")
    hits_rate = []
    for s in styles:
        p = decode(engine, z + attributes.styles[s], t, noise_seed)
        got = float((predict(model, encode_all(engine, p)) == index[s]).mean())
        was = float((base_pred == index[s]).mean())
        hits_rate.append(got)
        print(f"{s:<14} {attributes.windows.get('style:' + s, 0):>9} {got:>15.3f} {was:>17.3f}")
    print(f"{'mean':<14} {'':>9} {np.mean(hits_rate):>15.3f} {1 / len(styles):>17.3f} (chance)")

    print("\n3. fill: tom / crash share of hits, hits per bar")
    print(f"{'what':<34} {'tom':>6} {'crash':>6} {'hits/bar':>9}")

    def row(label: str, p: Patterns, bars: int) -> None:
        print(f"{label:<34} {share(p, TOMS, names):>6.3f} {share(p, CRASH, names):>6.3f} "
              f"{hits_per_bar(p.hits, bars).mean():>9.2f}")

    if attributes.fill is not None:
        fill = decode(engine, z + attributes.fill, t, noise_seed)
        last = slice(spec.steps - spec.steps_per_bar, spec.steps)
        row("unsteered samples (phrase)", base, spec.bars)
        row("fill-steered samples (phrase)", fill, spec.bars)
        row("unsteered samples (last bar)", Patterns(base.hits[:, last], base.velocities[:, last],
                                                     base.offsets[:, last]), 1)
        row("fill-steered samples (last bar)", Patterns(fill.hits[:, last],
                                                        fill.velocities[:, last],
                                                        fill.offsets[:, last]), 1)
    else:
        print("(the model has no fill vector)")
    caches = [(args.data, spec)]
    if args.data_2bar:
        caches.append((args.data_2bar, spec.replace(bars=2)))
    for folder, cache_spec in caches:
        p, src = load_windows(folder, cache_spec, "train")
        _, is_fill = window_labels(src)
        for label, mask in (("fill", is_fill), ("beat", ~is_fill)):
            sel = Patterns(p.hits[mask], p.velocities[mask], p.offsets[mask])
            row(f"GMD {cache_spec.bars}-bar {label} windows ({int(mask.sum())})", sel,
                cache_spec.bars)


if __name__ == "__main__":
    main()
