"""`groove-live serve` with the tests' FakeEngine in place of the ONNX model (see procs.FAKE)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for live.fake_engine

from live.fake_engine import FakeEngine  # noqa: E402

from groove_live.live import cli  # noqa: E402

cli._engine_factory = lambda model: FakeEngine  # the command itself is unchanged
cli.serve.main(args=sys.argv[1:], prog_name="groove-live serve")
