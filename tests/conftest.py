"""Fixtures shared across test packages: the committed toy model, and toy runs exported here."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

# One OpenMP thread for torch here and in the subprocesses tests start: the models under test
# are tiny, and with any other load on the machine 2 spinning OpenMP threads made a 7 s
# training test take 230 s.
os.environ.setdefault("OMP_NUM_THREADS", "1")

FIXTURES = Path(__file__).parent / "fixtures"
TOY_MODEL = FIXTURES / "toy_model.onnx"  # rebuilt by tests/fixtures/make_toy_model.py
GMD = FIXTURES / "gmd"


@pytest.fixture(scope="session")
def toy_model_path() -> Path:
    """The committed groovae_tiny export (no torch needed to use it)."""
    return TOY_MODEL


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
