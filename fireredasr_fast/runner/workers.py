"""Who recognises the batches: worker groups behind one interface.

The scheduler keeps a list of WorkerGroups fed and knows nothing else of them: a group takes a
batch (`submit`, a future of worker.run_batch's result), says how many batches it can run at
once (`live_slots`), is restarted when a worker died or hung, stood down when it may not go
on, and shut down at the end of the run. The kinds:

- `LocalWorkers`: this machine's CPU worker processes (a process pool), or with no worker
  processes the worker's code in the run's own process;
- `GpuWorker`: one local process on one GPU; `GpuWorkers` starts one per GPU that gpu.py says
  has room, and any failure stands it down (the GPU is shared: the batch goes back);
- `cluster.RayWorkers`: Ray actors, one per slot on each node of a cluster.

A group's processes all build the same engine from an EngineSpec (worker.py); a lost worker is
reported as WorkerLost by the executors that replace it themselves (Ray's).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from fireredasr_fast.batching import SegmentJob
from fireredasr_fast.engines import EngineSpec
from fireredasr_fast.glossary import Glossary

from .gpu import GpuScheduler, is_cuda_oom
from .lifeline import quiet_start, stop_pool
from .plan import Plan
from .worker import describe_error, init_process, load_engine, run_batch
from .workerstart import worker_context

log = logging.getLogger("fireredasr_fast")


class WorkerGroup(ABC):
    """Workers that share one place in the scheduler's queue.

    `slots`: batches that can run at once; `takes_largest`: the group takes the largest
    ready batches (GPU workers), else the smallest (CPU workers). `warm`: a batch came back
    since its workers started (the model is loaded), set by the scheduler."""

    # A batch past its deadline may kill the group's processes (they are this run's own).
    killable = True
    # Any failure stands the group down for the rest of the run instead of restarting it.
    opportunistic = False

    def __init__(self, name: str, slots: int, takes_largest: bool = False) -> None:
        self.name = name
        self.slots = slots
        self.takes_largest = takes_largest
        self.warm = False
        self._executor: cf.Executor | None = None

    @abstractmethod
    def _new_executor(self) -> cf.Executor:
        """The group's workers, started (or starting)."""

    @abstractmethod
    def describe(self) -> str:
        """One line for the log: what the group is."""

    def start(self) -> None:
        self._executor = self._new_executor()
        self.warm = False

    def submit(self, jobs: list[SegmentJob], hotwords: Glossary | None = None) -> cf.Future:
        """A future of run_batch(jobs, hotwords): (hypotheses, the worker's stats)."""
        assert self._executor is not None, f"{self.name}: the group was not started"
        try:
            with quiet_start():  # a submission may start a worker process (lifeline.py)
                # The glossary only when there is one: a batch without stays as small as before.
                return self._executor.submit(run_batch, jobs, *([hotwords] if hotwords else []))
        except BrokenProcessPool as exc:
            # A worker died since the scheduler last looked: the batch comes back failed the
            # way its batches in flight do, so one path requeues them and restarts the group.
            failed: cf.Future = cf.Future()
            failed.set_exception(exc)
            return failed

    def live_slots(self) -> int:
        """Slots that can still take batches: executors that lose workers for good (Ray
        slots that cannot restart) say how many remain."""
        live = getattr(self._executor, "live_slots", None)
        return live() if live is not None else self.slots

    @property
    def capacity(self) -> int:
        """Batches in flight at most: two per slot, so a worker never waits for the next."""
        return 2 * self.live_slots()

    def restart(self) -> None:
        """A worker died or hung: the group's processes are killed and started again (the
        batches they held are lost; the scheduler resubmits them)."""
        self._stop(hard=True)
        self.start()

    def stand_down(self, exc: BaseException) -> None:
        """The group may not go on this run (an opportunistic one that failed)."""
        self._stop(hard=True)

    def shutdown(self, hard: bool) -> None:
        """The end of the run; `hard`: kill what still runs instead of letting it finish."""
        self._stop(hard)

    def _stop(self, hard: bool) -> None:
        executor, self._executor = self._executor, None
        if isinstance(executor, cf.ProcessPoolExecutor):
            stop_pool(executor, hard)
        elif executor is not None:
            executor.shutdown(wait=False)


class InlineExecutor(cf.Executor):
    """workers=0: the worker's code in this process (debugging, library use, tiny jobs)."""

    def __init__(self, spec: EngineSpec, threads: int) -> None:
        load_engine(spec, threads)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future:
        future: cf.Future = cf.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:
            future.set_exception(exc)
        return future


def process_pool(
    spec: EngineSpec, processes: int, threads: int, context: multiprocessing.context.BaseContext | None = None
) -> cf.ProcessPoolExecutor:
    """Worker processes that each build `spec`'s engine once with `threads` threads.

    `context` None: spawn, a clean interpreter per worker (no inherited OpenMP/ONNX/CUDA
    state); CPU workers are forked from a server with torch and the engine loaded
    (workerstart.py). The weights are memory-mapped, so workers share one page-cache copy."""
    return cf.ProcessPoolExecutor(
        max_workers=processes,
        mp_context=context or multiprocessing.get_context("spawn"),
        initializer=init_process,
        initargs=(spec, threads),
    )


class LocalWorkers(WorkerGroup):
    """This machine's CPU workers as the plan sizes them (plan.workers 0: in this process)."""

    def __init__(self, spec: EngineSpec, plan: Plan, name: str = "cpu") -> None:
        super().__init__(name, max(1, plan.workers))
        self.spec = spec
        self.plan = plan

    @property
    def killable(self) -> bool:  # type: ignore[override]
        return self.plan.workers > 0  # the inline worker is the run's own process

    def _new_executor(self) -> cf.Executor:
        if self.plan.workers <= 0:
            return InlineExecutor(self.spec, self.plan.threads_per_worker)
        pool = process_pool(self.spec, self.plan.workers, self.plan.threads_per_worker, worker_context(self.spec))
        threading.Thread(target=_start_a_worker, args=(pool,), name="first-worker", daemon=True).start()
        return pool

    def describe(self) -> str:
        if self.plan.workers <= 0:
            return f"{self.name}: in this process, {self.plan.threads_per_worker} thread(s)"
        return f"{self.name}: {self.plan.workers} process(es) x {self.plan.threads_per_worker} thread(s)"


def _start_a_worker(pool: cf.ProcessPoolExecutor) -> None:
    """Have the pool start its first worker now (a task that only returns the worker's pid),
    not when the first batch is cut: its fork and engine build then overlap the front end's
    first file instead of following it (docs/benchmarks.md, the serial start, cut). A pool
    starts a worker per submission while none is idle, so the first batch goes to this one,
    and later ones start as before. In a thread of its own: a submission waits for the fork
    server's imports. A pool stopped or broken meanwhile is the batches' futures' business."""
    with contextlib.suppress(Exception), quiet_start():
        pool.submit(os.getpid)


class GpuWorker(WorkerGroup):
    """One worker process on one local GPU, opportunistic: any failure (CUDA OOM above all)
    stands it down and keeps the run off that GPU for a while (gpu.py)."""

    opportunistic = True

    def __init__(self, gpu: GpuScheduler, index: int, spec: EngineSpec, threads: int) -> None:
        super().__init__(f"gpu{index}", 1, takes_largest=True)
        self.gpu = gpu
        self.index = index
        self.spec = spec
        self.threads = threads

    def _new_executor(self) -> cf.Executor:
        return process_pool(self.spec, 1, self.threads)

    def describe(self) -> str:
        return f"{self.name}: 1 process on {self.spec.device}"

    def stand_down(self, exc: BaseException) -> None:
        self._stop(hard=True)
        self.gpu.out_of_memory(self.index)
        what = "out of memory" if is_cuda_oom(exc) else describe_error(exc)
        log.warning("GPU worker on GPU %d stopped (%s); its batches go back to the queue", self.index, what)

    def shutdown(self, hard: bool) -> None:
        self._stop(hard)
        self.gpu.stopped(self.index)  # its memory is free again


class GpuWorkers:
    """Local GPU workers joining a run: one GpuWorker per GPU that gpu.py finds room on, as
    often as asked (a GPU shared with ollama frees up during a run). `device(index)`: the
    device string a worker on GPU `index` gets (a seam for tests without CUDA)."""

    def __init__(self, gpu: GpuScheduler | None, spec: EngineSpec, threads: int, device: Callable[[int], str]) -> None:
        self.gpu = gpu
        self.spec = spec
        self.threads = threads
        self.device = device

    @property
    def enabled(self) -> bool:
        return self.gpu is not None and self.gpu.enabled

    def join(self) -> list[GpuWorker]:
        """Workers started on the GPUs that have room now (none while no GPU does)."""
        if self.gpu is None or not self.gpu.enabled:
            return []
        joined = []
        for info in self.gpu.usable_gpus():
            device = self.device(info.index)
            worker = GpuWorker(self.gpu, info.index, dataclasses.replace(self.spec, device=device), self.threads)
            worker.start()
            self.gpu.started(info.index)
            log.warning("GPU worker started on %s (%s, %.1f GB free)", device, info.name, info.free_bytes / 1e9)
            joined.append(worker)
        return joined
