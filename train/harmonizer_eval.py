"""Evaluate a trained chorale harmonizer (spec kind "pitched") against Bach and the baselines.

Every window's melody of a split is harmonized by the run's generator (one fixed seed), and the
result is scored with chorale_metrics.compare against the training split, next to Bach's own
voices for the same melodies, the rule-based and the random harmonizer (the same table as
chorale_baselines.baseline_table, plus the mean pitch per voice).

Goals, as computed by `goals`:
- in-key: |model in_scale - Bach in_scale| / Bach in_scale <= 10 %.
- pitch-histogram distance: the model's pitch-class Jensen-Shannon distance to the training
  split is at most 10 % above Bach's own test voices' distance to it,
  (model pc_js - Bach pc_js) / Bach pc_js <= 10 % (lower than Bach passes); the absolute values
  are reported beside it, because Bach's own distance is small and 10 % of it is smaller still.
  The same check on the key-relative histogram (pc_js_key) is the one to judge by: the train
  split is transposed into every key, so its absolute pitch-class histogram is nearly flat and
  random notes come closer to it than Bach's untransposed test chorales do.
- clearly ahead of random: on both numbers the model's gap to Bach is at most half the random
  harmonizer's gap.

Mode collapse: for each of M melodies, K noise draws; the share of (step, voice) cells of the
accompaniment whose pitch differs between two draws, averaged over the pairs (within melody),
and the same between the draws of different melodies with the same draw index (for scale). A
GAN whose noise does nothing has a within-melody difference of ~0.
"""
from __future__ import annotations

import csv
import json
from itertools import combinations
from pathlib import Path

import numpy as np

from groove_live.atomic_io import atomic_path
from groove_live.chorale import REST, STEPS_PER_BAR, VOICES, melody_roll, roll_to_voices

from .chorale_baselines import TABLE_COLUMNS, format_table, harmonize_random, harmonize_rule
from .chorale_metrics import compare
from .evaluate import json_safe

GOAL_SHARE = 0.10  # "within 10 % of Bach"
AHEAD_SHARE = 0.5  # the model's gap to Bach at most this share of random's
# Below this within-melody difference the noise changes almost nothing: the generator ignores it.
COLLAPSE_DIFFERENCE = 0.01
PLOT_WINDOWS = 4
MEAN_COLUMNS = tuple(f"range/{v}/mean" for v in VOICES)
VOICE_COLORS = ("black", "tab:red", "tab:green", "tab:blue")
CURVE_PANELS = (("losses", ("critic_loss", "generator_loss", "wasserstein")),
                ("gradient penalty", ("gradient_penalty",)),
                ("validation metrics", ("empty_bar_rate", "in_scale_ratio", "pc_js")),
                ("validation polyphony", ("polyphony",)))


class HarmonizerEvalError(ValueError):
    """A run or cache this evaluation cannot use; the message is one line for the user."""


def load_harmonizer(run_dir, which: str = "best"):
    """(model in eval mode, spec) of a pitched run, or HarmonizerEvalError."""
    from .run import RunError, load_model  # torch only when a model is needed

    try:
        model, _, spec = load_model(run_dir, which)
    except RunError as e:
        raise HarmonizerEvalError(str(e)) from None
    if spec.kind != "pitched":
        raise HarmonizerEvalError(f"{run_dir}: a {spec.kind} model, not a harmonizer "
                                  f"(kind pitched)")
    return model, spec


def generate(model, melodies: np.ndarray, seed: int, batch_size: int = 256) -> np.ndarray:
    """(N, T) melody pitches -> (N, T, 4) voices: the melody, then the generator's voices.
    One torch.Generator seeded once: the same seed and order give the same voices."""
    import torch

    m = np.asarray(melodies, dtype=np.int64)
    gen = torch.Generator().manual_seed(seed)
    out = []
    with torch.no_grad():
        for start in range(0, len(m), batch_size):
            chunk = m[start:start + batch_size]
            roll = torch.from_numpy(melody_roll(chunk)[..., 0].astype(np.float32))
            rolls = model(model.noise(len(chunk), "cpu", gen), roll)
            out.append(roll_to_voices(rolls.numpy()))
    voices = np.concatenate(out) if out else np.zeros((0, m.shape[1], 3), np.int64)
    return np.concatenate([m[..., None], voices], axis=-1)


def pairwise_difference(samples: np.ndarray) -> float:
    """(K, T, V) pitches -> mean over the K*(K-1)/2 pairs of the share of cells that differ."""
    s = np.asarray(samples)
    pairs = list(combinations(range(len(s)), 2))
    if not pairs:
        return float("nan")
    return float(np.mean([(s[i] != s[j]).mean() for i, j in pairs]))


def collapse_scores(draws: np.ndarray) -> dict[str, float | bool]:
    """(M melodies, K draws, T, V) accompaniment pitches -> within-melody and between-melody
    pairwise differences, and whether that looks like mode collapse."""
    d = np.asarray(draws)
    within = float(np.mean([pairwise_difference(d[m]) for m in range(d.shape[0])]))
    between = float(np.mean([pairwise_difference(d[:, k]) for k in range(d.shape[1])]))
    return {"within_melody": within, "between_melodies": between,
            "collapse": bool(within < COLLAPSE_DIFFERENCE)}


def spread(n: int, k: int) -> np.ndarray:
    """k indices evenly over range(n) (all of them when k >= n)."""
    if not n:
        return np.zeros(0, int)
    return np.unique(np.linspace(0, n - 1, min(n, k)).round().astype(int))


def mode_collapse(model, melodies: np.ndarray, n_melodies: int, samples: int,
                  seed: int) -> dict:
    sounding = np.flatnonzero((melodies != REST).any(axis=1))
    chosen = melodies[sounding[spread(len(sounding), n_melodies)]]
    if len(chosen) == 0 or samples < 2:
        return {"melodies": int(len(chosen)), "samples": samples, "within_melody": None,
                "between_melodies": None, "collapse": None}
    voices = generate(model, np.repeat(chosen, samples, axis=0), seed)[..., 1:]
    draws = voices.reshape(len(chosen), samples, *voices.shape[1:])
    return {"melodies": int(len(chosen)), "samples": samples, **collapse_scores(draws)}


def goals(rows: dict[str, dict[str, float]]) -> dict:
    """The goal checks of the module docstring, from the table's rows."""
    bach, model, rand = rows["bach"], rows["model"], rows["random"]
    out = {}
    for name, metric, within_of in (
            ("in_key", "in_scale_ratio", lambda m, b: abs(m - b) / b),
            ("pitch_histogram", "pc_js", lambda m, b: (m - b) / b),
            ("pitch_histogram_in_key", "pc_js_key", lambda m, b: (m - b) / b)):
        b, m, r = bach[metric], model[metric], rand[metric]
        share = within_of(m, b) if b else float("inf") if m != b else 0.0
        out[name] = {"metric": metric, "bach": b, "model": m, "random": r,
                     "relative_to_bach": share, "within_10_percent": bool(share <= GOAL_SHARE),
                     "ahead_of_random": bool(abs(m - b) <= AHEAD_SHARE * abs(r - b)
                                             and abs(m - b) < abs(r - b))}
    return out


def describe_goals(g: dict, collapse: dict) -> str:
    lines = []
    for name, how in (("in_key", "|model - Bach| / Bach"),
                      ("pitch_histogram", "(model - Bach) / Bach"),
                      ("pitch_histogram_in_key", "(model - Bach) / Bach")):
        x = g[name]
        lines.append(f"{name}: {x['metric']} model {x['model']:.4f}, Bach {x['bach']:.4f}, "
                     f"random {x['random']:.4f}; {how} = {100 * x['relative_to_bach']:+.1f} % "
                     f"({'within' if x['within_10_percent'] else 'NOT within'} 10 %), "
                     f"{'ahead of' if x['ahead_of_random'] else 'NOT clearly ahead of'} random")
    if collapse.get("within_melody") is None:
        lines.append("mode collapse: not measured (needs a sounding melody and 2+ samples)")
    else:
        lines.append(f"mode collapse: {collapse['samples']} draws x {collapse['melodies']} "
                     f"melodies, cells differing within a melody "
                     f"{collapse['within_melody']:.3f}, between melodies "
                     f"{collapse['between_melodies']:.3f} -> "
                     f"{'COLLAPSE' if collapse['collapse'] else 'no collapse'}")
    return "\n".join(lines)


def roll_png(windows: np.ndarray, path: Path, title: str) -> None:
    """A few (T, 4) windows, each as a pitch/time grid with one color per voice."""
    from groove_live.plot import _figure

    fig = _figure(5.0 * len(windows), 4.0)
    axes = fig.subplots(1, len(windows), squeeze=False)[0]
    for i, (ax, w) in enumerate(zip(axes, windows)):
        for v, (name, color) in enumerate(zip(VOICES, VOICE_COLORS)):
            p = w[:, v]
            # one bar per run of a held pitch: the data has no onsets
            starts = np.flatnonzero(np.r_[True, p[1:] != p[:-1]])
            runs = [(s, e - s) for s, e in zip(starts, np.r_[starts[1:], len(p)]) if p[s] != REST]
            for k, (s, n) in enumerate(runs):
                ax.broken_barh([(s, n)], (p[s] - 0.4, 0.8), color=color,
                               label=name if k == 0 else None)
        for bar in range(0, w.shape[0] + 1, STEPS_PER_BAR):
            ax.axvline(bar, color="0.8", linewidth=0.8)
        ax.set_xlabel("16th step")
        ax.set_ylabel("MIDI pitch")
        ax.set_title(f"{title} {i + 1}", fontsize=9)
        ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def curves_png(metrics_csv: Path, path: Path) -> bool:
    """The run's training curves (train lines, validation dots) over generator steps; False
    when the run has no metrics.csv yet."""
    from groove_live.plot import _figure

    if not metrics_csv.is_file():
        return False
    with open(metrics_csv, newline="") as f:
        rows = list(csv.DictReader(f))

    def points(split, name):
        pts = []
        for r in rows:
            try:
                if r.get("split") == split and r.get(name):
                    pts.append((int(r["step"]), float(r[name])))
            except ValueError:  # a half-written last line of a run still training
                continue
        return pts

    fig = _figure(18.0, 4.0)
    for ax, (title, names) in zip(fig.subplots(1, len(CURVE_PANELS)), CURVE_PANELS):
        for split, style in (("train", "-"), ("validation", "o-")):
            for name in names:
                if pts := points(split, name):
                    ax.plot(*zip(*pts), style, label=f"{split} {name}", alpha=0.8, markersize=3)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("generator step")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return True


def evaluate_harmonizer(run_dir, data_dir, split: str = "test", seed: int = 0,
                        samples: int = 8, collapse_melodies: int = 16,
                        max_windows: int | None = None, which: str = "best",
                        out: str | Path | None = None) -> dict:
    """Everything this module measures, as a dict (with "table" and "summary" text)."""
    from .chorale_data import ChoraleDataError, load_chorale_split

    model, spec = load_harmonizer(run_dir, which)
    try:
        reference = load_chorale_split(data_dir, "train")
        windows = load_chorale_split(data_dir, split)
    except ChoraleDataError as e:
        raise HarmonizerEvalError(str(e)) from None
    if windows.shape[1] != spec.steps:
        raise HarmonizerEvalError(f"{data_dir}: windows of {windows.shape[1]} steps, the "
                                  f"model harmonizes {spec.steps}")
    if len(windows) == 0 or len(reference) == 0:
        raise HarmonizerEvalError(f"{data_dir}: the {split} or train split has no windows")
    if max_windows:
        windows = windows[spread(len(windows), max_windows)]
    melodies = windows[:, :, 0]
    generated = generate(model, melodies, seed)
    rng = np.random.default_rng(seed)
    rows = {"bach": compare(windows, reference),
            "model": compare(generated, reference),
            "rule": compare(np.stack([harmonize_rule(m) for m in melodies]), reference),
            "random": compare(np.stack([harmonize_random(m, rng) for m in melodies]), reference)}
    g = goals(rows)
    collapse = mode_collapse(model, melodies, collapse_melodies, samples, seed)
    table = format_table(rows, TABLE_COLUMNS + MEAN_COLUMNS)
    result = {"run": str(run_dir), "model": spec.run_id, "split": split, "seed": seed,
              "windows": int(len(windows)), "rows": rows, "goals": g, "mode_collapse": collapse,
              "table": table, "summary": describe_goals(g, collapse)}
    if out is not None:
        result["files"] = write_outputs(Path(out), result, windows, generated, Path(run_dir))
    return result


def write_outputs(out: Path, result: dict, windows: np.ndarray, generated: np.ndarray,
                  run_dir: Path) -> dict[str, str]:
    """evaluation.json, accompaniments.png (model and Bach on the same melodies) and
    training_curves.png (when the run has a metrics.csv) into out."""
    from groove_live.plot import PlotUnavailable

    try:
        out.mkdir(parents=True, exist_ok=True)
        files = {}
        sounding = np.flatnonzero((windows[:, :, 0] != REST).any(axis=1))
        pick = sounding[spread(len(sounding), PLOT_WINDOWS)]
        if len(pick):
            roll_png(generated[pick], out / "accompaniments.png", "model")
            roll_png(windows[pick], out / "bach.png", "Bach")
            files.update(accompaniments=str(out / "accompaniments.png"),
                         bach=str(out / "bach.png"))
        if curves_png(run_dir / "metrics.csv", out / "training_curves.png"):
            files["training_curves"] = str(out / "training_curves.png")
        files["json"] = str(out / "evaluation.json")
        with atomic_path(out / "evaluation.json") as tmp:
            tmp.write_text(json.dumps(json_safe({**result, "files": files}), indent=1))
    except PlotUnavailable as e:
        raise HarmonizerEvalError(str(e)) from None
    except OSError as e:
        raise HarmonizerEvalError(f"{out}: cannot write ({e.strerror or e})") from None
    return files
