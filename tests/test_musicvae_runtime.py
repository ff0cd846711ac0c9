"""MusicVAE's drum models in the offline runtime: generate-then-groove (tasks.groove_patterns,
`groove-live sample --humanize`), interpolate at the model's phrase length, and the bundled
names. The humanize pass runs the committed toy humanize export; tests that need the toy
categorical / hierarchical exports run when those fixtures are present."""
from __future__ import annotations

from pathlib import Path

import mido
import numpy as np
import pytest
from click.testing import CliRunner

from groove_live.bundled import bundled_info, resolve_model
from groove_live.cli import main
from groove_live.engine import Engine, EngineError
from groove_live.pattern import Patterns
from groove_live.spec import ModelSpec
from groove_live.tasks import TaskError, check_humanizer, groove_patterns
from groove_live.transforms import FIXED_VELOCITY

FIXTURES = Path(__file__).parent / "fixtures"
GMD = FIXTURES / "gmd"
LONG_A = GMD / "drummer7/session2/46_rock_135_beat_4-4.mid"  # 17 bars
LONG_B = GMD / "drummer1/eval_session/4_soul-groove4_80_beat_4-4.mid"  # 16 bars
TOY_CAT = FIXTURES / "toy_cat_drums_2bar.onnx"
TOY_HIER = FIXTURES / "toy_hierdec_drums_16bar.onnx"


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def need(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"{path.name} is not committed yet")
    return path


@pytest.fixture(scope="module")
def humanizer(toy_task_model_path) -> Engine:
    return Engine.load(toy_task_model_path("humanize"))


def quantized(spec: ModelSpec, n: int, bars: int, seed: int = 0) -> Patterns:
    """n random quantized patterns of `bars` bars, as a MusicVAE drum model decodes them."""
    rng = np.random.default_rng(seed)
    shape = (n, bars * spec.steps_per_bar, spec.n_drums)
    hits = (rng.random(shape) < 0.15).astype(np.float32)
    return Patterns(hits, hits * np.float32(FIXED_VELOCITY), np.zeros(shape, np.float32))


def test_a_16_bar_phrase_is_played_window_by_window_with_its_hits_kept(humanizer):
    given = quantized(humanizer.spec, 2, 16)
    steps_per_window = humanizer.spec.steps
    given.hits[0, 4 * steps_per_window:5 * steps_per_window] = 0  # one silent window
    given = Patterns(given.hits, given.hits * np.float32(FIXED_VELOCITY), given.offsets)
    out = groove_patterns(humanizer, given, temperature=0.5, seed=3)
    assert out.hits.shape == given.hits.shape == (2, 256, 9)
    np.testing.assert_array_equal(out.hits, given.hits)  # never adds or drops a note
    on = out.hits > 0
    assert np.all(out.velocities[~on] == 0) and np.all(out.offsets[~on] == 0)
    assert np.ptp(out.velocities[on]) > 0.05  # no longer one fixed level
    assert np.abs(out.offsets[on]).max() > 0.01  # and off the grid
    window = slice(4 * steps_per_window, 5 * steps_per_window)
    assert not out.hits[0, window].any() and not out.velocities[0, window].any()
    again = groove_patterns(humanizer, given, temperature=0.5, seed=3)
    np.testing.assert_array_equal(again.velocities, out.velocities)
    other = groove_patterns(humanizer, given, temperature=0.5, seed=4)
    assert not np.array_equal(other.velocities, out.velocities)


def test_groove_refuses_a_model_that_is_not_humanize_and_lengths_that_are_not_windows(
        humanizer, toy_task_model_path, toy_model_path):
    drumify = Engine.load(toy_task_model_path("drumify"))
    with pytest.raises(TaskError, match="a drumify model, not a humanize model"):
        groove_patterns(drumify, quantized(drumify.spec, 1, 2), 1.0, 0)
    sampler = Engine.load(toy_model_path)
    with pytest.raises(TaskError, match="a groovae model, not a humanize model"):
        check_humanizer(sampler, sampler.spec)
    with pytest.raises(TaskError, match="not whole 2-bar windows"):
        groove_patterns(humanizer, quantized(humanizer.spec, 1, 3), 1.0, 0)
    three_bars = ModelSpec(kind="categorical", bars=3, z_size=8)
    with pytest.raises(TaskError, match="is 3 bars, not a whole number of the humanize "
                                        "model's 2-bar windows"):
        check_humanizer(humanizer, three_bars)
    check_humanizer(humanizer, ModelSpec(kind="hierarchical", bars=16, z_size=8))  # fits
    other_kit = ModelSpec(kind="categorical", bars=2, z_size=8).replace(
        drums=ModelSpec().drums[:3])
    with pytest.raises(TaskError, match="voices"):
        check_humanizer(humanizer, other_kit)


def _notes(folder: Path) -> list[list[tuple[int, int]]]:
    out = []
    for f in sorted(folder.glob("*.mid")):
        out.append([(m.note, m.velocity) for m in mido.MidiFile(f)
                    if m.type == "note_on" and m.velocity > 0])
    return out


def test_sample_humanize_keeps_the_samples_notes_and_plays_them(toy_model_path,
                                                                toy_task_model_path, tmp_path):
    plain = _invoke("sample", "-n", 2, "--seed", 5, "--model", toy_model_path,
                    "--out", tmp_path / "plain")
    played = _invoke("sample", "-n", 2, "--seed", 5, "--model", toy_model_path,
                     "--humanize", toy_task_model_path("humanize"), "--out", tmp_path / "hum")
    assert plain.exit_code == 0 and played.exit_code == 0, played.output
    a, b = _notes(tmp_path / "plain"), _notes(tmp_path / "hum")
    assert [sorted(n for n, _ in f) for f in a] == [sorted(n for n, _ in f) for f in b]
    assert [sorted(v for _, v in f) for f in a] != [sorted(v for _, v in f) for f in b]


@pytest.mark.parametrize("model,why", [
    ("drumify", "a drumify model, not a humanize model"),
    ("groovae", "a groovae model, not a humanize model")])
def test_sample_humanize_with_the_wrong_model_fails_in_one_line(
        model, why, toy_model_path, toy_task_model_path, tmp_path, fails):
    path = toy_model_path if model == "groovae" else toy_task_model_path(model)
    line = fails(_invoke("sample", "--model", toy_model_path, "--humanize", path,
                         "--out", tmp_path / "o"))
    assert why in line and not (tmp_path / "o").exists()


def test_sample_humanize_without_a_bundled_humanize_says_so(toy_model_path, tmp_path,
                                                           monkeypatch, fails):
    import groove_live.bundled as bundled

    monkeypatch.setattr(bundled, "MODELS_DIR", tmp_path / "models")
    (tmp_path / "models").mkdir()
    line = fails(_invoke("sample", "--model", toy_model_path, "--humanize",
                         "--out", tmp_path / "o"))
    assert "no bundled model 'humanize'" in line


def test_the_musicvae_names_are_known_before_they_are_bundled(tmp_path, toy_task_model_path):
    for name in ("cat_drums_2bar", "hierdec_drums_16bar"):
        with pytest.raises(EngineError, match=f"no bundled model '{name}' .*not in this install"):
            resolve_model(name, models_dir=tmp_path)
    # Whatever is in the folder is listed, as it is found.
    src = Path(toy_task_model_path("humanize"))
    (tmp_path / "cat_drums_2bar.onnx").write_bytes(src.read_bytes())
    assert resolve_model("cat_drums_2bar", models_dir=tmp_path) == tmp_path / "cat_drums_2bar.onnx"
    assert [b.name for b in bundled_info(tmp_path)] == ["cat_drums_2bar"]


# --- with the toy MusicVAE exports ------------------------------------------------------------
def test_categorical_samples_are_quantized_and_humanize_plays_them(toy_task_model_path,
                                                                   tmp_path):
    model = need(TOY_CAT)
    plain = _invoke("sample", "-n", 3, "--seed", 2, "--model", model, "--out", tmp_path / "p")
    played = _invoke("sample", "-n", 3, "--seed", 2, "--model", model,
                     "--humanize", toy_task_model_path("humanize"), "--out", tmp_path / "h")
    assert plain.exit_code == 0 and played.exit_code == 0, played.output
    a, b = _notes(tmp_path / "p"), _notes(tmp_path / "h")
    assert {v for f in a for _, v in f} <= {round(FIXED_VELOCITY * 127)}
    assert [sorted(n for n, _ in f) for f in a] == [sorted(n for n, _ in f) for f in b]
    assert len({v for f in b for _, v in f}) > 1


def test_hierarchical_interpolate_morphs_16_bar_phrases(tmp_path):
    model = need(TOY_HIER)
    result = _invoke("interpolate", LONG_A, LONG_B, "--steps", 3, "--seed", 1, "--model", model,
                     "--out", tmp_path)
    assert result.exit_code == 0, result.output
    files = sorted(tmp_path.glob("*.mid"))
    assert len(files) == 3
    for f in files:
        midi = mido.MidiFile(f)
        assert midi.length > 0
        ticks = sum(m.time for m in midi.tracks[-1])
        assert ticks <= 16 * 4 * midi.ticks_per_beat  # one 16-bar phrase at most


def test_hierarchical_sample_humanized_is_16_bars_of_played_notes(toy_task_model_path, tmp_path):
    model = need(TOY_HIER)
    result = _invoke("sample", "-n", 1, "--seed", 4, "--model", model, "--humanize",
                     toy_task_model_path("humanize"), "--out", tmp_path)
    assert result.exit_code == 0, result.output
    notes, = _notes(tmp_path)
    assert notes and len({v for _, v in notes}) > 1
