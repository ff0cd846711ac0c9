"""The wheel `pip install .` builds: the runtime with its model, train/ and export/ mapped under
groove_live, torch only in the `train` extra, and the three console scripts."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    # Built from a copy: an in-tree build leaves build/ behind, and a stale build/lib would
    # carry files since deleted into later wheels (and hide them from this test).
    src = out / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "runs", "data_cache", "__pycache__",
        ".pytest_cache"))
    # No build isolation: the build backend is already installed here, and CI needs no index.
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(src)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    (path,) = out.glob("groove_live-*.whl")
    return zipfile.ZipFile(path)


def _dist_info(wheel: zipfile.ZipFile, name: str) -> str:
    (member,) = [n for n in wheel.namelist() if re.match(rf"[^/]+\.dist-info/{name}$", n)]
    return wheel.read(member).decode()


def test_the_model_ships_inside_the_package(wheel):
    names = set(wheel.namelist())
    assert {"groove_live/models/groovae.onnx", "groove_live/models/groovae.encoder.onnx"} <= names
    # All bundled models together within 20 MB (decimal: the stricter reading), code included.
    assert sum(wheel.getinfo(n).file_size for n in names) <= 20_000_000


def test_train_and_export_live_under_groove_live_only(wheel):
    names = wheel.namelist()
    assert "groove_live/train/fit.py" in names and "groove_live/export/onnx_export.py" in names
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"groove_live"}, tops


def test_torch_is_only_a_training_extra_and_the_scripts_exist(wheel):
    requires = [line.split(":", 1)[1].strip() for line in
                _dist_info(wheel, "METADATA").splitlines() if line.startswith("Requires-Dist:")]
    base = [r for r in requires if "extra ==" not in r]
    assert not any(r.startswith(("torch", "onnxruntime-gpu", "pretty_midi")) for r in base), base
    assert any(r.startswith("onnxruntime") for r in base)
    assert any(r.startswith("torch==2.13.0") and "extra == \"train\"" in r for r in requires)
    entry_points = _dist_info(wheel, "entry_points.txt")
    for script in ("groove-live", "groove-train", "groove-export"):
        assert re.search(rf"^{script} = ", entry_points, re.M), entry_points
