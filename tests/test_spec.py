"""The model spec: schema 1 read as schema 2, kinds and controls checked, shape rules, and the
metadata keys stated in spec.py alone."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import onnx
import pytest

from groove_live import spec as spec_module
from groove_live.spec import (DATA_SHAPE_FIELDS, KINDS, METADATA_KEY, METADATA_KEYS,
                              SCHEMA_VERSION, Control, ModelSpec, SpecError, migrate_v1)

ROOT = Path(__file__).resolve().parents[1]
CONDITIONED = ModelSpec(kind="conditioned", controls=(Control("hit_pattern", 9),))


def _v1(spec: ModelSpec = ModelSpec()) -> dict:
    """A schema 1 dict as groove-live wrote them before kinds existed."""
    d = json.loads(spec.to_json())
    del d["kind"], d["controls"], d["task"]
    return {**d, "schema_version": 1}


def _one_line_spec_error(d: dict) -> str:
    with pytest.raises(SpecError) as e:
        ModelSpec.from_dict(d)
    message = str(e.value)
    assert message and "\n" not in message and len(message) < 200
    return message


def test_schema_is_2_and_a_v1_dict_migrates_to_groovae_without_controls():
    assert SCHEMA_VERSION == 2
    spec = ModelSpec.from_dict(_v1(ModelSpec(bars=2, z_size=32, model_name="old")))
    assert spec.schema_version == 2 and spec.kind == "groovae" and spec.controls == ()
    assert (spec.bars, spec.z_size, spec.model_name) == (2, 32, "old")
    assert spec == ModelSpec(bars=2, z_size=32, model_name="old")
    assert ModelSpec.from_json(spec.to_json()) == spec  # and it writes schema 2


def test_the_committed_schema_1_files_read_as_groovae(toy_model_path):
    from groove_live.engine import BUNDLED_MODEL_PATH
    for path in (toy_model_path, BUNDLED_MODEL_PATH):
        meta = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
        assert json.loads(meta[METADATA_KEY])["schema_version"] == 1
        spec = ModelSpec.from_json(meta[METADATA_KEY])
        assert spec.kind == "groovae" and spec.controls == ()


def test_schema_1_with_schema_2_fields_is_refused():
    assert "schema 1 has no field 'kind'" in _one_line_spec_error({**_v1(), "kind": "groovae"})
    assert "controls" in _one_line_spec_error({**_v1(), "controls": []})
    assert "task" in _one_line_spec_error({**_v1(), "task": "humanize"})
    with pytest.raises(SpecError):
        migrate_v1({"kind": "pitched"})


def test_future_schemas_are_refused_in_one_line():
    message = _one_line_spec_error({**json.loads(ModelSpec().to_json()), "schema_version": 3})
    assert "schema 3 is not supported" in message and "1, 2" in message


V2 = json.loads(CONDITIONED.to_json())
BAD_V2 = [
    ({"kind": "gan"}, "kind 'gan' is unknown"),
    ({"kind": 3}, "kind 3 is unknown"),
    ({"kind": None}, "kind None is unknown"),
    ({"controls": "hit_pattern"}, "not a list"),
    ({"controls": [{"name": "hit_pattern"}]}, "name and channels"),
    ({"controls": [{"name": "hit pattern", "channels": 9}]}, "not a plain word"),
    ({"controls": [{"name": "z", "channels": 9}]}, "twice"),  # collides with the latent input
    ({"controls": [{"name": "a", "channels": 9}, {"name": "a", "channels": 1}]}, "twice"),
    ({"controls": [{"name": "hit_pattern", "channels": 0}]}, "channels"),
    ({"controls": [{"name": "hit_pattern", "channels": "9"}]}, "channels"),
    ({"controls": [{"name": "hit_pattern", "channels": True}]}, "channels"),
    ({"controls": [{"name": "hit_pattern", "channels": 10 ** 6}]}, "channels"),
    ({"controls": [{"name": f"c{i}", "channels": 1} for i in range(9)]}, "controls"),
    ({"controls": []}, "needs at least one control"),
    ({"kind": "groovae"}, "takes no controls"),
]


@pytest.mark.parametrize("changes, says", BAD_V2, ids=[str(c)[:40] for c, _ in BAD_V2])
def test_kind_and_controls_are_checked(changes, says):
    assert says in _one_line_spec_error({**V2, **changes})


def test_every_kind_is_named_and_documented():
    assert list(KINDS) == ["groovae", "categorical", "hierarchical", "conditioned", "pitched"]
    doc = (ROOT / "docs" / "adding-a-model.md").read_text()
    assert all(f"`{kind}`" in doc for kind in KINDS)
    for kind in ("categorical", "hierarchical"):  # no controls
        assert ModelSpec.from_json(ModelSpec(kind=kind).to_json()).kind == kind


def test_shape_rules_name_every_tensor_with_its_shape():
    spec = ModelSpec(bars=2, z_size=32)
    shapes = spec.io_shapes(5)
    assert shapes["decoder_inputs"] == {"z": (5, 32), "temperature": (5,),
                                        "hit_noise": (5, 32, 9), "cont_noise": (5, 32, 18)}
    assert shapes["decoder_outputs"] == {n: (5, 32, 9) for n in ("hits", "velocities", "offsets")}
    assert shapes["encoder_inputs"] == {"pattern": (5, 32, 27)}
    assert shapes["encoder_outputs"] == {"mu": (5, 32), "sigma": (5, 32)}
    assert ModelSpec().io_shapes()["decoder_inputs"]["z"] == (None, 256)  # dynamic batch
    assert CONDITIONED.io_shapes(1)["decoder_inputs"]["hit_pattern"] == (1, 64, 9)
    with pytest.raises(SpecError, match="no tensor shape rules"):
        ModelSpec(kind="nonesuch").io_shapes()


def test_data_shape_mismatch_names_the_field():
    spec = ModelSpec()
    assert spec.data_shape_mismatch(spec.replace(z_size=8, preset="x")) is None  # not data shape
    assert spec.data_shape_mismatch(spec.replace(bars=2)) == ("bars", "2", "4")
    assert spec.data_shape_mismatch(spec.replace(drums=spec.drums[:2]))[0] == "drums"
    assert spec.data_shape_mismatch(CONDITIONED)[0] == "kind"
    assert set(DATA_SHAPE_FIELDS) <= set(spec.to_dict())


def _string_constants(path: Path) -> set[str]:
    return {node.value for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)}


def test_metadata_keys_are_stated_in_spec_py_only():
    sources = [p for folder in ("groove_live", "train", "export")
               for p in (ROOT / folder).rglob("*.py")]
    assert ROOT / "groove_live" / "spec.py" in sources
    stated = {p.relative_to(ROOT).as_posix(): _string_constants(p) & set(METADATA_KEYS)
              for p in sources}
    assert {p: keys for p, keys in stated.items() if keys} == {
        "groove_live/spec.py": set(METADATA_KEYS)}
    import groove_live.engine as engine
    import groove_live.export.onnx_export as onnx_export
    for name in ("METADATA_KEY", "ROLE_KEY", "ENCODER_KEY", "VARIANT_KEY", "EXPORT_KEY"):
        for module in (engine, onnx_export):
            if hasattr(module, name):
                assert getattr(module, name) is getattr(spec_module, name)


def test_any_json_value_in_a_schema_2_field_is_a_spec_or_a_spec_error():
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import strategies as st

    scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
               | st.floats(allow_nan=True) | st.text(max_size=40))
    values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                          | st.dictionaries(st.text(max_size=12), inner, max_size=4),
                          max_leaves=12)
    fields = ["kind", "controls", "controls.0", "controls.0.name", "controls.0.channels",
              "decoder_inputs"]

    @hypothesis.settings(max_examples=200, deadline=None, database=None,
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(field=st.sampled_from(fields), value=values)
    def check(field, value):
        d = json.loads(json.dumps(V2))
        if field.startswith("controls.0."):
            d["controls"][0][field.rpartition(".")[2]] = value
        elif field == "controls.0":
            d["controls"][0] = value
        else:
            d[field] = value
        try:
            spec = ModelSpec.from_json(json.dumps(d))
        except SpecError as e:
            assert "\n" not in str(e) and len(str(e)) < 300
        else:
            assert ModelSpec.from_json(spec.to_json()) == spec

    check()
