"""Harmonizer evaluation: the mode-collapse measure and the goal checks on hand-made cases, and
`groove-train evaluate-harmonizer` end to end on a tiny run trained on hand-made chorales."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from groove_live.train import harmonizer_eval as he
from groove_live.train.chorale_data import ChoraleOptions, load_chorale_split, prepare_chorales
from groove_live.train.chorale_metrics import compare
from groove_live.train.cli import main as train_main
from groove_live.train.fit import fit

CADENCE = ((72, 64, 55, 48), (72, 65, 57, 53), (71, 62, 55, 43), (72, 64, 55, 48))  # I IV V I


def _chorale(shift: int, repeats: int = 2) -> list[list[int]]:
    """Half-note chords of the cadence, transposed; the soprano rests on each chord's last 16th."""
    return [[-1 if i == 7 else c[0] + shift, *(p + shift for p in c[1:])]
            for _ in range(repeats) for c in CADENCE for i in range(8)]


@pytest.fixture(scope="module")
def harmonizer(tmp_path_factory):
    """(run folder, chorale cache) of chorale_wgan_gp_tiny trained 2 steps on hand-made chorales."""
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("harmonizer")
    src = root / "jsb.json"
    src.write_text(json.dumps({"train": [_chorale(s) for s in (0, 7, 5)],
                               "valid": [_chorale(2)], "test": [_chorale(-3)]}))
    data = root / "cache"
    prepare_chorales(src, data, ChoraleOptions(transpose=False))
    run = root / "run"
    fit(run, data, "chorale_wgan_gp_tiny", threads=1, progress=False,
        train_overrides={"max_steps": 2, "eval_every": 2, "checkpoint_every": 2, "log_every": 1})
    return run, data


# --- mode collapse --------------------------------------------------------------------------

def test_identical_draws_differ_nowhere_and_all_different_draws_everywhere():
    same = np.tile(np.arange(6).reshape(1, 2, 3), (4, 1, 1))  # 4 draws of one (2, 3) window
    assert he.pairwise_difference(same) == 0.0
    different = same + 10 * np.arange(4)[:, None, None]  # every cell moves in every draw
    assert he.pairwise_difference(different) == 1.0
    half = same.copy()
    half[1, 0] = 99  # draw 1 differs from the others in 3 of 6 cells: 3 of 6 pairs at 1/2
    assert he.pairwise_difference(half) == pytest.approx(3 * 0.5 / 6)


def test_collapse_is_said_when_the_noise_changes_nothing():
    melodies = np.arange(3)[:, None, None, None] * 10 + np.zeros((3, 5, 4, 3), int)
    collapsed = he.collapse_scores(melodies)  # 3 melodies, 5 equal draws each
    assert collapsed == {"within_melody": 0.0, "between_melodies": 1.0, "collapse": True}
    varied = melodies + np.arange(5)[None, :, None, None]
    assert not he.collapse_scores(varied)["collapse"]
    assert he.collapse_scores(varied)["within_melody"] == 1.0


def test_goals_measure_the_gap_to_bach_in_percent_and_against_random():
    rows = {"bach": {"in_scale_ratio": 0.9, "pc_js": 0.10, "pc_js_key": 0.02},
            "model": {"in_scale_ratio": 0.85, "pc_js": 0.105, "pc_js_key": 0.05},
            "random": {"in_scale_ratio": 0.6, "pc_js": 0.30, "pc_js_key": 0.04}}
    g = he.goals(rows)
    assert g["in_key"]["relative_to_bach"] == pytest.approx(0.05 / 0.9)
    assert g["in_key"]["within_10_percent"] and g["in_key"]["ahead_of_random"]
    assert g["pitch_histogram"]["relative_to_bach"] == pytest.approx(0.05)
    assert g["pitch_histogram"]["within_10_percent"] and g["pitch_histogram"]["ahead_of_random"]
    key = g["pitch_histogram_in_key"]  # 150 % above Bach and further from him than random
    assert key["relative_to_bach"] == pytest.approx(1.5)
    assert not key["within_10_percent"] and not key["ahead_of_random"]
    rows["model"]["pc_js"] = 0.05  # closer to the train split than Bach is: passes
    assert he.goals(rows)["pitch_histogram"]["within_10_percent"]


# --- the command ----------------------------------------------------------------------------

def test_cli_scores_a_tiny_run_and_writes_json_and_pngs(harmonizer, tmp_path):
    run, data = harmonizer
    out = tmp_path / "eval"
    result = CliRunner().invoke(train_main, [
        "evaluate-harmonizer", "--run", str(run), "--data", str(data), "--samples", "3",
        "--collapse-melodies", "2", "--out", str(out), "--threads", "1"])
    assert result.exit_code == 0, result.output
    for row in ("bach", "model", "rule", "random"):
        assert f"\n{row} " in result.output
    assert "mode collapse: 3 draws x 2 melodies" in result.output
    saved = json.loads((out / "evaluation.json").read_text())
    assert saved["windows"] == 3  # a 64-step test chorale: 2-bar windows with a 1-bar hop
    bach = compare(load_chorale_split(data, "test"), load_chorale_split(data, "train"))
    assert saved["rows"]["bach"]["in_scale_ratio"] == pytest.approx(bach["in_scale_ratio"])
    assert saved["rows"]["bach"]["polyphony"] == pytest.approx(4 - 2 / 16)  # soprano rests
    assert saved["rows"]["rule"]["empty_bar_rate"] == 0.0
    assert set(saved["goals"]) == {"in_key", "pitch_histogram", "pitch_histogram_in_key"}
    for name in ("accompaniments.png", "bach.png", "training_curves.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_same_seed_gives_the_same_voices(harmonizer):
    model, _ = he.load_harmonizer(harmonizer[0])
    melodies = np.array([[c[0] for c in _chorale(0)][:32]] * 3)
    a, b = he.generate(model, melodies, seed=5, batch_size=2), he.generate(model, melodies, 5)
    assert (a == b).all() and (a[..., 0] == melodies).all() and a.shape == (3, 32, 4)


@pytest.mark.parametrize("case", ["missing run", "no cache", "drum model"])
def test_cli_fails_in_one_line(case, harmonizer, tmp_path, one_line_failure):
    run, data = harmonizer
    if case == "missing run":
        run, want = tmp_path / "nope", "no such run folder"
    elif case == "no cache":
        data, want = tmp_path / "empty", "prepare the chorales first"
    else:
        import sys
        from pathlib import Path
        sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
        from decode_latency import _random_preset_run
        run, want = _random_preset_run(tmp_path, "groovae_tiny"), "not a harmonizer"
    result = CliRunner().invoke(train_main, ["evaluate-harmonizer", "--run", str(run),
                                             "--data", str(data)])
    line = one_line_failure(result, "groove-train")
    assert result.exit_code == 2 and want in line, line
