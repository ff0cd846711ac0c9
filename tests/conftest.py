"""Fixtures shared across test packages: the committed toy model, and toy runs exported here."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

# One OpenMP thread for torch here and in the subprocesses tests start: the models under test
# are tiny, and with any other load on the machine 2 spinning OpenMP threads made a 7 s
# training test take 230 s.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Tests that import onnxruntime directly (before groove_live.ort could) must not phone home
# either; see docs/network.md. tests/live/test_no_network.py removes it again where it checks
# that groove-live sets it by itself.
os.environ["ORT_DISABLE_TELEMETRY"] = "1"

FIXTURES = Path(__file__).parent / "fixtures"
TOY_MODEL = FIXTURES / "toy_model.onnx"  # rebuilt by tests/fixtures/make_toy_model.py
GMD = FIXTURES / "gmd"
# groovae_2bar_{task}_tiny exports, rebuilt by tests/fixtures/make_toy_task_models.py
TOY_TASK_MODELS = {task: FIXTURES / f"toy_{task}.onnx"
                   for task in ("humanize", "drumify", "infill")}


@pytest.fixture(scope="session")
def toy_model_path() -> Path:
    """The committed groovae_tiny export (no torch needed to use it)."""
    return TOY_MODEL


@pytest.fixture(scope="session")
def toy_task_model_path():
    """toy_task_model_path(task) -> the committed export of that task's tiny preset (no torch
    needed to use it); its encoder is beside it."""
    def path(task: str) -> Path:
        return TOY_TASK_MODELS[task]
    return path


@dataclass
class ToyExport:
    run_dir: Path
    model_path: Path  # the exported decoder; its encoder is beside it
    model: object  # the torch GrooVAE it was exported from, in eval mode
    result: object  # groove_live.export.onnx_export.ExportResult


@pytest.fixture(scope="session")
def toy_export(tmp_path_factory):
    """toy_export(head) -> ToyExport: groovae_tiny trained a few steps on the GMD fixture and
    exported, once per head per session."""
    made: dict[str, ToyExport] = {}
    root = tmp_path_factory.mktemp("toy_export")

    def make(head: str = "mean") -> ToyExport:
        if head not in made:
            import torch

            from groove_live.export.onnx_export import export_run
            from groove_live.train.data import prepare
            from groove_live.train.fit import fit
            from groove_live.train.run import load_model

            data = root / "data"
            prepare(GMD, data, progress=False)  # cached after the first head
            run = root / f"run_{head}"
            threads = torch.get_num_threads()
            try:
                fit(run, data, "groovae_tiny", {"continuous_head": head},
                    {"max_steps": 8, "eval_every": 8, "checkpoint_every": 8},
                    progress=False, threads=1)
            finally:
                torch.set_num_threads(threads)
            result = export_run(run, root / f"{head}.onnx")
            made[head] = ToyExport(run, result.decoder_path, load_model(run)[0], result)
        return made[head]

    return make


@pytest.fixture(scope="session")
def toy_task_export(tmp_path_factory):
    """toy_task_export(task) -> ToyExport: groovae_2bar_{task}_tiny trained a few steps on the
    GMD fixture and exported, once per task per session (for checks against torch)."""
    made: dict[str, ToyExport] = {}
    root = tmp_path_factory.mktemp("toy_task_export")

    def make(task: str) -> ToyExport:
        if task not in made:
            import torch

            from groove_live.export.onnx_export import export_run
            from groove_live.train.data import PrepareOptions, prepare
            from groove_live.train.fit import fit
            from groove_live.train.run import load_model

            data = root / "data"
            prepare(GMD, data, PrepareOptions(bars=2), progress=False)  # cached after the first
            run = root / f"run_{task}"
            threads = torch.get_num_threads()
            try:
                fit(run, data, f"groovae_2bar_{task}_tiny", None,
                    {"max_steps": 8, "eval_every": 8, "checkpoint_every": 8},
                    progress=False, threads=1)
            finally:
                torch.set_num_threads(threads)
            result = export_run(run, root / f"{task}.onnx")
            made[task] = ToyExport(run, result.decoder_path, load_model(run)[0], result)
        return made[task]

    return make


# Prepended to code run by `run_torch_free`: any import of torch (or pretty_midi, a training
# extra) fails at once, so the code under test behaves as in a runtime-only install.
_REFUSE_TORCH = textwrap.dedent("""
    import sys

    class Refuse:
        tried = []
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "pretty_midi"):
                self.tried.append(name)
                raise ImportError(f"the runtime imported {name}")
            return None

    refuse = Refuse()
    sys.meta_path.insert(0, refuse)
""")
_CHECK_TORCH_FREE = textwrap.dedent("""
    assert not refuse.tried, refuse.tried
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "pretty_midi"))
    assert not leaked, leaked
    print("torch-free")
""")


@pytest.fixture(scope="session")
def run_torch_free():
    """run_torch_free(code, *argv) -> CompletedProcess: `code` in a fresh interpreter where
    importing torch fails; it asserts afterwards that torch was never imported and prints
    'torch-free' last."""
    def run(code: str, *argv, timeout_s: float = 120) -> subprocess.CompletedProcess:
        script = _REFUSE_TORCH + textwrap.dedent(code) + _CHECK_TORCH_FREE
        return subprocess.run([sys.executable, "-c", script, *map(str, argv)],
                              capture_output=True, text=True, timeout=timeout_s)
    return run


@pytest.fixture(scope="session")
def one_line_failure():
    """one_line_failure(click_result, prog) -> the line: the command failed (exit != 0) with
    exactly one line on stderr, prefixed 'prog: ', and no traceback."""
    def check(result, prog: str) -> str:
        assert result.exit_code != 0
        assert result.exception is None or isinstance(result.exception, SystemExit), \
            result.exception
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"{prog}: "), result.stderr
        return lines[0]
    return check


# Where .ci/run installed the real clients it sets GROOVE_LIVE_REQUIRE_CLIENTS=1: a client test
# that skips there hides a broken install or a broken test behind a green run, so it fails.
def pytest_runtest_makereport(item, call):
    if os.environ.get("GROOVE_LIVE_REQUIRE_CLIENTS") != "1" or item.get_closest_marker("clients") is None:
        return None
    from _pytest.reports import TestReport

    report = TestReport.from_item_and_call(item, call)
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = (f"client test skipped where .ci/install_clients.sh ran "
                           f"(GROOVE_LIVE_REQUIRE_CLIENTS=1): {reason}")
    return report


@pytest.fixture
def fails(one_line_failure):
    """fails(result) -> the one line a groove-live command failed with (exit 2)."""
    def check(result) -> str:
        line = one_line_failure(result, "groove-live")
        assert result.exit_code == 2, result.exit_code
        return line
    return check


# MusicVAE drum models (kinds categorical and hierarchical): cat_drums_2bar_tiny and
# hierdec_drums_16bar_tiny exports, rebuilt by tests/fixtures/make_toy_musicvae_models.py
TOY_MUSICVAE_MODELS = {"categorical": FIXTURES / "toy_cat_drums_2bar.onnx",
                       "hierarchical": FIXTURES / "toy_hierdec_drums_16bar.onnx"}


@pytest.fixture(scope="session")
def toy_musicvae_model_path():
    """toy_musicvae_model_path(kind) -> the committed export of that kind's tiny preset
    ("categorical": 2 bars, "hierarchical": 16 bars; no torch needed to use it); its encoder is
    beside it."""
    def path(kind: str) -> Path:
        return TOY_MUSICVAE_MODELS[kind]
    return path


@pytest.fixture(scope="session")
def toy_musicvae_export(tmp_path_factory):
    """toy_musicvae_export(preset) -> ToyExport: a MusicVAE drum preset (e.g.
    cat_drums_2bar_tiny, hierdec_drums_16bar_tiny, flat_drums_16bar_tiny) trained a few steps on
    the GMD fixture's windows of its bars and exported, once per preset per session. Three
    fixture files are 16 bars or longer, so a 16-bar cache has a window in every split."""
    made: dict[str, ToyExport] = {}
    root = tmp_path_factory.mktemp("toy_musicvae_export")

    def make(preset: str) -> ToyExport:
        if preset not in made:
            import torch

            from groove_live.export.onnx_export import export_run
            from groove_live.train.config import get_preset
            from groove_live.train.data import PrepareOptions, prepare
            from groove_live.train.fit import fit
            from groove_live.train.run import load_model

            bars = get_preset(preset).spec_fields["bars"]
            data = root / f"data_{bars}bar"
            prepare(GMD, data, PrepareOptions(bars=bars), progress=False)  # cached if there
            run = root / f"run_{preset}"
            threads = torch.get_num_threads()
            try:
                fit(run, data, preset, None,
                    {"max_steps": 8, "eval_every": 8, "checkpoint_every": 8},
                    progress=False, threads=1)
            finally:
                torch.set_num_threads(threads)
            result = export_run(run, root / f"{preset}.onnx")
            made[preset] = ToyExport(run, result.decoder_path, load_model(run)[0], result)
        return made[preset]

    return make


# The chorale harmonizer (kind pitched): chorale_wgan_gp_tiny trained 4 steps on hand-made
# chorales and exported, rebuilt by tests/fixtures/make_toy_chorale_model.py (decoder only: a
# harmonizer has no encoder).
TOY_CHORALE_MODEL = FIXTURES / "toy_chorale_harmonizer.onnx"


@pytest.fixture(scope="session")
def toy_chorale_model_path() -> Path:
    """The committed toy harmonizer export (no torch needed to use it)."""
    return TOY_CHORALE_MODEL


@pytest.fixture(scope="session")
def toy_chorale_export(tmp_path_factory) -> ToyExport:
    """The toy harmonizer made afresh by its maker script (hand-made chorales, 4 steps) and
    exported here, with its run and torch model, for checks against torch."""
    import importlib.util

    import torch

    from groove_live.train.run import load_model

    maker_spec = importlib.util.spec_from_file_location(
        "make_toy_chorale_model", FIXTURES / "make_toy_chorale_model.py")
    maker = importlib.util.module_from_spec(maker_spec)
    maker_spec.loader.exec_module(maker)
    root = tmp_path_factory.mktemp("toy_chorale_export")
    threads = torch.get_num_threads()
    try:
        result = maker.make_toy_chorale_model(root / "chorale.onnx", work_dir=root)
    finally:
        torch.set_num_threads(threads)
    return ToyExport(root / "run", result.decoder_path, load_model(root / "run")[0], result)
