"""Atomic file writes (a file is either absent, or complete; never half-written), the cache,
and the identity of files (what tells a replaced model or video from the one seen before)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file in the same directory, fsync, then rename over `path`.

    Rename within one filesystem is atomic, so a reader (or a resumed run) sees either the
    old file or the new one. On any error (ENOSPC included) the temporary file is removed
    and the exception propagates; an existing `path` is left untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


CACHE_ENV = "FIREREDASR_FAST_CACHE"


def cache_dir(*parts: str) -> Path:
    """Where derived files live (ONNX exports, models shipped to a cluster node):
    $FIREREDASR_FAST_CACHE, else $XDG_CACHE_HOME/fireredasr-fast, else ~/.cache/fireredasr-fast."""
    root = os.environ.get(CACHE_ENV)
    if not root:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fireredasr-fast"
    return Path(root, *parts)


def directory_made_once(target: Path, fill: Callable[[Path], None]) -> Path:
    """`target`, made by `fill(staging_dir)` if it does not exist yet. The files are written into
    a temporary sibling directory that is then renamed into place, so a reader never sees half
    of it; when another process wins the race, its copy is kept and ours is dropped."""
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        fill(staging)
        try:
            os.rename(staging, target)
        except OSError:
            if not target.is_dir():  # not a lost race: a real failure
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def file_identity(path: str | os.PathLike) -> tuple[int, int]:
    """(size in bytes, mtime in ns) of a file: a replaced file changes at least one."""
    stat = Path(path).stat()
    return stat.st_size, stat.st_mtime_ns


def directory_identity(path: str | os.PathLike) -> dict[str, tuple[int, int]]:
    """file_identity of every file directly in a directory (a model directory), by name,
    sorted by name."""
    files = sorted(f for f in Path(path).iterdir() if f.is_file())
    return {f.name: file_identity(f) for f in files}
