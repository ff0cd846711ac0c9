"""Latent attribute vectors: computed by `groove-export attributes` (torch-free), stored in the
decoder's metadata, checked as untrusted input at load, and applied by `groove-live sample`."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from groove_live.attributes import (ATTRIBUTES_VERSION, MAX_STYLES, SCALED_AMOUNT_PER_UNIT,
                                    Attributes, AttributesError, Scaled, syncopation)
from groove_live.cli import main as live_main
from groove_live.engine import Engine, EngineError
from groove_live.export.attributes import window_labels
from groove_live.export.cli import main as export_main
from groove_live.pattern import Patterns
from groove_live.spec import ATTRIBUTES_KEY

Z = 16  # the toy model's z size


def _attributes(z: int = Z) -> Attributes:
    rng = np.random.default_rng(0)
    v = lambda: rng.standard_normal(z).astype(np.float32)  # noqa: E731
    return Attributes(z, {"funk": v(), "jazz": v()},
                      {"density": Scaled(v(), 10.0, 20.0), "syncopation": Scaled(v(), 0.2, 0.6)},
                      v(), {"style:funk": 100, "style:jazz": 80, "fill": 20}, "test")


def test_round_trip_and_the_documented_scales():
    a = _attributes()
    b = Attributes.from_json(a.to_json(), Z)
    assert b.style_names == ("funk", "jazz")
    np.testing.assert_allclose(b.styles["funk"], a.styles["funk"], atol=1e-6)
    assert (b.scaled["density"].low, b.scaled["density"].high) == (10.0, 20.0)
    off = b.offset("jazz", 0.5, density=1.0, syncopation=-0.5, fill=True)
    want = (0.5 * b.styles["jazz"] + SCALED_AMOUNT_PER_UNIT * b.scaled["density"].vector
            - 0.5 * SCALED_AMOUNT_PER_UNIT * b.scaled["syncopation"].vector + b.fill)
    np.testing.assert_allclose(off, want, atol=1e-5)
    assert not b.offset().any()
    # x = -1 and +1 aim at the bottom and top quartiles' recorded values.
    assert (b.expected("density", -1.0), b.expected("density", 1.0)) == (10.0, 20.0)


def test_unknown_style_and_out_of_range_amounts_are_one_line():
    a = _attributes()
    with pytest.raises(AttributesError, match=r"unknown style 'fnuk'; this model knows: funk, "
                                              r"jazz$"):
        a.offset("fnuk")
    for kwargs in ({"density": 1.5}, {"syncopation": float("nan")}, {"density": 10**400},
                   {"style": "funk", "style_amount": -1.0}):
        with pytest.raises(AttributesError, match="must be a number in"):
            a.offset(**kwargs)


def _tampered(change) -> str:
    d = json.loads(_attributes().to_json())
    change(d)
    return json.dumps(d)


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(version=99), "version 99"),
    (lambda d: d.update(version=True), "version True"),
    (lambda d: d.update(z_size=32), "for z size 32"),
    (lambda d: d["styles"].update({"../etc": d["styles"]["funk"]}), "not a plain word"),
    (lambda d: d["styles"]["funk"].update(vector=[1.0] * (Z - 1)), "has 15 values"),
    (lambda d: d["styles"]["funk"].update(vector=[1e6] * Z), "longer than"),
    (lambda d: d["styles"]["funk"].update(vector=["1"] * Z), "other than numbers"),
    (lambda d: d["styles"]["funk"].update(vector=[10**400] * Z), "not finite"),
    (lambda d: d["scaled"]["density"].update(high=10**400), "density high is"),
    (lambda d: d["scaled"]["density"].update(low=None), "density low is None"),
    (lambda d: d.update(styles={f"s{i}": d["styles"]["funk"] for i in range(MAX_STYLES + 1)}),
     "at most 64"),
    (lambda d: d.update(fill=[1.0]), "fill is"),
])
def test_malformed_vectors_are_refused(change, message):
    with pytest.raises(AttributesError, match=message):
        Attributes.from_json(_tampered(change), Z)


def test_nan_and_non_json_are_refused():
    text = _attributes().to_json().replace(json.dumps(
        round(float(_attributes().fill[0]), 6)), "NaN", 1)
    with pytest.raises(AttributesError, match="not finite"):
        Attributes.from_json(text, Z)
    with pytest.raises(AttributesError, match="not valid JSON"):
        Attributes.from_json("{", Z)
    # A later version's extra attribute is ignored, not an error.
    a = Attributes.from_json(_tampered(lambda d: d["scaled"].update(swing=d["scaled"]["density"])),
                             Z)
    assert sorted(a.scaled) == ["density", "syncopation"]


def test_syncopation_measure():
    names = ("kick", "snare", "closed_hihat")
    hits = np.zeros((3, 16, 3), np.float32)
    hits[0, ::4, 0] = 1  # four on the floor: 0
    hits[1, 1::4, 1] = 1  # snare on every "e": 1
    hits[2, 2::4, 0] = 1  # kick on every "and": 0.5
    hits[:, :, 2] = 1  # hi-hats do not count
    np.testing.assert_allclose(syncopation(hits, hits * 0.8, names), [0.0, 1.0, 0.5])


def test_window_labels_read_gmd_names():
    styles, fills = window_labels(["drummer1/session1/1_funk_80_beat_4-4.mid",
                                   "drummer1/eval_session/3_funk-groove3_138_beat_4-4.mid",
                                   "drummer2/session1/7_latin-brazilian-samba_100_fill_4-4.mid",
                                   "somewhere/else.mid"])
    assert styles == ["funk", "funk", "latin", ""]
    assert fills.tolist() == [False, False, True, False]


def _cache(folder, spec, n_per_style: int = 24):
    """A prepared-cache folder of synthetic windows: dense "rock", sparse "jazz", and fills with
    toms, named like GMD files."""
    rng = np.random.default_rng(1)
    hits, sources = [], []
    for style, p_hit, kind, n in (("rock", 0.4, "beat", n_per_style),
                                  ("jazz", 0.08, "beat", n_per_style),
                                  ("rock", 0.2, "fill", 20)):
        h = (rng.random((n, spec.steps, spec.n_drums)) < p_hit).astype(np.uint8)
        if kind == "fill":
            h[:, :, 4:7] = rng.random((n, spec.steps, 3)) < 0.5
        hits.append(h)
        sources += [f"drummer1/session1/{i}_{style}_100_{kind}_4-4.mid" for i in range(n)]
    hits = np.concatenate(hits)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / "train.npz", hits=hits, midi_velocities=hits * 90,
                        offsets=np.zeros(hits.shape, np.float32), bpm=np.full(len(hits), 100.0),
                        source=np.array(sources))
    (folder / "dataset.json").write_text(json.dumps({"spec": spec.to_dict()}))
    return hits


def _export(*args):
    return CliRunner().invoke(export_main, ["attributes", *map(str, args)])


def test_export_attributes_end_to_end(toy_model_path, tmp_path, one_line_failure):
    spec = Engine.load(toy_model_path).spec
    hits = _cache(tmp_path / "cache", spec)
    out = tmp_path / "steer" / "toy.onnx"
    result = _export("--model", toy_model_path, "--data", tmp_path / "cache", "--out", out,
                     "--min-windows", 20)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    assert (tmp_path / "steer" / "toy.encoder.onnx").is_file()  # the encoder came along
    engine = Engine.load(out)
    a = engine.attributes
    assert a.style_names == ("jazz", "rock") and a.fill is not None
    assert Engine.load(toy_model_path).attributes is None  # the input was not touched
    # The vectors are MusicVAE's: mean mu with the attribute minus mean mu without.
    p = Patterns(hits.astype(np.float32), hits * 90 / 127.0, np.zeros(hits.shape, np.float32))
    mu = engine.encode(p)[0].astype(np.float64)
    jazz = np.arange(len(hits)) // 24 == 1
    np.testing.assert_allclose(a.styles["jazz"], mu[jazz].mean(0) - mu[~jazz].mean(0),
                               atol=1e-4)
    assert a.scaled["density"].low < a.scaled["density"].high
    # Too few windows for a style: no vector for it.
    result = _export("--model", toy_model_path, "--data", tmp_path / "cache", "--out", out)
    assert result.exit_code == 0 and Engine.load(out).attributes.style_names == ()


def test_export_attributes_refusals(toy_model_path, toy_task_model_path, tmp_path,
                                    one_line_failure):
    spec = Engine.load(toy_model_path).spec
    _cache(tmp_path / "two_bar", spec.replace(bars=2))
    line = one_line_failure(_export("--model", toy_model_path, "--data", tmp_path / "two_bar",
                                    "--out", tmp_path / "x.onnx"), "groove-export")
    assert "bars 2" in line and "reads 4" in line
    line = one_line_failure(_export("--model", toy_task_model_path("humanize"), "--data",
                                    tmp_path / "two_bar"), "groove-export")
    assert "a humanize model" in line
    line = one_line_failure(_export("--model", toy_model_path, "--data", tmp_path / "none"),
                            "groove-export")
    assert "groove-train prepare" in line
    assert not (tmp_path / "x.onnx").exists()


def test_engine_refuses_malformed_attributes_metadata(toy_model_path, tmp_path):
    model = onnx.load(str(toy_model_path))
    onnx.helper.set_model_props(model, {
        **{p.key: p.value for p in model.metadata_props},
        ATTRIBUTES_KEY: json.dumps({"version": ATTRIBUTES_VERSION, "z_size": Z,
                                    "styles": {"funk": {"vector": [float("inf")] * Z}}})})
    path = tmp_path / "bad.onnx"
    onnx.save(model, str(path))
    (tmp_path / "bad.encoder.onnx").write_bytes(
        toy_model_path.with_name("toy_model.encoder.onnx").read_bytes())
    with pytest.raises(EngineError, match=r"bad.onnx: attribute vectors: style funk is not "
                                          r"finite") as e:
        Engine.load(path)
    assert "\n" not in str(e.value)


@pytest.fixture(scope="module")
def steered_model(toy_model_path, tmp_path_factory):
    folder = tmp_path_factory.mktemp("steered")
    spec = Engine.load(toy_model_path).spec
    _cache(folder / "cache", spec)
    out = folder / "toy.onnx"
    assert _export("--model", toy_model_path, "--data", folder / "cache", "--out", out,
                   "--min-windows", 20).exit_code == 0
    return out


def _sample(model, out, *args):
    return CliRunner().invoke(live_main, ["sample", "-n", 3, "--seed", 5, "--model", str(model),
                                          "--out", str(out), *map(str, args)])


def _notes(folder):
    import mido
    return [[(m.note, m.velocity) for m in mido.MidiFile(f) if m.type == "note_on"]
            for f in sorted(folder.glob("*.mid"))]


def test_sample_steering(steered_model, toy_model_path, tmp_path, fails):
    assert _sample(steered_model, tmp_path / "a", "--style", "jazz", "--density", 0.5,
                   "--fill").exit_code == 0
    assert _sample(steered_model, tmp_path / "b", "--style", "jazz", "--density", 0.5,
                   "--fill").exit_code == 0
    assert _notes(tmp_path / "a") == _notes(tmp_path / "b")  # same seed, same patterns
    assert _sample(steered_model, tmp_path / "c", "--density", 1.0).exit_code == 0
    assert _notes(tmp_path / "c") != _notes(tmp_path / "a")
    # No steering asked: exactly the plain sample.
    assert _sample(steered_model, tmp_path / "d", "--density", 0).exit_code == 0
    assert _sample(toy_model_path, tmp_path / "e").exit_code == 0
    assert _notes(tmp_path / "d") == _notes(tmp_path / "e")
    line = fails(_sample(steered_model, tmp_path / "f", "--style", "polka"))
    assert line.endswith("unknown style 'polka'; this model knows: jazz, rock")
    line = fails(_sample(toy_model_path, tmp_path / "f", "--style", "jazz"))
    assert "no attribute vectors" in line and "groove-export attributes" in line
    assert not (tmp_path / "f").exists() or not list((tmp_path / "f").glob("*.mid"))


def test_the_steered_latent_is_z_plus_the_offset(steered_model):
    engine = Engine.load(steered_model)
    from groove_live.offline import Steer, steered_sample
    from groove_live.latent import random_latents
    from groove_live.limits import SEED_LIMIT
    got = steered_sample(engine, 2, Steer("rock", 2.0), 1.0, seed=9)
    rng = np.random.default_rng(9)
    z = random_latents(2, Z, rng) + 2.0 * engine.attributes.styles["rock"]
    want = engine.decode(z, 1.0, seed=int(rng.integers(SEED_LIMIT)))
    np.testing.assert_array_equal(got.hits, want.hits)


def test_export_attributes_is_torch_free(run_torch_free, toy_model_path, tmp_path):
    spec = Engine.load(toy_model_path).spec
    _cache(tmp_path / "cache", spec)
    result = run_torch_free("""
        import sys
        from groove_live.export.cli import main
        try:
            main(["attributes", "--model", sys.argv[1], "--data", sys.argv[2], "--out",
                  sys.argv[3], "--min-windows", "20"])
        except SystemExit as e:
            assert e.code == 0, e.code
        """, toy_model_path, tmp_path / "cache", tmp_path / "o.onnx")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("torch-free")
    assert Engine.load(tmp_path / "o.onnx").attributes.style_names == ("jazz", "rock")


def test_export_attributes_in_place_keeps_the_encoder_name(toy_model_path, tmp_path):
    spec = Engine.load(toy_model_path).spec
    _cache(tmp_path / "cache", spec)
    model = tmp_path / "m" / "toy_model.onnx"
    model.parent.mkdir()
    model.write_bytes(toy_model_path.read_bytes())
    encoder = toy_model_path.with_name("toy_model.encoder.onnx")
    (model.parent / encoder.name).write_bytes(encoder.read_bytes())
    before = Engine.load(model).metadata
    result = _export("--model", model, "--data", tmp_path / "cache", "--min-windows", 20)
    assert result.exit_code == 0, result.output
    after = Engine.load(model)
    assert after.attributes.style_names == ("jazz", "rock")
    assert {k: v for k, v in after.metadata.items() if k != ATTRIBUTES_KEY} == before
    assert sorted(p.name for p in model.parent.iterdir()) == [encoder.name, model.name]
