"""The bundled-model registry: `--model NAME|PATH` and `groove-live info`'s list, on a models
folder of toy copies."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

import groove_live.bundled as bundled
from groove_live.bundled import bundled_models, is_model_name, resolve_model
from groove_live.cli import main
from groove_live.engine import EngineError, encoder_path_for


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _copy_model(src: Path, folder: Path, name: str) -> Path:
    """A model under another name: the encoder is found by the name the decoder's metadata
    gives, so the encoder keeps its file name and only the decoder is renamed."""
    folder.mkdir(exist_ok=True)
    shutil.copy(encoder_path_for(src), folder / encoder_path_for(src).name)
    shutil.copy(src, folder / f"{name}.onnx")
    return folder / f"{name}.onnx"


@pytest.fixture
def models(tmp_path, monkeypatch, toy_model_path, toy_task_model_path):
    """A models folder with a sampling model 'groovae' and a task model 'humanize', plus an
    interrupted write's hidden temp file that must not count."""
    folder = tmp_path / "models"
    _copy_model(toy_model_path, folder, "groovae")
    _copy_model(toy_task_model_path("humanize"), folder, "humanize")
    (folder / ".humanize.tmp-0a1b2c3d.onnx").write_bytes(b"partial")
    monkeypatch.setattr(bundled, "MODELS_DIR", folder)
    return folder


def test_bundled_models_are_the_decoders(models):
    names = [name for name, _ in bundled_models()]
    # Encoders (toy_model.encoder.onnx, ...) and hidden temp files are not models of their own.
    assert names == ["groovae", "humanize"]
    assert dict(bundled_models())["humanize"] == models / "humanize.onnx"


def test_a_name_is_bundled_and_anything_else_a_path(models, tmp_path, toy_model_path):
    assert resolve_model("humanize") == models / "humanize.onnx"
    assert resolve_model(None) == models / "groovae.onnx"
    assert resolve_model(None, default="humanize") == models / "humanize.onnx"
    assert resolve_model(str(toy_model_path)) == toy_model_path
    for text in ("humanize", "my-model_2"):
        assert is_model_name(text)
    for text in ("a/b", "x.onnx", "./humanize", "..", "", "a\\b"):
        assert not is_model_name(text)
    with pytest.raises(EngineError, match=r"^no bundled model 'drumfy'; bundled: groovae, "
                                          r"humanize \(or give the path of an \.onnx file\)$"):
        resolve_model("drumfy")
    with pytest.raises(EngineError, match="humanize.onnx: no such model file"):
        resolve_model(str(tmp_path / "humanize.onnx"))  # a path is never looked up by name
    with pytest.raises(EngineError, match="no such model file"):
        resolve_model("humanize.onnx")  # ends in .onnx: a path, here a missing one


def test_an_empty_models_folder_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(bundled, "MODELS_DIR", tmp_path)
    with pytest.raises(EngineError, match="bundled: none"):
        resolve_model(None)


def test_every_command_takes_a_name(models, tmp_path, one_line_failure):
    result = _invoke("sample", "-n", 1, "--model", "groovae", "--out", tmp_path / "s")
    assert result.exit_code == 0, result.output
    result = _invoke("info", "--model", "humanize")
    assert result.exit_code == 0 and "conditioned (humanize)" in result.stdout
    result = _invoke("sample", "-n", 1, "--model", "nope", "--out", tmp_path / "s2")
    line = one_line_failure(result, "groove-live")
    assert result.exit_code == 2 and "bundled: groovae, humanize" in line
    assert not (tmp_path / "s2").exists()


def test_info_lists_the_bundled_models(models):
    result = _invoke("info")
    assert result.exit_code == 0, result.output
    listing = result.stdout.split("\n\n")[0].splitlines()
    assert listing[0].startswith("bundled models")
    assert [line.split()[0] for line in listing[1:]] == ["groovae", "humanize"]
    assert "groovae, 4 bars" in listing[1] and "humanize (conditioned), 2 bars" in listing[2]
    assert f"model       {models / 'groovae.onnx'}" in result.stdout  # then the chosen one

    data = json.loads(_invoke("info", "--json", "--model", "humanize").stdout)
    assert data["spec"]["task"] == "humanize" and data["path"] == str(models / "humanize.onnx")
    assert [(b["name"], b["kind"], b["task"], b["bars"]) for b in data["bundled"]] == [
        ("groovae", "groovae", "", 4), ("humanize", "conditioned", "humanize", 2)]
    assert all(b["size_bytes"] > 0 and not b["error"] for b in data["bundled"])


def test_a_broken_bundled_model_is_listed_with_its_reason(models):
    (models / "broken.onnx").write_bytes(b"not onnx")
    result = _invoke("info")
    assert result.exit_code == 0, result.output
    [line] = [x for x in result.stdout.splitlines() if x.split()[:1] == ["broken"]]
    assert "unusable: " in line and "not a loadable ONNX model" in line
