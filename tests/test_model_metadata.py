"""A model file's metadata is untrusted: hand-made ONNX files with hostile metadata are refused
with one line (exit 2 offline, non-zero for serve) before anything is written or opened."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

from groove_live.cli import main
from groove_live.engine import Engine, EngineError
from groove_live.spec import (ENCODER_KEY, EXPORT_KEY, METADATA_KEY, ROLE_KEY, VARIANT_KEY,
                              ModelSpec, SpecError)

GMD = Path(__file__).parent / "fixtures" / "gmd"
A_MID = GMD / "drummer9/session1/22_rock_120_beat_4-4.mid"
DELETE = object()


def _metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


@pytest.fixture(scope="module")
def toy_spec(toy_model_path) -> dict:
    return json.loads(_metadata(onnx.load(toy_model_path))[METADATA_KEY])


@pytest.fixture
def hand_made(toy_model_path, tmp_path):
    """hand_made(name, spec={...changes}, raw_spec=TEXT, **props) -> a copy of the toy decoder
    in tmp_path with its metadata rewritten (a prop set to DELETE is removed)."""
    source = onnx.load(toy_model_path)

    def make(name: str = "hand.onnx", spec: dict | None = None, raw_spec: str | None = None,
             **props) -> Path:
        model = onnx.ModelProto()
        model.CopyFrom(source)
        meta = _metadata(model)
        if spec is not None:
            d = json.loads(meta[METADATA_KEY])
            d.update(spec)
            meta[METADATA_KEY] = json.dumps(d)
        if raw_spec is not None:
            meta[METADATA_KEY] = raw_spec
        for key, value in props.items():
            key = {"encoder": ENCODER_KEY, "role": ROLE_KEY, "variant": VARIANT_KEY,
                   "export": EXPORT_KEY}[key]
            if value is DELETE:
                meta.pop(key, None)
            else:
                meta[key] = value
        del model.metadata_props[:]
        onnx.helper.set_model_props(model, meta)
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(model, path)
        return path
    return make


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def refused(one_line_failure):
    """refused(model, out_dir) -> the one line: info, sample and interpolate all exit 2 with it
    and write nothing."""
    def check(model: Path, out_dir: Path) -> str:
        lines = set()
        for args in (("info", "--model", model),
                     ("sample", "-n", 2, "--model", model, "--out", out_dir),
                     ("interpolate", A_MID, A_MID, "--steps", 2, "--model", model,
                      "--out", out_dir)):
            result = _invoke(*args)
            lines.add(one_line_failure(result, "groove-live"))
            assert result.exit_code == 2, (args, result.output)
        assert len(lines) == 1, lines  # the model is refused the same way by each command
        assert not out_dir.exists()
        return lines.pop()
    return check


# --- finding: model_name writes outside --out --------------------------------------------------
@pytest.mark.parametrize("bad_name", ["../../x", "ABSOLUTE", ".", "..", ".hidden", "a/b",
                                      "a\\b", "", "x" * 65, "line\nbreak", "C:x", 7, None])
def test_model_name_that_is_not_a_plain_name_is_refused(hand_made, refused, tmp_path, bad_name):
    if bad_name == "ABSOLUTE":
        bad_name = str(tmp_path / "elsewhere" / "x")
    model = hand_made(spec={"model_name": bad_name})
    out_dir = tmp_path / "a" / "b" / "out"
    line = refused(model, out_dir)
    assert "model_name" in line and str(model) in line
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p != model]
    assert written == []  # nothing under tmp_path but the hand-made model


def test_a_plain_model_name_names_the_files(hand_made, tmp_path):
    model = hand_made(spec={"model_name": "My-Kit.v2_x"})
    result = _invoke("sample", "-n", 1, "--seed", 0, "--model", model, "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    [written] = (tmp_path / "o").iterdir()
    assert written.name.startswith("My-Kit.v2_x_sample_") and written.suffix == ".mid"


# --- finding: an encoder name with a slash ------------------------------------------------------
@pytest.mark.parametrize("bad_name", ["../enc.onnx", "sub/enc.onnx", "ABSOLUTE", "..", ".",
                                      ".enc.onnx", "enc.onnx\x00", "enc\n.onnx", "enc",
                                      "x" * 300 + ".onnx"])
def test_encoder_name_outside_the_decoders_folder_is_refused(hand_made, refused, tmp_path,
                                                              toy_model_path, bad_name):
    encoder = toy_model_path.with_name("toy_model.encoder.onnx")
    # A real encoder waits at each place the bad name points to: it must not be loaded.
    (tmp_path / "sub").mkdir()
    for place in (tmp_path / "enc.onnx", tmp_path / "m" / "sub" / "enc.onnx"):
        place.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(encoder, place)
    if bad_name == "ABSOLUTE":
        bad_name = str(tmp_path / "enc.onnx")
    model = hand_made("m/hand.onnx", encoder=bad_name)
    line = refused(model, tmp_path / "out")
    assert "encoder" in line and "plain" in line
    with pytest.raises(EngineError):
        Engine.load(model)


def test_encoder_named_beside_the_decoder_is_used(hand_made, tmp_path, toy_model_path):
    shutil.copy(toy_model_path.with_name("toy_model.encoder.onnx"), tmp_path / "my enc.onnx")
    engine = Engine.load(hand_made(encoder="my enc.onnx"))
    assert engine.has_encoder and engine.encoder_path == tmp_path / "my enc.onnx"


# --- finding: numbers out of range, wrong types -------------------------------------------------
BAD_SPECS = [
    ({"beats_per_bar": 0}, "beats_per_bar"),
    ({"beats_per_bar": 3}, "multiple of beats_per_bar"),
    ({"beats_per_bar": -4}, "beats_per_bar"),
    ({"beats_per_bar": "4"}, "beats_per_bar"),
    ({"beats_per_bar": 4.0}, "beats_per_bar"),
    ({"beats_per_bar": True}, "beats_per_bar"),
    ({"steps_per_bar": 0}, "steps_per_bar"),
    ({"steps_per_bar": "16"}, "steps_per_bar"),
    ({"steps_per_bar": 10 ** 6}, "steps_per_bar"),
    ({"bars": 0}, "bars"),
    ({"bars": 10 ** 4}, "bars"),
    ({"bars": None}, "bars"),
    ({"z_size": 0}, "z_size"),
    ({"z_size": "16"}, "z_size"),
    ({"z_size": 10 ** 9}, "z_size"),
    ({"schema_version": "1"}, "schema"),
    ({"schema_version": True}, "schema"),
    ({"drums": []}, "drum classes"),
    ({"drums": "kick"}, "drums"),
    ({"drums": [{"name": f"d{i}", "out_pitch": 36, "in_pitches": []} for i in range(129)]},
     "drum classes"),
    ({"drums": [{"name": "kick", "out_pitch": 128, "in_pitches": [36]}]}, "pitch"),
    ({"drums": [{"name": "kick", "out_pitch": -1, "in_pitches": [36]}]}, "pitch"),
    ({"drums": [{"name": "kick", "out_pitch": "36", "in_pitches": [36]}]}, "pitch"),
    ({"drums": [{"name": "kick", "out_pitch": 36, "in_pitches": [36, 300]}]}, "pitch"),
    ({"drums": [{"name": "kick", "out_pitch": 36, "in_pitches": "36"}]}, "in_pitches"),
    ({"drums": [{"name": "kick", "out_pitch": 36}]}, "in_pitches"),
    ({"drums": ["kick"]}, "drum"),
    ({"drums": [{"name": 5, "out_pitch": 36, "in_pitches": [36]}]}, "drum name"),
    ({"drums": [{"name": "a b", "out_pitch": 36, "in_pitches": [36]}]}, "drum name"),
    ({"drums": [{"name": "kick", "out_pitch": 36, "in_pitches": [36]}] * 2}, "twice"),
    ({"decoder_inputs": ["z", "", "hit_noise", "cont_noise"]}, "tensor name"),
    ({"decoder_inputs": ["z", 1, "hit_noise", "cont_noise"]}, "tensor name"),
    ({"decoder_inputs": ["z", "temperature", "hit_noise"]}, "decoder_inputs"),
    ({"decoder_inputs": "ztcn"}, "decoder_inputs"),
    ({"decoder_outputs": ["hits", "hits", "offsets"]}, "twice"),
    ({"encoder_inputs": []}, "encoder_inputs"),
    ({"encoder_outputs": None}, "encoder_outputs"),
    ({"continuous_head": "laplace"}, "continuous_head"),
    ({"velocity_encoding": "decibel"}, "velocity_encoding"),
    ({"offset_encoding": 0}, "offset_encoding"),
    ({"preset": "two\nlines"}, "preset"),
    ({"run_id": 42}, "run_id"),
    ({"training_data": "x" * 1000}, "training_data"),
    ({"extra": "not an object"}, "extra"),
]


@pytest.mark.parametrize("changes, says", BAD_SPECS, ids=[str(c)[:40] for c, _ in BAD_SPECS])
def test_spec_fields_are_type_and_range_checked(toy_spec, changes, says):
    with pytest.raises(SpecError) as e:
        ModelSpec.from_dict({**toy_spec, **changes})
    message = str(e.value)
    assert says in message and "\n" not in message and len(message) < 200


def test_the_committed_specs_pass(toy_spec):
    # The committed toy model is schema 1: it reads as schema 2's "groovae" without controls.
    assert toy_spec["schema_version"] == 1
    assert json.loads(ModelSpec.from_dict(toy_spec).to_json()) == {
        **toy_spec, "schema_version": 2, "kind": "groovae", "controls": [], "task": ""}
    ModelSpec().validate()  # the defaults, which training starts from
    from groove_live.engine import BUNDLED_MODEL_PATH
    if BUNDLED_MODEL_PATH.is_file():
        bundled = onnx.load(BUNDLED_MODEL_PATH, load_external_data=False)
        ModelSpec.from_json(_metadata(bundled)[METADATA_KEY])


@pytest.mark.parametrize("text, says", [
    ("[" * 100_000, "not valid JSON"),  # deep nesting: RecursionError inside json
    ('{"z_size": ' + "9" * 5000 + "}", "not valid JSON"),  # over Python's int-digits limit
    ("not json", "not valid JSON"),
    ('["a list"]', "not a JSON object"),
    (" " * (2 << 20), "characters long"),
])
def test_spec_text_that_is_not_a_spec_object(text, says):
    with pytest.raises(SpecError, match=says):
        ModelSpec.from_json(text)


@pytest.mark.parametrize("changes", [{"beats_per_bar": 0}, {"steps_per_bar": "16"},
                                     {"drums": [{"name": "kick", "out_pitch": 200,
                                                 "in_pitches": []}]},
                                     {"decoder_inputs": ["z", "", "h", "c"]}])
def test_a_bad_spec_is_one_line_and_exit_2_for_every_offline_command(hand_made, refused,
                                                                      tmp_path, changes):
    line = refused(hand_made(spec=changes), tmp_path / "out")
    assert "model spec" in line


def test_a_spec_that_is_not_json_is_refused(hand_made, refused, tmp_path):
    assert "not valid JSON" in refused(hand_made(raw_spec="{" * 50_000), tmp_path / "out")


def test_serve_refuses_a_bad_model_with_one_line(hand_made, one_line_failure):
    # Port 0 on loopback: serve binds before loading the model, then must close and fail.
    result = _invoke("serve", "--port", 0, "--model", hand_made(spec={"beats_per_bar": 0}))
    assert "beats_per_bar" in one_line_failure(result, "groove-live")


# --- the other metadata keys -------------------------------------------------------------------
@pytest.mark.parametrize("props, says", [
    ({"role": "decoder\nx"}, "unknown groove-live role"),
    ({"role": DELETE}, "unknown groove-live role"),
    ({"variant": "../int8"}, "variant"),
    ({"variant": ""}, "variant"),
])
def test_role_and_variant_are_checked(hand_made, refused, tmp_path, props, says):
    assert says in refused(hand_made(**props), tmp_path / "out")


@pytest.mark.parametrize("export_info", ["[1, 2]", "{", '"text"', "{" * 10_000,
                                         '{"exported": "a\\nb", "source": {"x": 1}}'])
def test_malformed_export_info_is_shown_as_unknown_not_a_crash(hand_made, export_info):
    engine = Engine.load(hand_made(export=export_info))
    for value in engine.export_info.values():
        assert isinstance(value, str) and value.isprintable()
    result = _invoke("info", "--model", engine.path)
    assert result.exit_code == 0, result.output
    assert "a\nb" not in result.stdout


# --- any JSON value in any field: a spec or a SpecError, nothing else ------------------------
def _json_values():
    from hypothesis import strategies as st

    scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
               | st.floats(allow_nan=True) | st.text(max_size=80))
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=12), inner, max_size=4),
                        max_leaves=12)


def test_any_json_value_in_any_field_is_a_spec_or_a_spec_error(toy_spec):
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import strategies as st

    fields = sorted(toy_spec) + ["drums.0.name", "drums.0.out_pitch", "drums.0.in_pitches",
                                 "drums.0", "unknown_key"]

    @hypothesis.settings(max_examples=200, deadline=None, database=None,
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(field=st.sampled_from(fields), value=_json_values())
    def check(field, value):
        d = json.loads(json.dumps(toy_spec))
        if field.startswith("drums.0"):
            _, _, key = field.partition("drums.0")
            if key:
                d["drums"][0][key[1:]] = value
            else:
                d["drums"][0] = value
        else:
            d[field] = value
        try:
            spec = ModelSpec.from_json(json.dumps(d))
        except SpecError as e:
            assert "\n" not in str(e)
            return
        # Accepted: then it is usable as the runtime uses it.
        assert spec.steps >= 1 and spec.n_drums >= 1 and spec.steps_per_beat >= 1
        assert all(0 <= p <= 127 for p in spec.pitch_to_class())
        assert json.loads(spec.to_json())["model_name"] == spec.model_name

    check()
