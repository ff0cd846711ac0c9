"""Atomic file writes: write beside the target, fsync, rename; on failure nothing partial is left.

A reader (a DAW watching the folder, a later run) sees either the old file or the whole new
one, never a torn or 0-byte file from a full disk or an interrupted write.
"""
from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Iterator

TEMP_PREFIX = "."  # hidden, so a folder listing or glob("*.mid") does not show a file in progress
TEMP_MARKER = ".tmp-"


def temp_path_for(final: str | Path) -> Path:
    """A fresh temporary name in final's own folder (a rename across filesystems is a copy).

    The final suffix is kept because some writers pick the format from it (onnx.save); the
    stem is shortened so that a long final name still leaves room for the marker.
    """
    final = Path(final)
    return final.with_name(f"{TEMP_PREFIX}{final.stem[:200]}{TEMP_MARKER}"
                           f"{secrets.token_hex(4)}{final.suffix}")


def is_temp_path(path: str | Path) -> bool:
    """Whether path is one of our temporary names (for tests and for cleaning up by hand)."""
    name = Path(path).name
    return name.startswith(TEMP_PREFIX) and TEMP_MARKER in name


def fsync_file(path: str | Path) -> None:
    """Flush a file's data to the disk: after a crash, a rename can survive while the data
    it points to does not."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    # Makes the rename itself durable. Some systems cannot open or fsync a folder (Windows,
    # some network filesystems); the file is complete either way, so that is not an error.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replace(src: str | Path, final: str | Path) -> Path:
    """Move a complete file written elsewhere in final's folder into place, durably."""
    src, final = Path(src), Path(final)
    fsync_file(src)
    os.replace(src, final)
    _fsync_folder(final.parent)
    return final


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """`with atomic_path(final) as tmp: writer(tmp)`: on success tmp becomes final; on any
    exception (the writer's, the fsync's or the rename's) tmp is removed and it propagates.

    The writer creates tmp itself, so the file gets the usual permissions (umask), not the
    0600 of mkstemp.
    """
    final = Path(final)
    tmp = temp_path_for(final)
    try:
        yield tmp
        replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
