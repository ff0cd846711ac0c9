"""Atomic writes: the file appears whole or not at all; a failure leaves no temp file behind."""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import onnx
import pytest

from groove_live import atomic_io
from groove_live.atomic_io import atomic_path, is_temp_path


def _enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _write_half_then_fail(path) -> None:
    """What a full disk does: some bytes land, then the write fails."""
    with open(path, "wb") as f:
        f.write(b"MThd" + b"\0" * 100)
        f.flush()
        raise _enospc()


def test_success_renames_a_temp_file_from_the_same_folder(tmp_path):
    final = tmp_path / "groove.mid"
    with atomic_path(final) as tmp:
        assert tmp.parent == final.parent and tmp != final
        assert is_temp_path(tmp) and tmp.name.startswith(".") and tmp.suffix == ".mid"
        tmp.write_bytes(b"whole file")
        assert not final.exists()  # nobody sees it before it is complete
    assert final.read_bytes() == b"whole file"
    assert [p.name for p in tmp_path.iterdir()] == ["groove.mid"]


def test_a_failure_midway_leaves_nothing(tmp_path):
    final = tmp_path / "groove.mid"
    with pytest.raises(OSError) as e:
        with atomic_path(final) as tmp:
            _write_half_then_fail(tmp)
    assert e.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


def test_a_failed_rewrite_keeps_the_old_file(tmp_path):
    final = tmp_path / "groove.mid"
    final.write_bytes(b"old and whole")
    with pytest.raises(OSError):
        with atomic_path(final) as tmp:
            _write_half_then_fail(tmp)
    assert final.read_bytes() == b"old and whole"
    assert list(tmp_path.iterdir()) == [final]


@pytest.mark.parametrize("error", [KeyboardInterrupt, ValueError])
def test_any_exception_cleans_up_and_propagates(tmp_path, error):
    with pytest.raises(error):
        with atomic_path(tmp_path / "x.png") as tmp:
            tmp.write_bytes(b"partial")
            raise error()
    assert list(tmp_path.iterdir()) == []


def test_data_is_fsynced_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(atomic_io.os, "fsync", fsync)
    monkeypatch.setattr(atomic_io.os, "replace", replace)
    final = tmp_path / "a.mid"
    with atomic_path(final) as tmp:
        tmp.write_bytes(b"data")
    assert events == [("fsync", str(tmp)), ("replace", str(tmp), str(final)),
                      ("fsync", str(tmp_path))]  # the file, the rename, then the folder


def test_a_failing_fsync_leaves_nothing(tmp_path, monkeypatch):
    def fsync(fd):
        raise _enospc()

    monkeypatch.setattr(atomic_io.os, "fsync", fsync)
    with pytest.raises(OSError):
        with atomic_path(tmp_path / "a.mid") as tmp:
            tmp.write_bytes(b"data")
    assert list(tmp_path.iterdir()) == []


def test_the_file_gets_the_usual_permissions(tmp_path):
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    with atomic_path(tmp_path / "atomic") as tmp:
        tmp.write_bytes(b"")
    mode = stat.S_IMODE((tmp_path / "atomic").stat().st_mode)
    assert mode == stat.S_IMODE(plain.stat().st_mode)  # umask's, not mkstemp's 0600


def test_long_names_and_fresh_temp_names(tmp_path):
    final = tmp_path / ("x" * 240 + ".mid")
    names = {atomic_io.temp_path_for(final).name for _ in range(20)}
    assert len(names) == 20 and all(len(n) < 255 for n in names)
    with atomic_path(final) as tmp:
        tmp.write_bytes(b"ok")
    assert final.read_bytes() == b"ok"


def test_replace_moves_a_staged_file_into_place(tmp_path):
    staged = tmp_path / "staging" / "m.onnx"
    staged.parent.mkdir()
    staged.write_bytes(b"model")
    (tmp_path / "m.onnx").write_bytes(b"old model")
    atomic_io.replace(staged, tmp_path / "m.onnx")
    assert (tmp_path / "m.onnx").read_bytes() == b"model" and not staged.exists()


# --- export writes its ONNX files the same way --------------------------------------------------
@pytest.mark.parametrize("failing_save, names", [(1, "decoder"), (2, "encoder")])
def test_export_on_a_full_disk_names_the_file_and_leaves_nothing(toy_export, tmp_path,
                                                                   monkeypatch, failing_save,
                                                                   names):
    from groove_live.export.onnx_export import ExportError, export_run

    run_dir = toy_export("mean").run_dir
    real_save, calls = onnx.save, []

    def save(model, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == failing_save:
            _write_half_then_fail(path)
        return real_save(model, path, *args, **kwargs)

    monkeypatch.setattr(onnx, "save", save)
    out_dir = tmp_path / "models"
    out_dir.mkdir()
    with pytest.raises(ExportError) as e:
        export_run(run_dir, out_dir / "kit.onnx")
    failed = out_dir / ("kit.onnx" if names == "decoder" else "kit.encoder.onnx")
    assert str(e.value) == f"{failed}: cannot write ({os.strerror(errno.ENOSPC)})"
    assert list(out_dir.iterdir()) == []  # no model, no staging folder


def test_export_moves_both_files_into_place_durably(toy_export, tmp_path, monkeypatch):
    from groove_live.export.onnx_export import export_run

    moved = []
    real_replace = atomic_io.replace
    monkeypatch.setattr(atomic_io, "replace",
                        lambda src, dst: moved.append(Path(dst).name) or real_replace(src, dst))
    result = export_run(toy_export("mean").run_dir, tmp_path / "kit.onnx")
    assert moved == ["kit.onnx", "kit.encoder.onnx"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kit.encoder.onnx", "kit.onnx"]
    assert result.decoder_path.stat().st_size > 0
