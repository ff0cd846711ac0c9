"""Piano-roll PNGs: files are written, are real PNGs, and bad input is refused."""
from __future__ import annotations

import builtins

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from groove_live import plot  # noqa: E402
from groove_live.pattern import Patterns  # noqa: E402
from groove_live.spec import DEFAULT_SPEC  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _groove(seed: int = 0) -> Patterns:
    rng = np.random.default_rng(seed)
    hits = np.zeros((1, DEFAULT_SPEC.steps, DEFAULT_SPEC.n_drums), np.float32)
    hits[0, ::8, 0] = 1  # kick on 1 and 3
    hits[0, 4::8, 1] = 1  # snare on 2 and 4
    hits[0, ::2, 2] = 1  # closed hi-hat 8ths
    hits[0, 60:63, 4:7] = np.eye(3)  # a tom fill
    velocities = hits * rng.uniform(0.2, 1.0, hits.shape)
    offsets = hits * np.clip(rng.normal(0.0, 0.15, hits.shape), -0.5, 0.49)
    return Patterns(hits, velocities, offsets)


def test_piano_roll_png_is_written(tmp_path):
    path = plot.piano_roll_png(_groove(), DEFAULT_SPEC, tmp_path / "sub" / "roll.png",
                               title="a groove")
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert len(data) > 10_000  # axes, labels and notes, not an empty canvas


def test_grid_png_holds_several(tmp_path):
    items = [("target", _groove(0)), ("reconstruction", _groove(1)),
             ("target", _groove(2)), ("reconstruction", _groove(3)), ("sample", _groove(4))]
    single = plot.piano_roll_png(_groove(), DEFAULT_SPEC, tmp_path / "one.png")
    grid = plot.grid_png(items, DEFAULT_SPEC, tmp_path / "grid.png", columns=2)
    assert grid.read_bytes().startswith(PNG_MAGIC)
    assert grid.stat().st_size > 2 * single.stat().st_size


def test_refuses_a_batch_and_a_wrong_spec(tmp_path):
    batch = Patterns.concat([_groove(0), _groove(1)])
    with pytest.raises(ValueError, match="one pattern"):
        plot.piano_roll_png(batch, DEFAULT_SPEC, tmp_path / "x.png")
    with pytest.raises(ValueError, match="drum classes"):
        plot.piano_roll_png(_groove(), DEFAULT_SPEC.replace(drums=DEFAULT_SPEC.drums[:3]),
                            tmp_path / "x.png")
    with pytest.raises(ValueError, match="at least one"):
        plot.grid_png([], DEFAULT_SPEC, tmp_path / "x.png")


def test_missing_matplotlib_is_one_clear_error(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(plot.PlotUnavailable, match=r"pip install 'groove-live\[png\]'"):
        plot.piano_roll_png(_groove(), DEFAULT_SPEC, tmp_path / "x.png")


def test_importing_plot_does_not_import_matplotlib():
    import subprocess
    import sys

    code = "import sys, groove_live.plot; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_failed_write_leaves_no_file(tmp_path, monkeypatch):
    import errno
    import os

    from matplotlib.figure import Figure

    def full_disk(self, path, **kwargs):
        with open(path, "wb") as f:
            f.write(PNG_MAGIC)  # the start of a PNG, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Figure, "savefig", full_disk)
    with pytest.raises(OSError) as e:
        plot.piano_roll_png(_groove(), DEFAULT_SPEC, tmp_path / "roll.png")
    assert e.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []  # neither roll.png nor a temp file


def test_a_rewrite_replaces_the_whole_file(tmp_path):
    path = tmp_path / "roll.png"
    path.write_bytes(b"an old, longer file " * 10_000)
    plot.piano_roll_png(_groove(), DEFAULT_SPEC, path)
    assert path.read_bytes().startswith(PNG_MAGIC)
    assert [p.name for p in tmp_path.iterdir()] == ["roll.png"]
