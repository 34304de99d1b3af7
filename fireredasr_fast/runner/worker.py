"""The worker side: what runs inside a worker process (local pool, or a Ray actor).

A worker builds its engine once from an EngineSpec, with its thread counts pinned first,
then recognises batches of segment jobs. The runner and the Ray executor both drive these
functions; neither knows how the other starts its processes.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import os
import sys
import time

from fireredasr_fast.batching import SegmentJob
from fireredasr_fast.engines import Engine, EngineSpec
from fireredasr_fast.errors import FireRedFastError
from fireredasr_fast.glossary import Glossary
from fireredasr_fast.results import Hypothesis
from fireredasr_fast.transcribe import recognise

from .gpu import cap_worker_memory
from .lifeline import attach
from .plan import set_process_threads


class WorkerLost(Exception):
    """The process running a batch died (or declined it); the executor has already replaced
    it. The batch itself was fine: run it again elsewhere.

    `counts_as_attempt` is False when the batch never started (a GPU worker that found too
    little free memory), so it does not use up one of the batch's bounded retries."""

    def __init__(self, message: str, counts_as_attempt: bool = True) -> None:
        super().__init__(message)
        self.counts_as_attempt = counts_as_attempt


_engine: Engine | None = None
_init_error: BaseException | None = None
_last_done: float = 0.0


def init_process(spec: EngineSpec, threads: int) -> None:
    """Initializer of a local pool process (CPU or GPU worker), started from the run's own
    thread: it dies with the main process, and leaves Ctrl-C to it (lifeline.py)."""
    gc.enable()  # a fork server turns it off while it imports (forkstart.py)
    attach(kernel_signal=True)
    load_engine(spec, threads)


def load_engine(spec: EngineSpec, threads: int) -> None:
    set_process_threads(threads)
    global _engine, _init_error, _last_done
    try:
        _engine = spec.build()
        cap_worker_memory(spec.device)
    except Exception as exc:
        # An initializer that raises breaks the whole pool with no message; keep the error
        # and report it with each batch instead.
        _init_error = exc
    _last_done = time.perf_counter()


def run_batch(jobs: list[SegmentJob], hotwords: Glossary | None = None) -> tuple[list[Hypothesis], dict[str, float]]:
    """Recognise one batch (with its file's glossary); also return this worker's compute and
    starvation times."""
    global _last_done
    if _init_error is not None:
        raise RuntimeError(f"the engine could not be loaded: {describe_error(_init_error)}")
    assert _engine is not None
    start = time.perf_counter()
    hyps = recognise(_engine, jobs, hotwords)
    end = time.perf_counter()
    # "wait" is the idle gap since this worker's previous batch: time it starved.
    stats = {"pid": os.getpid(), "compute": end - start, "wait": start - _last_done}
    release_freed_memory()
    _last_done = time.perf_counter()
    return hyps, stats


def release_freed_memory() -> bool:
    """Hand the heap a batch freed back to the system. glibc keeps freed blocks for reuse,
    so a worker otherwise holds its largest batch's activations between batches, memory the
    other workers and the page cache could use (docs/tuning.md#worker-start-up-and-memory).
    False where there is no glibc."""
    trim = _malloc_trim()
    return trim is not None and bool(trim(0))


@functools.cache
def _malloc_trim():  # type: ignore[no-untyped-def]
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # musl and other libcs have no malloc_trim
        return None


def describe_error(exc: BaseException) -> str:
    """One line for a log or a journal entry."""
    if isinstance(exc, FireRedFastError):
        return str(exc)
    if isinstance(exc, OSError):
        return os_error(exc)
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def os_error(exc: OSError) -> str:
    return f"{exc.strerror or exc} (errno {exc.errno})" if exc.errno else str(exc)
