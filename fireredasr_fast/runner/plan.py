"""How many worker processes, with how many threads each: a plan from the machine.

CPU inference of a transformer scales well with threads inside a large matmul but poorly
with threads on small ones (decoder steps), and over-subscription (more busy threads than
cores) is catastrophic. So: every physical core gets exactly one thread, grouped into
workers of `threads_per_worker` threads; memory bounds the worker count because each
worker holds activations and, unless the weights are shared through the page cache, a
copy of the model.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from fireredasr_fast.errors import check_number
from fireredasr_fast.flags import PARALLELISM, section
from fireredasr_fast.fsutil import directory_identity

# Working memory of one worker beyond the (shared) weights: activations of a batch of
# ~4 minutes of audio on AED-L, plus Python and library overhead.
WORKER_OVERHEAD_BYTES = 1.5e9
# Fraction of available memory the plan may use; the rest is for the OS, ffmpeg, ollama.
MEMORY_SHARE = 0.7
# A model this large on this few physical cores gets one worker with every core: its decoder
# steps are bound by reading the weights, and one worker reads them once per step for all
# the segments in flight where N workers read them N times. Measured with AED-L on 2 cores,
# where one worker of 2 threads beat two of 1 (docs/tuning.md#cpu-workers-x-threads, rule 2);
# 3-4 cores follow the same arithmetic but are unmeasured.
LARGE_MODEL_BYTES = 1e9
FEW_CORES = 4


@dataclass(frozen=True)
class PlanRequest:
    """What the user asked of the plan; None: chosen from the machine (make_plan)."""

    workers: int | None = None  # 0: the worker's code in the main process
    threads_per_worker: int | None = None

    def __post_init__(self) -> None:
        if self.workers is not None:
            check_number("workers", self.workers, 0, integer=True)
        if self.threads_per_worker is not None:
            check_number("threads_per_worker", self.threads_per_worker, 1, integer=True)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        p = section(parser, PARALLELISM)
        p.add_argument(
            "--workers",
            type=int,
            default=cls.workers,
            help="worker processes (default: from the machine; 0 = in this process)",
        )
        p.add_argument(
            "--threads-per-worker",
            type=int,
            default=cls.threads_per_worker,
            help="threads of each worker (default: from the machine; see docs/tuning.md)",
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> PlanRequest:
        return cls(args.workers, args.threads_per_worker)


@dataclass(frozen=True)
class Plan:
    workers: int
    threads_per_worker: int
    physical_cores: int
    logical_cores: int
    available_gb: float
    model_gb: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        return (
            f"plan: {self.workers} worker(s) x {self.threads_per_worker} thread(s) "
            f"({self.physical_cores} physical / {self.logical_cores} logical cores, "
            f"{self.available_gb:.1f} GB available, model {self.model_gb:.2f} GB; {self.reason})"
        )


def model_bytes(model_dir: str | os.PathLike | None) -> int:
    if not model_dir or not Path(model_dir).is_dir():
        return 0
    return sum(size for size, _ in directory_identity(model_dir).values())


def make_plan(
    model_size_bytes: int,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    physical_cores: int | None = None,
    logical_cores: int | None = None,
    available_bytes: float | None = None,
    weights_shared: bool = True,
) -> Plan:
    """Choose workers x threads. Explicit `workers` / `threads_per_worker` win (OptionError
    when out of range: PlanRequest)."""
    PlanRequest(workers, threads_per_worker)
    physical = physical_cores or psutil.cpu_count(logical=False) or os.cpu_count() or 1
    logical = logical_cores or psutil.cpu_count(logical=True) or physical
    available = available_bytes if available_bytes is not None else psutil.virtual_memory().available

    reason = "explicit" if workers is not None else "one thread per physical core"
    if threads_per_worker is None:
        threads_per_worker, reason = _default_threads(model_size_bytes, workers, physical, reason)
    if workers is None:
        workers = max(1, physical // threads_per_worker)
        per_worker = WORKER_OVERHEAD_BYTES + (0 if weights_shared else model_size_bytes)
        budget = available * MEMORY_SHARE - (model_size_bytes if weights_shared else 0)
        by_memory = max(1, int(budget // per_worker))
        if by_memory < workers:
            workers = by_memory
            reason = "limited by available memory"
    return Plan(
        workers=workers,
        threads_per_worker=threads_per_worker,
        physical_cores=physical,
        logical_cores=logical,
        available_gb=available / 1e9,
        model_gb=model_size_bytes / 1e9,
        reason=reason,
    )


def _default_threads(model_size_bytes: int, workers: int | None, physical: int, reason: str) -> tuple[int, str]:
    """Threads per worker when not given, and the plan's reason."""
    if workers:
        return max(1, physical // workers), reason
    if model_size_bytes >= LARGE_MODEL_BYTES and physical <= FEW_CORES:
        return physical, "large model on few cores: one worker reads the weights once per decoder step"
    # Two threads per worker from 8 cores up: fewer model replicas in flight and
    # bigger matmuls per worker, while keeping most parallelism across batches.
    return (2 if physical >= 8 else 1), reason


# NUMBA_NUM_THREADS sizes numba's pool (kernels.py) when it starts; the kernels then run on
# as many of its threads as torch has.
THREAD_ENV_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "NUMBA_NUM_THREADS",
)


def _numba_pool_started() -> bool:
    parallel = sys.modules.get("numba.np.ufunc.parallel")
    return bool(parallel is not None and getattr(parallel, "_is_initialized", False))


def set_process_threads(threads: int) -> None:
    """Pin this process's thread pools; call before any inference work.

    Once numba's pool runs its size is fixed: numba rereads its environment at each compile
    and raises if NUMBA_NUM_THREADS changed, so the variable is then left alone (the kernels
    use as many of the pool's threads as torch has, kernels.py). numba imported earlier (the
    fork server's preload) read its configuration then, and loading the kernels from its
    cache does not read it again: the pool would start at the machine's core count, and set
    OpenMP's (torch's) thread count to it (docs/tuning.md#worker-start-up-and-memory), so
    the configuration is read again here."""
    started = _numba_pool_started()
    for name in THREAD_ENV_VARS:
        if not (started and name == "NUMBA_NUM_THREADS"):
            os.environ[name] = str(threads)
    config = sys.modules.get("numba.core.config")
    if config is not None and not started:
        config.reload_config()  # type: ignore[attr-defined]
    import torch

    torch.set_num_threads(threads)
    # Raises once inter-op work has started in this process; the first setting stands then.
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)


# How far the runner lowers its preload thread (ffmpeg decoding and the VAD) when workers
# run several threads: its work is a few percent of the workers', but at the same priority it
# steals a core from a worker whose threads wait for each other at every parallel step.
# Measured on 2 cores with AED-L: at nice 19 a worker's call ran about as fast as alone while
# the preload still kept far ahead, where at nice 0 it was several times slower
# (docs/tuning.md#cpu-workers-x-threads, rule 5).
PRELOAD_NICE = 19


def lower_thread_priority(nice: int) -> bool:
    """Give the calling thread (and the processes it starts, e.g. ffmpeg) at least this nice
    value. Linux only, where a thread has its own nice value; elsewhere, or where the system
    refuses, nothing changes. Returns whether the thread now runs at `nice` or lower priority."""
    if not sys.platform.startswith("linux"):
        return False
    thread = threading.get_native_id()
    try:
        if os.getpriority(os.PRIO_PROCESS, thread) < nice:
            os.setpriority(os.PRIO_PROCESS, thread, nice)  # lowering priority needs no privilege
    except OSError:
        return False
    return True
