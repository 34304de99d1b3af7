"""One run per output folder: a lock file in it, held for the whole run.

The lock is an flock on `.fireredasr-fast.lock`. The kernel releases it when the process ends,
however it ends (SIGKILL included), so the lock a killed run leaves is taken over by the next
run. The file says who holds it (pid, host, start time) for the message a second run prints; a
run that ends normally empties it, so a holder found by a run that got the lock is a run that
was killed. The file itself stays (removing it would let two runs lock two different files).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from fireredasr_fast.errors import FireRedFastError
from fireredasr_fast.fsutil import display_name

try:
    import fcntl
except ImportError:  # Windows: no flock; runs there are not locked
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("fireredasr_fast")

LOCK_NAME = ".fireredasr-fast.lock"


class RunRefused(FireRedFastError):
    """The run cannot start (exit 2): its output folder is busy, or its outputs would clash."""


@contextlib.contextmanager
def output_folder_lock(output_dir: Path) -> Iterator[None]:
    """Hold the output folder's lock for the `with` block; RunRefused, naming the holder, when
    another run holds it."""
    path = output_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise RunRefused(f"{display_name(path)}: cannot open the output folder's lock file ({exc.strerror})") from None
    try:
        if _lock(fd, path):
            previous = _holder(fd)
            if previous:
                log.warning("%s: taking over the lock of a run that was killed (%s)", display_name(path), previous)
            _write(fd, json.dumps(_me()).encode())
        yield
        _write(fd, b"")
    finally:
        os.close(fd)  # releases the lock


def _lock(fd: int, path: Path) -> bool:
    """Take the lock without waiting: True when taken, False when this file system cannot
    lock (a warning); RunRefused when another run holds it."""
    if fcntl is None:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd) or "a run that has not yet written its name"
        raise RunRefused(
            f"{display_name(path.parent)}: another run is writing to this output folder ({holder}); "
            "wait for it to end or choose another --output-dir"
        ) from None
    except OSError as exc:
        if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            raise
        log.warning("%s: cannot lock files here; make sure no other run uses this folder", display_name(path.parent))
        return False
    return True


def _me() -> dict[str, object]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}


def _holder(fd: int) -> str:
    """Who the lock file names, as words; "" when it names no one."""
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"null")
        return f"pid {data['pid']} on {data['host']}, started {data['started']}"
    except (ValueError, TypeError, KeyError, OSError):
        return ""


def _write(fd: int, data: bytes) -> None:
    with contextlib.suppress(OSError):  # the name is for messages only; the flock is the lock
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
