"""The CI guard in tests/conftest.py: where the real clients were installed, a client test that
skips fails the run instead of hiding behind a green one."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

SKIPPING_CLIENT_TESTS = '''
import pytest
pytestmark = [pytest.mark.clients]

@pytest.fixture
def sclang():
    pytest.skip("sclang is not installed here")

def test_needs_a_client(sclang):
    pass

def test_skips_inline():
    pytest.skip("no Sonic Pi")

def test_not_a_client_test_may_skip():
    pass
'''


def _run(tmp_path: Path, require: str | None) -> subprocess.CompletedProcess:
    shutil.copy(Path(__file__).parent / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_skipping.py").write_text(SKIPPING_CLIENT_TESTS)
    env = {k: v for k, v in os.environ.items() if k != "GROOVE_LIVE_REQUIRE_CLIENTS"}
    if require is not None:
        env["GROOVE_LIVE_REQUIRE_CLIENTS"] = require
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-W", "ignore::pytest.PytestUnknownMarkWarning", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_skipped_client_tests_fail_where_clients_are_required(tmp_path):
    result = _run(tmp_path, "1")
    assert result.returncode == 1, result.stdout
    assert "1 failed, 1 passed, 1 error" in result.stdout, result.stdout
    assert "client test skipped where .ci/install_clients.sh ran" in result.stdout


def test_skipped_client_tests_only_skip_elsewhere(tmp_path):
    result = _run(tmp_path, None)
    assert result.returncode == 0, result.stdout
    assert "1 passed, 2 skipped" in result.stdout, result.stdout
