"""MusicVAE evaluation: the metric definitions on hand-made cases with known answers, the
scoring path with an oracle model, `groove-train evaluate-musicvae` end to end on tiny runs,
and the hand-written patterns of benchmarks/user_patterns.py."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from groove_live.drum_classes import class_bits
from groove_live.pattern import Patterns
from groove_live.spec import ModelSpec
from groove_live.train import musicvae_eval as me
from groove_live.train.cli import main as train_main

GMD = Path(__file__).parents[1] / "fixtures" / "gmd"
USER_PATTERNS = Path(__file__).parents[2] / "benchmarks" / "user_patterns.py"
SPEC2 = ModelSpec(kind="categorical", bars=2)
NAMES = SPEC2.drum_names
KICK, SNARE, CLOSED = (NAMES.index(n) for n in ("kick", "snare", "closed_hihat"))


def grid(cells, steps=32, voices=9, n=1) -> np.ndarray:
    """(n, steps, voices) hits with the (step, voice) cells set in every window."""
    h = np.zeros((n, steps, voices), np.float32)
    for step, voice in cells:
        h[:, step, voice] = 1
    return h


ROCK = [(s, CLOSED) for s in range(0, 32, 2)] + [(0, KICK), (16, KICK), (4, SNARE), (12, SNARE),
                                                 (20, SNARE), (28, SNARE)]


# --- per-step accuracy and F1 -------------------------------------------------------------

def test_step_accuracy_counts_a_step_right_only_when_every_voice_is():
    real = grid(ROCK)
    assert me.step_accuracy(real, real) == 1.0
    # Hats on the 16 even steps: silence gets the 16 odd steps right.
    assert me.step_accuracy(real, np.zeros_like(real)) == 0.5
    # One voice wrong at one step (a kick added on a hat step) makes that whole step wrong.
    one_off = real.copy()
    one_off[0, 2, KICK] = 1
    assert me.step_accuracy(real, one_off) == pytest.approx(31 / 32)
    assert me.hit_f1(real, one_off) == pytest.approx(2 * 22 / (2 * 22 + 1))
    assert me.hit_f1(real, np.zeros_like(real)) == 0.0
    with pytest.raises(ValueError):
        me.step_accuracy(real, real[:, :16])


def test_most_common_class_per_step_and_its_baseline():
    # Three windows: two play a kick at step 0, one a snare; all silent elsewhere but step 5.
    h = np.concatenate([grid([(0, KICK)]), grid([(0, KICK), (5, SNARE)]), grid([(0, SNARE)])])
    classes = me.most_common_classes(h)
    assert classes.shape == (32,)
    assert classes[0] == 1 << KICK and classes[5] == 0 and classes[31] == 0
    base = me.baseline_hits(classes, 3, 9)
    assert base.shape == (3, 32, 9)
    np.testing.assert_array_equal(base[2], grid([(0, KICK)])[0])
    # Right at every step but step 0 of the third window and step 5 of the second.
    assert me.step_accuracy(h, base) == pytest.approx(1 - 2 / 96)


# --- song structure -----------------------------------------------------------------------

def test_a_phrase_of_one_repeated_bar_has_self_similarity_one_and_no_fills():
    bar = [(s, CLOSED) for s in range(0, 16, 2)] + [(0, KICK), (4, SNARE)]
    phrase = grid([(s + 16 * b, v) for b in range(16) for s, v in bar], steps=256)
    assert me.bar_self_similarity(phrase, 16) == pytest.approx([1.0])
    assert not me.fill_bars(phrase, 16).any()
    silent = np.zeros((1, 64, 9), np.float32)
    assert me.bar_self_similarity(silent, 16) == pytest.approx([1.0])  # silent bars are alike


def test_self_similarity_is_the_mean_jaccard_over_pairs_of_bars():
    # Bars: A = {kick@0, snare@4}, B = {kick@0, hat@8}, C = {} ; J(A,B) = 1/3, J(A,C) = 0,
    # J(B,C) = 0: mean 1/9. Disjoint two-bar phrase: 0.
    phrase = grid([(0, KICK), (4, SNARE), (16, KICK), (24, CLOSED)], steps=48)
    assert me.bar_self_similarity(phrase, 16) == pytest.approx([1 / 9])
    disjoint = grid([(0, KICK), (16, SNARE)])
    assert me.bar_self_similarity(disjoint, 16) == pytest.approx([0.0])


def test_fill_share_counts_bars_above_the_phrase_median():
    # Four bars of 2, 2, 2 and 5 hits: median 2, one fill.
    cells = [(b * 16, KICK) for b in range(4)] + [(b * 16 + 4, SNARE) for b in range(4)]
    cells += [(48 + 8, CLOSED), (48 + 9, CLOSED), (48 + 10, CLOSED)]
    phrase = grid(cells, steps=64)
    np.testing.assert_array_equal(me.fill_bars(phrase, 16), [[False, False, False, True]])
    # 1, 2, 3, 4 hits: median 2.5, the last two bars are fills.
    rising = grid([(b * 16 + k, CLOSED) for b in range(4) for k in range(b + 1)], steps=64)
    s = me.structure_summary(np.concatenate([phrase, rising]), 16)
    assert s["fill_share"] == pytest.approx(3 / 8)
    assert s["hits_per_bar"] == pytest.approx((11 + 10) / 8)
    assert s["n_phrases"] == 2


def test_spread_indices_cover_the_split_evenly():
    np.testing.assert_array_equal(me.spread_indices(5, None), np.arange(5))
    np.testing.assert_array_equal(me.spread_indices(5, 9), np.arange(5))
    np.testing.assert_array_equal(me.spread_indices(101, 3), [0, 50, 100])


# --- the scoring path, with an oracle ------------------------------------------------------

class Oracle(torch.nn.Module):
    """A categorical 'model' that knows the answer: z is the pattern itself, the teacher logits
    point at the true class and free-running decoding unpacks z (noise and temperature ignored).
    Whatever the batching, every mode must then score 1."""

    def __init__(self, spec):
        super().__init__()
        self.spec = spec
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.decoder = type("D", (), {"bits": torch.from_numpy(class_bits(spec.n_drums))})()

    @staticmethod
    def training_inputs(patterns, spec):
        return np.ascontiguousarray(patterns.hits, np.float32)

    def encode(self, x):
        return x.flatten(1), torch.ones_like(x.flatten(1))

    def teacher_logits(self, z, hits):
        weights = 2 ** torch.arange(hits.shape[-1])
        classes = (hits * weights).sum(-1).long()
        return torch.nn.functional.one_hot(classes, self.spec.n_classes).float()

    def generate_hits(self, z, temperature, noise):
        assert noise.shape == (z.shape[0], self.spec.steps, 1)
        return z.view(z.shape[0], self.spec.steps, self.spec.n_drums)


def test_an_oracle_scores_one_in_every_mode_across_batches():
    rng = np.random.default_rng(0)
    hits = (rng.random((7, 32, 9)) < 0.2).astype(np.float32)
    patterns = Patterns(hits, hits * 0.6, np.zeros_like(hits))
    out = me.reconstructions(Oracle(SPEC2), SPEC2, patterns, temperature=1.0, batch_size=3)
    assert set(out) == {"teacher_forced", "greedy", "sampled"}
    for mode, got in out.items():
        assert me.scores(hits, got) == {"step_accuracy": 1.0, "hit_f1": 1.0}, mode


# --- end to end on tiny runs --------------------------------------------------------------

def _fit(run, data, preset):
    from groove_live.train.fit import fit

    threads = torch.get_num_threads()
    try:
        fit(run, data, preset, None, {"max_steps": 3, "eval_every": 3, "checkpoint_every": 3},
            progress=False, threads=1)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cat_run(tmp_path_factory):
    """cat_drums_2bar_tiny trained 3 steps on 2-bar windows of the GMD fixture."""
    from groove_live.train.data import PrepareOptions, prepare

    root = tmp_path_factory.mktemp("cat")
    prepare(GMD, root / "data", PrepareOptions(bars=2), progress=False)
    _fit(root / "run", root / "data", "cat_drums_2bar_tiny")
    return root / "run", root / "data"


def _write_cache(folder: Path, spec: ModelSpec, splits: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, hits in splits.items():
        np.savez_compressed(folder / f"{split}.npz", hits=hits.astype(np.uint8),
                            midi_velocities=(hits * 80).astype(np.uint8),
                            offsets=np.zeros_like(hits, np.float32),
                            bpm=np.full(len(hits), 100.0, np.float32))
    (folder / "dataset.json").write_text(json.dumps({"spec": spec.to_dict(),
                                                     "description": "made-up windows"}))
    return folder


@pytest.fixture(scope="module")
def hier_run(tmp_path_factory):
    """hierdec_drums_16bar_tiny trained 3 steps on made-up 16-bar phrases (the GMD fixture's
    files are too short for many 16-bar windows): a repeated bar with a fill every 4th bar."""
    root = tmp_path_factory.mktemp("hier")
    bar = grid([(s, CLOSED) for s in range(0, 16, 2)] + [(0, KICK), (4, SNARE), (12, SNARE)],
               steps=16)
    fill = grid([(s, SNARE) for s in range(16)] + [(0, KICK)], steps=16)
    phrase = np.concatenate([fill if b % 4 == 3 else bar for b in range(16)], axis=1)
    data = _write_cache(root / "data", ModelSpec(bars=16), {
        split: np.repeat(phrase, n, axis=0) for split, n in
        (("train", 24), ("validation", 4), ("test", 6))})
    _fit(root / "run", data, "hierdec_drums_16bar_tiny")
    return root / "run", data, phrase


def test_cli_scores_a_categorical_run_and_writes_json(cat_run, tmp_path):
    run, data = cat_run
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(train_main, [
        "evaluate-musicvae", "--run", str(run), "--data", str(data), "--max-windows", "12",
        "--structure", "5", "--out", str(out), "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "0.979 / 0.917  <- this model's row" in result.output
    r = json.loads(out.read_text())
    assert r["kind"] == "categorical" and r["n_windows"] == 12 and r["paper_anchor"]
    for row in r["rows"].values():
        for mode in ("teacher_forced", "greedy", "sampled"):
            assert 0.0 <= row[mode]["step_accuracy"] <= 1.0
    # The silent baseline's accuracy is the share of silent steps in the scored windows.
    from groove_live.train.data import load_split
    test, _ = load_split(data, "test")
    chosen = test.hits[me.spread_indices(len(test), 12)]
    silent = r["rows"]["baseline: all silent"]["greedy"]["step_accuracy"]
    assert silent == pytest.approx(float((chosen.sum(-1) == 0).mean()))
    assert r["structure"]["model"]["n_phrases"] == 5
    assert r["structure"]["gmd"]["n_phrases"] == len(test)


def test_cli_structure_of_a_hierarchical_run_against_known_data(hier_run, tmp_path):
    run, data, phrase = hier_run
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(train_main, [
        "evaluate-musicvae", "--run", str(run), "--data", str(data), "--structure", "3",
        "--temperature", "0.5", "--out", str(out), "--threads", "1"])
    assert result.exit_code == 0, result.output
    r = json.loads(out.read_text())
    assert r["bars"] == 16 and r["paper_anchor"] == "16-bar drums, hierarchical"
    gmd = r["structure"]["gmd"]
    # 12 groove bars of 11 cells, 4 fill bars of 17 sharing 3 of them (union 25): the 66
    # groove pairs and 6 fill pairs score 1, the 48 mixed pairs 3/25. The median bar has 11
    # hits, so the 4 fill bars are the fills.
    assert gmd["fill_share"] == pytest.approx(0.25)
    assert gmd["self_similarity"] == pytest.approx((66 + 6 + 48 * 3 / 25) / 120)
    # The train split is that phrase only, so its most common classes reproduce it exactly.
    assert r["rows"]["baseline: train's most common class per step"]["teacher_forced"] == {
        "step_accuracy": 1.0, "hit_f1": 1.0}


def test_cli_refuses_a_cache_of_another_length_in_one_line(cat_run, hier_run, one_line_failure):
    result = CliRunner().invoke(train_main, [
        "evaluate-musicvae", "--run", str(cat_run[0]), "--data", str(hier_run[1])])
    line = one_line_failure(result, "groove-train")
    assert result.exit_code == 2 and "--bars 2" in line


def test_cli_refuses_a_task_model_in_one_line(cat_run, tmp_path, one_line_failure):
    _fit(tmp_path / "humanize", cat_run[1], "groovae_2bar_humanize_tiny")
    result = CliRunner().invoke(train_main, [
        "evaluate-musicvae", "--run", str(tmp_path / "humanize"), "--data", str(cat_run[1])])
    line = one_line_failure(result, "groove-train")
    assert result.exit_code == 2 and "'conditioned'" in line and "evaluate-task" in line


# --- hand-written user patterns -----------------------------------------------------------

def _user_patterns():
    spec = importlib.util.spec_from_file_location("user_patterns", USER_PATTERNS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("bars", [2, 4, 16])
def test_user_patterns_are_quantized_two_bar_patterns_tiled_to_the_phrase(bars):
    up = _user_patterns()
    spec = ModelSpec(bars=bars)
    named = up.load_patterns(up.PATTERNS_DIR, spec)
    assert len(named) >= 10 and all(desc for _, desc, _ in named)
    p = Patterns.concat([pattern for _, _, pattern in named])
    assert p.hits.shape == (len(named), 16 * bars, 9) and np.all(p.offsets == 0)
    assert np.all(p.hits.sum(axis=(1, 2)) > 0)
    np.testing.assert_array_equal(p.hits, np.tile(p.hits[:, :32], (1, bars // 2, 1)))


def test_user_patterns_refuse_a_pattern_longer_than_two_bars(tmp_path):
    up = _user_patterns()
    (tmp_path / "long.txt").write_text("# three bars\nkick " + "x..." * 12 + "\n")
    with pytest.raises(up.StepPatternError, match="long.txt"):
        up.load_patterns(tmp_path, ModelSpec(bars=4))


def test_user_patterns_benchmark_runs_torch_free_on_the_toy_model(toy_model_path, tmp_path,
                                                                 run_torch_free):
    out = tmp_path / "up.json"
    result = run_torch_free(f"""
        import runpy
        sys.argv = ["user_patterns.py", "--model", sys.argv[1], "--json", sys.argv[2]]
        try:
            runpy.run_path({str(USER_PATTERNS)!r}, run_name="__main__")
        except SystemExit as e:
            assert e.code == 0, e.code
    """, toy_model_path, out)
    assert result.returncode == 0, result.stderr
    assert "goal: mean endpoint hit F1 >= 0.9" in result.stdout
    assert result.stdout.strip().endswith("torch-free")
    r = json.loads(out.read_text())
    assert len(r["patterns"]) >= 10 and 0.0 <= r["mean_hit_f1"] <= 1.0
