"""Task-model metrics and baselines on hand-made patterns with known answers, and the runner
end to end on a small made-up dataset."""
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from groove_live.pattern import Patterns
from groove_live.spec import ModelSpec
from groove_live.train import task_eval as te
from groove_live.train.cli import main as train_main
from groove_live.train.config import PRESETS
from groove_live.transforms import task_input

SPEC = ModelSpec(bars=2)  # the windows of every task model: 2 bars of 16 steps, 9 voices
NAMES = SPEC.drum_names
KICK, SNARE, CLOSED, OPEN = (NAMES.index(n) for n in ("kick", "snare", "closed_hihat",
                                                      "open_hihat"))
TOY_MODEL = Path(__file__).parents[1] / "fixtures" / "toy_model.onnx"


def played(n=40, seed=0, density=0.2) -> Patterns:
    """Random played windows: hits, velocities in (0, 1], offsets in [-0.3, 0.3]."""
    rng = np.random.default_rng(seed)
    shape = (n, SPEC.steps, SPEC.n_drums)
    hits = (rng.random(shape) < density).astype(np.float32)
    velocities = np.rint(rng.uniform(20, 127, shape)) / 127 * hits
    offsets = rng.uniform(-0.3, 0.3, shape) * hits
    return Patterns(hits, velocities, offsets)


def one_window(cells, velocity=0.5, offset=0.0) -> Patterns:
    """One window with hits at (step, voice) cells."""
    p = Patterns.empty(1, SPEC)
    for step, voice in cells:
        p.hits[0, step, voice] = 1
        p.velocities[0, step, voice] = velocity
        p.offsets[0, step, voice] = offset
    return p


def test_hit_f1_is_one_for_identical_and_zero_for_disjoint():
    a = one_window([(0, KICK), (4, SNARE), (2, CLOSED)])
    b = one_window([(1, KICK), (5, SNARE), (3, CLOSED)])
    same = te.hit_f1(a, a, NAMES)
    assert same["f1"] == 1.0 and same["per_voice"]["kick"] == 1.0
    apart = te.hit_f1(a, b, NAMES)
    assert apart["f1"] == 0.0 and apart["precision"] == 0.0 and apart["recall"] == 0.0
    # Two of three predicted hats right, one real hat missed: P = 2/3, R = 2/3.
    real = one_window([(0, CLOSED), (2, CLOSED), (4, CLOSED)])
    pred = one_window([(0, CLOSED), (2, CLOSED), (6, OPEN)])
    hats = te.hit_f1(real, pred, NAMES, ("closed_hihat", "open_hihat"))
    assert hats["f1"] == pytest.approx(2 / 3)
    assert set(hats["per_voice"]) == {"closed_hihat", "open_hihat"}
    assert hats["per_voice"]["open_hihat"] == 0.0


def test_maes_of_known_shifts_at_each_windows_tempo():
    real = Patterns.concat([one_window([(0, KICK), (8, SNARE)], 0.5, 0.0)] * 2)
    pred = Patterns.concat([one_window([(0, KICK), (8, SNARE)], 0.5 + 10 / 127, 0.1)] * 2)
    assert te.velocity_mae_midi(real, pred) == pytest.approx(10.0)
    # 0.1 step is 12.5 ms at 120 bpm (a 16th is 125 ms) and 25 ms at 60 bpm: mean 18.75.
    assert te.timing_mae_ms(real, pred, np.array([120.0, 60.0])) == pytest.approx(18.75)
    # A real hit the prediction dropped counts its whole velocity by default...
    dropped = Patterns(pred.hits.copy(), pred.velocities.copy(), pred.offsets.copy())
    dropped.hits[0, 0, KICK] = dropped.velocities[0, 0, KICK] = 0
    assert te.velocity_mae_midi(real, dropped) == pytest.approx((3 * 10 + 63.5) / 4)
    # ...and an empty mask has no MAE rather than a flattering 0.
    assert np.isnan(te.timing_mae_ms(real, pred, 120.0, np.zeros_like(real.hits, bool)))


def test_timing_explained_is_zero_for_the_grid_one_for_the_take_and_known_between():
    real = Patterns.concat([one_window([(0, KICK), (8, SNARE)], 0.5, 0.2),
                            one_window([(0, KICK), (8, SNARE)], 0.5, 0.1)])
    bpm = np.array([120.0, 60.0])  # 25 ms and 25 ms: the two windows weigh the same
    grid = Patterns(real.hits.copy(), real.velocities.copy(), np.zeros_like(real.offsets))
    assert te.timing_explained(real, grid, bpm) == pytest.approx(0.0)
    assert te.timing_explained(real, real, bpm) == pytest.approx(1.0)
    half = Patterns(real.hits.copy(), real.velocities.copy(), real.offsets / 2)
    assert te.timing_explained(real, half, bpm) == pytest.approx(0.75)  # 1 - (1/2)^2
    wrong_way = Patterns(real.hits.copy(), real.velocities.copy(), -real.offsets)
    assert te.timing_explained(real, wrong_way, bpm) == pytest.approx(-3.0)
    # Nothing to explain: no number rather than a flattering one.
    assert np.isnan(te.timing_explained(grid, real, bpm))


def test_unchanged_baseline_is_the_input_and_has_no_spread():
    real = played()
    unchanged = te.unchanged_baseline(real, SPEC)
    np.testing.assert_array_equal(unchanged.hits, real.hits)
    assert set(np.unique(unchanged.velocities[real.hits > 0])) == {np.float32(0.6)}
    scores = te.humanize_scores(real, unchanged, np.full(len(real), 120.0), SPEC)
    assert scores["offset_std_ratio"] == 0.0 and scores["velocity_std_ratio"] == 0.0
    assert scores["windows_with_changed_hits"] == 0
    # Its timing MAE is the mean |real offset| in ms.
    expected = np.abs(real.offsets[real.hits > 0]).mean() * 125.0
    assert scores["timing_mae_ms"] == pytest.approx(expected, rel=1e-5)


def test_changed_hits_are_counted_per_window_and_voice():
    real = played(n=5)
    out = Patterns(real.hits.copy(), real.velocities, real.offsets)
    assert te.windows_with_changed_hits(out, real) == 0
    out.hits[3, 7, KICK] = 1 - out.hits[3, 7, KICK]
    out.hits[1, 2, CLOSED] = 1 - out.hits[1, 2, CLOSED]
    assert te.windows_with_changed_hits(out, real) == 2
    not_hats = ~np.isin(np.array(NAMES), ("closed_hihat", "open_hihat"))
    assert te.windows_with_changed_hits(out, real, not_hats) == 1


def test_spreads_need_enough_hits_per_voice():
    p = one_window([(s, KICK) for s in range(0, 32, 2)], 0.5, 0.0)
    p.offsets[0, ::4, KICK] = 0.2  # half the kicks at +0.2: std 0.1
    s = te.spreads(p, NAMES, min_hits=10)
    assert s["offset_std"]["kick"] == pytest.approx(0.1) and s["n_hits"]["kick"] == 16
    assert s["offset_std"]["snare"] is None and s["velocity_std_midi"]["kick"] == 0.0
    assert te.spreads(p, NAMES, min_hits=17)["offset_std"]["kick"] is None
    ratios = te.spread_ratios(s, {"offset_std": {"all": 0.05, "kick": 0.2},
                                  "velocity_std_midi": {"all": 0.0, "kick": 1.0}})
    assert ratios["offset"]["kick"] == pytest.approx(0.5)
    assert ratios["offset"]["all"] == pytest.approx(2.0)
    assert ratios["velocity"]["all"] is None  # no reference spread: no ratio


def test_jitter_baseline_keeps_hits_and_has_each_voices_spread():
    real = played(n=400, density=0.5)
    velocity_std, offset_std = np.zeros(SPEC.n_drums), np.zeros(SPEC.n_drums)
    velocity_std[KICK], offset_std[KICK] = 0.1, 0.05
    a = te.jitter_baseline(real, SPEC, velocity_std, offset_std, seed=3)
    assert a.hits.shape == real.hits.shape
    np.testing.assert_array_equal(a.hits, real.hits)
    np.testing.assert_array_equal(a.velocities, te.jitter_baseline(
        real, SPEC, velocity_std, offset_std, seed=3).velocities)
    kicks = real.hits[..., KICK] > 0
    assert np.std(a.offsets[..., KICK][kicks]) == pytest.approx(0.05, rel=0.05)
    assert np.std(a.velocities[..., KICK][kicks]) == pytest.approx(0.1, rel=0.05)
    snares = real.hits[..., SNARE] > 0
    assert np.all(a.offsets[..., SNARE][snares] == 0)
    assert np.all(a.velocities[..., SNARE][snares] == np.float32(0.6))
    assert np.all(a.velocities[real.hits == 0] == 0) and np.all(a.offsets[real.hits == 0] == 0)
    v, o = te.voice_spreads(real)
    assert v.shape == o.shape == (SPEC.n_drums,)
    assert o[KICK] == pytest.approx(np.std(real.offsets[..., KICK][kicks]))


def test_common_pattern_baseline_takes_the_commonest_at_the_nearest_tap_count():
    four_on_floor = one_window([(s, KICK) for s in range(0, 32, 4)])  # 8 taps
    backbeat = one_window([(s, SNARE) for s in range(4, 32, 8)])  # 4 taps
    other8 = one_window([(s, CLOSED) for s in range(0, 16, 2)])  # 8 taps, less common
    other4 = one_window([(s, KICK) for s in range(0, 32, 8)])  # 4 taps, met after backbeat
    train = Patterns.concat([other8, four_on_floor, four_on_floor, backbeat, other4])
    table = te.common_patterns(train)
    assert sorted(table) == [4, 8]
    np.testing.assert_array_equal(table[8], four_on_floor.hits[0])
    np.testing.assert_array_equal(table[4], backbeat.hits[0])  # a tie: the first met
    queries = Patterns.concat([one_window([(s, OPEN) for s in range(n)])
                               for n in (8, 6, 7, 30)])
    out = te.common_pattern_baseline(queries, table)
    assert out.hits.shape == queries.hits.shape
    for i, pick in enumerate((8, 4, 8, 8)):  # 6 is as near 4 as 8: the lower wins
        np.testing.assert_array_equal(out.hits[i], table[pick])
    assert np.all(out.offsets == 0)
    np.testing.assert_allclose(out.velocities, out.hits * 0.6)


def test_eighth_hats_baseline_replaces_the_hats_with_straight_eighths():
    real = played(n=3)
    out = te.eighth_hats_baseline(real, SPEC)
    assert out.hits.shape == real.hits.shape
    want = np.tile([1.0, 0.0], 16)
    for i in range(3):
        np.testing.assert_array_equal(out.hits[i, :, CLOSED], want)
    assert np.all(out.hits[..., OPEN] == 0)
    others = [d for d in range(SPEC.n_drums) if d not in (CLOSED, OPEN)]
    np.testing.assert_array_equal(out.hits[..., others], real.hits[..., others])
    np.testing.assert_array_equal(out.offsets[..., others], real.offsets[..., others])
    # Against real hats on every 8th it is perfect.
    real.hits[..., CLOSED], real.hits[..., OPEN] = want, 0
    assert te.infill_scores(real, out, np.full(3, 100.0), SPEC)["hat_f1"] == 1.0


def test_drum_machine_patterns_are_two_bar_quantized_and_flat():
    names, p = te.drum_machine_patterns(SPEC)
    assert len(names) == len(p) >= 8
    assert p.hits.shape == (len(names), 32, 9)
    assert np.all(p.hits.sum(axis=(1, 2)) > 0) and np.all(p.offsets == 0)
    assert set(np.unique(p.velocities[p.hits > 0])) == {np.float32(0.6)}


def _write_dataset(folder: Path, splits: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, p in splits.items():
        np.savez_compressed(folder / f"{split}.npz", hits=p.hits.astype(np.uint8),
                            midi_velocities=np.rint(p.velocities * 127).astype(np.uint8),
                            offsets=p.offsets, bpm=np.full(len(p), 100.0, np.float32))
    (folder / "dataset.json").write_text(json.dumps({"spec": SPEC.to_dict(),
                                                     "description": "made-up windows"}))
    return folder


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return _write_dataset(tmp_path_factory.mktemp("gmd2"), {
        "train": played(n=60, seed=1), "validation": played(n=10, seed=2),
        "test": played(n=30, seed=3)})


def _identity(patterns, seed):
    return patterns  # an oracle: every task's output is the played window itself


def test_an_oracle_meets_every_gmd_goal(dataset):
    h = te.evaluate_task(_identity, "humanize", dataset, batch=7)
    m = h["model"]
    assert m["velocity_mae_midi"] == 0.0 and m["timing_mae_ms"] == 0.0
    assert m["offset_std_ratio"] == pytest.approx(1.0)
    assert m["windows_with_changed_hits"] == 0
    assert h["baselines"]["unchanged"]["offset_std_ratio"] == 0.0
    met = {g["goal"]: g["met"] for g in h["goals"]}
    assert met["velocity MAE below both baselines"] and met["every window keeps its hits"]
    # The oracle returns drum-machine patterns as given: no spread at all out of set.
    assert h["out_of_set"]["offset_std_ratio"] == 0.0
    assert not met["drum-machine timing spread >= 0.7 of GMD's"]
    d = te.evaluate_task(_identity, "drumify", dataset)
    assert d["model"]["hit_f1"] == 1.0 and d["model"]["timing_mae_ms"] == 0.0
    assert d["baselines"]["common pattern"]["hit_f1"] < 1.0 and all(g["met"] for g in d["goals"])
    i = te.evaluate_task(_identity, "infill", dataset)
    assert i["model"]["hat_f1"] == 1.0 and all(g["met"] for g in i["goals"])
    assert "goals:" in i["table"] and "straight 8ths" in i["table"]


def test_a_transform_that_changes_hits_is_caught(dataset):
    def drop_kicks(patterns, seed):
        p = task_input("humanize", patterns, SPEC)
        p.hits[..., KICK] = 0
        return p

    r = te.evaluate_task(drop_kicks, "humanize", dataset)
    with_kicks = int(np.sum(te.load_split(dataset, "test")[0].hits[..., KICK].any(axis=1)))
    assert r["model"]["windows_with_changed_hits"] == with_kicks > 0
    assert r["out_of_set"]["windows_with_changed_hits"] > 0
    assert not {g["goal"]: g["met"] for g in r["goals"]}["every window keeps its hits"]


def test_the_runner_seeds_each_batch_and_checks_what_comes_back(dataset):
    seen = []

    def record(patterns, seed):
        seen.append((len(patterns), seed))
        return patterns

    real = te.load_split(dataset, "test")[0]
    te.run_transform(record, real, seed=5, batch=8)
    first = list(seen)
    assert [n for n, _ in first] == [8, 8, 8, 6] and len({s for _, s in first}) == 4
    seen.clear()
    te.run_transform(record, real, seed=5, batch=8)
    assert seen == first
    with pytest.raises(ValueError, match="shape"):
        te.run_transform(lambda p, s: p[:1], real)
    with pytest.raises(ValueError, match="not Patterns"):
        te.run_transform(lambda p, s: p.to_flat(), real)


def test_torch_transform_keeps_what_each_task_must_keep():
    from groove_live.train.model import build_model

    real = played(n=6)
    for task in ("humanize", "infill"):
        preset = PRESETS[f"groovae_2bar_{task}_tiny"]
        model = build_model(preset.model, preset.spec()).eval()
        out = te.torch_transform(model)(real, 1)
        given = task_input(task, real, SPEC)
        voices = None if task == "humanize" else ~np.isin(np.array(NAMES),
                                                          ("closed_hihat", "open_hihat"))
        assert te.windows_with_changed_hits(out, given, voices) == 0
        again = te.torch_transform(model)(real, 1)
        np.testing.assert_array_equal(out.velocities, again.velocities)  # seeded


def test_cli_refuses_a_sampling_model_in_one_line(dataset, one_line_failure):
    result = CliRunner().invoke(train_main, ["evaluate-task", "--model", str(TOY_MODEL),
                                             "--data", str(dataset)])
    line = one_line_failure(result, "groove-train")
    assert result.exit_code == 2 and "not a task model" in line, line


def test_cli_scores_a_checkpoint_and_writes_json(dataset, tmp_path):
    from groove_live.train.model import build_model
    from groove_live.train.run import model_header, save_checkpoint_atomic

    preset = PRESETS["groovae_2bar_drumify_tiny"]
    spec = preset.spec()
    model = build_model(preset.model, spec)
    pt = tmp_path / "best.pt"
    save_checkpoint_atomic(pt, {"model": model.state_dict(), "step": 7,
                                **model_header(preset.model, spec)})
    out = tmp_path / "metrics.json"
    result = CliRunner().invoke(train_main, ["evaluate-task", "--checkpoint", str(pt), "--data",
                                             str(dataset), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "common pattern" in result.output and "goals:" in result.output
    data = json.loads(out.read_text())
    assert data["task"] == "drumify" and data["n_windows"] == 30
    assert 0.0 <= data["model"]["hit_f1"] <= 1.0 and "table" not in data


@pytest.mark.parametrize("task,kept", [("humanize", "every window keeps its hits"),
                                       ("infill", "every window keeps its other voices")])
def test_cli_scores_an_exported_task_model_through_the_engine(dataset, tmp_path, task, kept):
    model = Path(__file__).parents[1] / "fixtures" / f"toy_{task}.onnx"
    out = tmp_path / "metrics.json"
    result = CliRunner().invoke(train_main, ["evaluate-task", "--model", str(model), "--data",
                                             str(dataset), "--out", str(out), "--seed", "2"])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["task"] == task and data["temperature"] == 1.0
    assert {g["goal"]: g["met"] for g in data["goals"]}[kept]
    if task == "humanize":  # a sampled feel: some spread, and every drum-machine hit kept
        assert data["model"]["offset_std_ratio"] > 0
        assert data["out_of_set"]["windows_with_changed_hits"] == 0
