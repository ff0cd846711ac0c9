r"""How much of a drummer's timing can a quantized score predict? A ceiling for humanize.

Humanize's timing goals pull against each other: its error must stay below the quantized
input's (the mean |offset|) while its spread stays near the drummer's. Spread that the score
cannot predict is noise against the real take and costs error, so both goals hold only when the
score predicts enough of the timing. This script measures how much a plain deterministic model
can predict, independent of groove-live's humanize model, and what a sampler built on it scores:

1. trains a regressor (a 2-layer bidirectional GRU over the quantized hits, each step's place in
   the bar and the tempo; squared error in ms on the played hits) on the train split, keeping
   the step with the highest validation share explained;
2. prints that share, 1 - sum (prediction - offset)^2 / sum offset^2 in ms (what
   `groove-train evaluate-task` reports as "timing variance explained"), on validation and test;
3. prints the sampler "prediction + Gaussian noise with each voice's train residual spread,
   scaled by k" for several k: its timing MAE and spread / GMD beside the quantized input's MAE,
   three noise seeds averaged.

Torch (the training extra), one thread, about 8 minutes on the development VM:

    .venv/bin/python benchmarks/humanize_ceiling.py --data data_cache/gmd_2bar --minutes 8
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from groove_live.pattern import Patterns
from groove_live.train.data import load_split
from groove_live.train.task_eval import timing_explained

SCALES = (0.6, 0.65, 0.7, 0.75, 0.8, 1.0)


class Regressor(nn.Module):
    def __init__(self, n_voices: int, steps_per_bar: int, hidden: int):
        super().__init__()
        self.steps_per_bar = steps_per_bar
        self.inp = nn.Linear(n_voices + 1 + steps_per_bar, hidden)
        self.rnn = nn.GRU(hidden, hidden, num_layers=2, batch_first=True, bidirectional=True,
                          dropout=0.2)
        self.out = nn.Linear(2 * hidden, n_voices)

    def forward(self, hits: torch.Tensor, step_ms: torch.Tensor) -> torch.Tensor:
        b, t, _ = hits.shape
        place = torch.eye(self.steps_per_bar).repeat(t // self.steps_per_bar, 1)
        tempo = ((step_ms - 40.0) / 20.0)[:, None, None].expand(b, t, 1)
        x = torch.relu(self.inp(torch.cat([hits, tempo, place[None].expand(b, t, -1)], -1)))
        return 0.5 * torch.tanh(self.out(self.rnn(x)[0]))  # offsets, step fractions


def split(data: str, name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    p, bpm = load_split(data, name)
    return (torch.from_numpy(p.hits), torch.from_numpy(p.offsets),
            torch.from_numpy(60_000.0 / bpm / 4.0))


def share_explained(hits: np.ndarray, offsets: np.ndarray, predicted: np.ndarray,
                    step_ms: np.ndarray) -> float:
    """evaluate-task's "timing variance explained" of predicted offsets (step fractions)."""
    zeros = np.zeros_like(hits)
    return timing_explained(Patterns(hits, zeros, offsets), Patterns(hits, zeros, predicted),
                            60_000.0 / step_ms / 4.0)


def predict(model: Regressor, hits, step_ms, batch: int = 512) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        out = torch.cat([model(hits[i:i + batch], step_ms[i:i + batch])
                         for i in range(0, len(hits), batch)])
    model.train()
    return out


def ms_on_hits(values, hits, step_ms) -> torch.Tensor:
    return (values * step_ms[:, None, None])[hits > 0]


def explained(model, data) -> float:
    hits, offsets, step_ms = data
    return share_explained(hits.numpy(), offsets.numpy(),
                           predict(model, hits, step_ms).numpy(), step_ms.numpy())


def lookup_tables(data: str) -> None:
    """Share explained by tables of train-split mean offsets (ms), keyed by what a score (or,
    for the drummer, the dataset) says about each hit; a key seen under 20 times falls back to
    the voice's mean."""
    # The cache records the GMD folder it was made from; its info.csv names style and drummer.
    source = json.loads((Path(data) / "dataset.json").read_text()).get("source", "")
    info = {}
    if source and (Path(source) / "info.csv").is_file():
        with open(Path(source) / "info.csv", newline="") as f:
            info = {r["midi_filename"]: r for r in csv.DictReader(f)}

    def hits_of(name: str) -> dict:
        """The split's patterns and, per played hit, its offset in ms and its keys."""
        patterns, bpm = load_split(data, name)
        with np.load(Path(data) / f"{name}.npz") as d:
            sources = d["source"]
        w, t, v = np.nonzero(patterns.hits)
        step_ms = (60_000.0 / bpm / 4.0).astype(np.float32)
        keys = {"voice": v, "step": t % 16, "tempo band": np.digitize(bpm[w], [80, 100, 120, 140])}
        if info:
            for field in ("style", "drummer"):
                keys[field] = np.array([info[s][field].split("/")[0] for s in sources])[w]
        return {"patterns": patterns, "step_ms": step_ms, "where": (w, t, v),
                "y": patterns.offsets[w, t, v] * step_ms[w], **keys}

    train = hits_of("train")
    groups = [("voice",), ("voice", "step"), ("voice", "tempo band")]
    if info:
        groups += [("voice", "style"), ("voice", "drummer")]
    voice_mean = {v: train["y"][train["voice"] == v].mean() for v in np.unique(train["voice"])}
    tables = {}
    for keys in groups:
        sums: dict = {}
        for key, y in zip(zip(*(train[k] for k in keys)), train["y"]):
            sums.setdefault(key, []).append(y)
        tables[keys] = {k: float(np.mean(v)) for k, v in sums.items() if len(v) >= 20}
    rows = []
    for split_name in ("validation", "test"):
        other = hits_of(split_name)
        real, step_ms, (w, t, v) = other["patterns"], other["step_ms"], other["where"]
        for keys, means in tables.items():
            pred_ms = np.array([means.get(key, voice_mean[key[0]])
                                for key in zip(*(other[k] for k in keys))])
            predicted = np.zeros_like(real.offsets)
            predicted[w, t, v] = pred_ms / step_ms[w]
            share = share_explained(real.hits, real.offsets, predicted, step_ms)
            rows.append(f"  {split_name:<10}  per {' and '.join(keys):<18}  explained "
                        f"{share:.3f}  timing MAE {np.abs(other['y'] - pred_ms).mean():.2f} ms")
    print("lookup tables of train-split mean offsets:")
    print("\n".join(rows))
    if not info:
        print("  (style and drummer: the cache does not name its GMD folder with info.csv)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="prepared 2-bar cache (groove-train prepare)")
    ap.add_argument("--minutes", type=float, default=8.0)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tables-only", action="store_true",
                    help="only the lookup tables (seconds), no regressor")
    args = ap.parse_args()
    lookup_tables(args.data)
    if args.tables_only:
        return
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    train, val, test = (split(args.data, s) for s in ("train", "validation", "test"))
    model = Regressor(train[0].shape[2], 16, args.hidden)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    best, best_step, best_state = -np.inf, 0, None
    t0, step = time.perf_counter(), 0
    gen = torch.Generator().manual_seed(args.seed)
    while time.perf_counter() - t0 < args.minutes * 60:
        order = torch.randperm(len(train[0]), generator=gen)
        for i in range(0, len(order) - 63, 64):
            idx = order[i:i + 64]
            hits, offsets, step_ms = (a[idx] for a in train)
            # in ms, over 30 ms (about a drummer's spread) so the loss is near 1
            err = (model(hits, step_ms) - offsets) * step_ms[:, None, None] / 30.0
            loss = (err ** 2 * hits).sum() / hits.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step % 300 == 0:
                share = explained(model, val)
                if share > best:
                    best, best_step = share, step
                    best_state = {k: v.clone() for k, v in model.state_dict().items()}
                print(f"{time.perf_counter() - t0:5.0f} s  step {step}  validation explained "
                      f"{share:.3f}  (best {best:.3f} at {best_step})", flush=True)
            if time.perf_counter() - t0 >= args.minutes * 60:
                break
    if best_state is None:
        raise SystemExit("humanize_ceiling: no validation point in the time given; raise --minutes")
    model.load_state_dict(best_state)
    # Each voice's residual spread on the train split: the sampler's noise at k = 1.
    hits, offsets, step_ms = train
    residual = ms_on_hits(offsets - predict(model, hits, step_ms), hits, step_ms)
    voice = torch.nonzero(hits > 0)[:, 2]
    residual_std = torch.stack([residual[voice == v].std() for v in range(hits.shape[2])])
    print(f"\nregressor from step {best_step}; sampler = prediction + k x N(0, voice's train "
          f"residual std)")
    for name, data in (("validation", val), ("test", test)):
        hits, offsets, step_ms = data
        y = ms_on_hits(offsets, hits, step_ms)
        y_hat = ms_on_hits(predict(model, hits, step_ms), hits, step_ms)
        voice = torch.nonzero(hits > 0)[:, 2]
        print(f"\n{name}: explained {explained(model, data):.3f}, timing MAE {float((y_hat - y).abs().mean()):.2f} ms "
              f"at spread {float(y_hat.std() / y.std()):.2f}; quantized input MAE "
              f"{float(y.abs().mean()):.2f} ms")
        for k in SCALES:
            runs = []
            for seed in range(3):
                g = torch.Generator().manual_seed(seed)
                s = y_hat + k * residual_std[voice] * torch.randn(len(y_hat), generator=g)
                runs.append((float((s - y).abs().mean()), float(s.std() / y.std())))
            mae, spread = np.mean(runs, axis=0)
            print(f"  k = {k:<4g}  timing MAE {mae:6.2f} ms  spread / GMD {spread:.3f}")


if __name__ == "__main__":
    main()
