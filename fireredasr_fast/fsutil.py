"""Atomic file writes (a file is either absent, or complete; never half-written), the cache,
and the identity of files (what tells a replaced model or video from the one seen before)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file in the same directory, fsync, then rename over `path`.

    Rename within one filesystem is atomic, so a reader (or a resumed run) sees either the
    old file or the new one. On any error (ENOSPC included) the temporary file is removed
    and the exception propagates; an existing `path` is left untouched.
    """
    replace_all([(stage_bytes(path, data), Path(path))])


def stage_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """`data` written and fsynced to a temporary file beside `path`, for `replace_all`. On any
    error the temporary file is removed and the exception propagates."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp_name, 0o644)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    return Path(tmp_name)


def replace_all(staged: list[tuple[Path, Path]]) -> None:
    """Rename each staged temporary file over its target: all of them, or on any error none
    (the temporaries are removed, the targets keep their old contents). A target that is a
    directory is refused before anything is renamed; a rename that fails after others
    succeeded (a file system failing mid-way) leaves those renamed."""
    try:
        for _, target in staged:
            if target.is_dir():
                raise IsADirectoryError(21, "Is a directory", str(target))
        for tmp, target in staged:
            os.replace(tmp, target)
    except BaseException:
        discard(tmp for tmp, _ in staged)
        raise


def discard(paths: Iterable[Path]) -> None:
    """Remove temporary files, those already gone or not removable aside."""
    for path in paths:
        with contextlib.suppress(OSError):
            os.unlink(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


# Lone surrogates: what os.fsdecode makes of the bytes of a file name that are not UTF-8.
_SURROGATE = re.compile("[\ud800-\udfff]")


def json_text(data: object, **options: object) -> str:
    """json.dumps with non-ASCII text as is, encodable as UTF-8 whatever the file names in it:
    a lone surrogate (a name's byte that is not UTF-8) is written as its escape (\\udcff),
    which json.loads turns back into the same code point and os.fsencode into the same byte."""
    text = json.dumps(data, ensure_ascii=False, **options)  # type: ignore[arg-type]
    return _SURROGATE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def display_name(name: str | os.PathLike) -> str:
    """A file name (or a message holding one) as shown to people, on one line: bytes that are
    not UTF-8 as \\xff, control characters (a newline in a name) as \\n or \\x1b."""
    text = os.fspath(name)
    try:
        text = os.fsencode(text).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate os.fsdecode never makes
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


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
