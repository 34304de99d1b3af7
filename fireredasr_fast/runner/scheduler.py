"""The folder runner: many files through a pool of worker processes, safely.

Flow: a producer thread decodes and segments upcoming files into a queue bounded in audio
seconds (the preload queue); the main thread pools the segments of all queued files, cuts
them into length-sorted batches, and keeps the worker processes fed; each worker builds
its engine once from an EngineSpec and recognises batches; when the last segment of a
file comes back, the file's cues and outputs are written atomically and journaled.

Failures stay local: a bad file fails alone; a crashed worker is replaced and its batches
retried a bounded number of times; Ctrl-C / SIGTERM stop taking work, finish or drop
in-flight batches, and leave only complete files behind.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import dataclasses
import logging
import multiprocessing
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fireredasr_fast.batching import Batch, SegmentJob, make_batches
from fireredasr_fast.engines import EngineSpec
from fireredasr_fast.inputs import InputFile
from fireredasr_fast.results import Hypothesis
from fireredasr_fast.transcribe import (
    PreparedFile,
    TranscribeOptions,
    assemble_result,
    log_track_choice,
)
from fireredasr_fast.writers import get_writer, output_path

from .frontend import AudioBudget, Frontend, frontend_options
from .gpu import GpuScheduler, is_cuda_oom
from .journal import FileRecord, Journal, fingerprint, format_table, relative_key, write_report
from .plan import Plan
from .worker import WorkerLost, describe_error, init_process, load_engine, os_error, run_batch

log = logging.getLogger("fireredasr_fast")

MAX_BATCH_ATTEMPTS = 3


@dataclass
class RunOptions:
    output_dir: Path
    formats: tuple[str, ...] = ("srt", "vtt", "txt", "json")
    transcribe: TranscribeOptions = TranscribeOptions()
    overwrite: bool = False
    preload_seconds: float = 3600.0  # audio decoded ahead of the workers
    frontend_processes: int | None = None  # VAD processes (None: from the plan, frontend.py)
    progress: bool = True
    settings: dict[str, Any] = field(default_factory=dict)  # what the fingerprint covers


@dataclass
class RunSummary:
    records: list[FileRecord]
    wall: float
    interrupted: bool
    worker_stats: dict[str, Any]

    @property
    def failed(self) -> list[FileRecord]:
        return [r for r in self.records if r.status in ("failed", "interrupted")]

    def to_dict(self) -> dict[str, Any]:
        done = [r for r in self.records if r.status == "done"]
        audio = sum(r.duration for r in done)
        return {
            "files_done": len(done),
            "files_skipped": sum(r.status == "skipped" for r in self.records),
            "files_failed": len(self.failed),
            "audio_hours": round(audio / 3600, 4),
            "wall_seconds": round(self.wall, 2),
            "realtime_factor": round(self.wall / audio, 4) if audio else 0.0,
            "interrupted": self.interrupted,
            "workers": self.worker_stats,
        }


class _InlineExecutor(cf.Executor):
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


# ---------------------------------------------------------------- parent side


@dataclass
class _FileState:
    index: int
    item: InputFile
    fp: str
    started: float
    prepared: PreparedFile | None = None
    hypotheses: list[Hypothesis | None] = field(default_factory=list)
    remaining: int = 0
    asr_seconds: float = 0.0


class _StopFlag:
    """First Ctrl-C/SIGTERM: graceful stop. Second Ctrl-C: immediate stop."""

    def __init__(self) -> None:
        self.graceful = threading.Event()
        self.hard = threading.Event()

    def install(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum: int, frame: Any) -> None:
            if self.graceful.is_set() and signum == signal.SIGINT:
                self.hard.set()
                print("\nsecond interrupt: stopping now", file=sys.stderr, flush=True)
            else:
                self.graceful.set()
                print(
                    "\ninterrupted: finishing batches in flight, then stopping (Ctrl-C again to stop now)",
                    file=sys.stderr,
                    flush=True,
                )

        for sig in previous:
            signal.signal(sig, handler)

        def restore() -> None:
            for sig, old in previous.items():
                signal.signal(sig, old)

        return restore


@dataclass
class WorkerGroup:
    """A kind of worker the runner keeps fed, started by its own executor factory.

    The default is one group of local CPU processes; a cluster run passes its own groups
    (see cluster.py). Executors report a lost worker as WorkerLost after replacing it."""

    name: str
    new_executor: Callable[[], cf.Executor]
    slots: int  # batches that can run at once
    takes_largest: bool = False  # GPU workers take the largest batches, CPU the smallest


def batch_limit(batch_seconds: float, pooled: float, producer_done: bool, workers: int) -> float:
    """Padded seconds per batch for the segments pooled now.

    The last of the work (nothing more to come) goes out in smaller batches, at least two
    per worker, so no worker idles while another finishes one big batch. A single worker has
    no one to wait for: it keeps full batches, whose beam searches read the decoder's weights
    once per step for more segments (AED-L, 2 cores: splitting the tail in two cost a second
    search over the longest segments).
    """
    if producer_done and workers > 1:
        return max(1.0, min(batch_seconds, pooled / (2 * workers)))
    return batch_seconds


@dataclass(eq=False)
class _Pool:
    """Worker processes that share a queue position: a group's executor, or one GPU worker."""

    name: str
    executor: cf.Executor
    slots: int
    takes_largest: bool
    new_executor: Callable[[], cf.Executor] | None = None  # how to replace a broken pool
    gpu_index: int | None = None

    @property
    def capacity(self) -> int:
        """Batches in flight at most: two per slot, so a worker never waits for the next.
        Executors that lose workers for good (Ray slots that cannot restart) say how many
        remain through `live_slots`."""
        live = getattr(self.executor, "live_slots", None)
        return 2 * (live() if live is not None else self.slots)

    def busy(self, in_flight: dict) -> int:
        return sum(1 for _, _, pool in in_flight.values() if pool is self)


class Runner:
    def __init__(
        self,
        spec: EngineSpec,
        plan: Plan,
        options: RunOptions,
        gpu: GpuScheduler | None = None,
        gpu_device: Callable[[int], str] = lambda index: f"cuda:{index}",
        gpu_spec: EngineSpec | None = None,
        groups: list[WorkerGroup] | None = None,
    ) -> None:
        self.spec = spec
        # GPU workers may run another precision (fp16/bf16) than the CPU workers.
        self.gpu_spec = gpu_spec or spec
        self.plan = plan
        self.options = options
        self.gpu = gpu
        # Which device string a GPU worker on GPU `index` gets (a seam for tests without CUDA).
        self.gpu_device = gpu_device
        self.output_dir = options.output_dir
        # Who runs the batches: local CPU processes unless the caller brings its own (a cluster).
        self.groups = groups or [WorkerGroup("cpu", self._new_executor, max(1, plan.workers))]
        self.stop = _StopFlag()
        self.worker_compute: dict[tuple[str, Any], float] = {}
        self.worker_wait: dict[tuple[str, Any], float] = {}
        self.batches_by_pool: dict[str, int] = {}
        self.batches_retried = 0  # sent back to the queue after a worker was lost

    # -- public

    def run(self, inputs: list[InputFile]) -> RunSummary:
        t_start = time.perf_counter()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        journal = Journal(self.output_dir)
        records: dict[int, FileRecord] = {}
        todo: list[_FileState] = []
        for index, item in enumerate(inputs):
            key = relative_key(item.relative)
            try:
                fp = fingerprint(self.options.settings, item.path)
            except OSError as exc:
                records[index] = FileRecord(key, str(item.path), "failed", error=os_error(exc))
                log.error("%s: %s", item.path, records[index].error)
                continue
            if not self.options.overwrite and journal.is_complete(key, fp, self.output_dir):
                old = journal.records[key]
                records[index] = FileRecord(key, str(item.path), "skipped", fp, old.duration, outputs=old.outputs)
                continue
            todo.append(_FileState(index, item, fp, 0.0))

        restore_signals = self.stop.install()
        try:
            if todo:
                self._process(todo, records, journal)
        finally:
            restore_signals()
        ordered = [records[i] for i in sorted(records)]
        wall = time.perf_counter() - t_start
        summary = RunSummary(ordered, wall, self.stop.graceful.is_set(), self._worker_summary(wall))
        try:
            journal.save()
            write_report(self.output_dir, ordered, {**summary.to_dict(), "plan": self.plan.to_dict()})
        except OSError as exc:
            log.error("%s: cannot write the run report: %s", self.output_dir, os_error(exc))
        return summary

    # -- the scheduling loop

    def _process(self, todo: list[_FileState], records: dict[int, FileRecord], journal: Journal) -> None:
        prepared_queue: queue.Queue = queue.Queue()
        budget = AudioBudget(self.options.preload_seconds)
        # Decoding and the VAD (frontend.py): messages (index, PreparedFile | exception), then None.
        fast_consumers = (self.gpu is not None and self.gpu.enabled) or any(g.name != "cpu" for g in self.groups)
        frontend_setup = frontend_options(self.plan, fast_consumers, self.options.frontend_processes)
        frontend = Frontend(todo, self.options.transcribe, budget, frontend_setup, self.stop.graceful)
        frontend.start(prepared_queue)

        states = {state.index: state for state in todo}
        pending: list[SegmentJob] = []
        ready: collections.deque[Batch] = collections.deque()  # longest batches first
        in_flight: dict[cf.Future, tuple[Batch, int, _Pool]] = {}
        producer_done = False
        no_workers = False
        pools: list[_Pool] = []
        if self.gpu is None or self.gpu.cpu_workers_allowed:
            for group in self.groups:
                pool = _Pool(group.name, group.new_executor(), group.slots, group.takes_largest, group.new_executor)
                pools.append(pool)
            pools.sort(key=lambda pool: not pool.takes_largest)  # largest-batch takers choose first
        bar = _progress(self.options.progress)

        def fail(state: _FileState, message: str, status: str = "failed") -> None:
            self._record_failure(state, message, status, records, journal, budget)

        def submit(pool: _Pool, batch: Batch, attempt: int) -> None:
            in_flight[pool.executor.submit(run_batch, batch.jobs)] = (batch, attempt, pool)

        attempts: dict[int, int] = {}  # id(batch) -> attempt number of its next submission

        def requeue(batch: Batch, attempt: int, reason: str) -> None:
            self.batches_retried += 1
            if attempt >= MAX_BATCH_ATTEMPTS:
                for job in batch.jobs:
                    fail(states[job.file_index], f"{reason} {attempt} times while recognising this file")
            else:
                ready.appendleft(batch)
                attempts[id(batch)] = attempt + 1

        try:
            while True:
                if self.stop.hard.is_set():
                    break
                # 1. Take newly prepared files (block briefly only when nothing else can progress).
                block = not in_flight and not pending and not ready and not producer_done
                try:
                    while True:
                        message = prepared_queue.get(timeout=0.05 if block else 0)
                        block = False
                        if message is None:
                            producer_done = True
                            break
                        index, result = message
                        state = states[index]
                        if isinstance(result, BaseException):
                            fail(state, describe_error(result))
                            continue
                        self._accept(state, result, pending, records, journal, bar, budget)
                except queue.Empty:
                    pass

                graceful = self.stop.graceful.is_set()
                if not graceful:
                    self._start_gpu_workers(pools)
                capacity = sum(pool.capacity for pool in pools)
                # 2. Cut batches when the ready queue runs low: pooling segments of several
                #    files first gives length-sorted batches with little padding.
                if pending and len(ready) < capacity and not graceful:
                    pooled = sum(job.seconds for job in pending)
                    enough = pooled >= self.options.transcribe.batch_seconds * 2
                    if enough or producer_done or (not ready and len(in_flight) < max(1, self.plan.workers)):
                        workers = capacity // 2  # live worker slots, CPU and GPU (two batches each)
                        limit = batch_limit(self.options.transcribe.batch_seconds, pooled, producer_done, workers)
                        ready.extend(make_batches(pending, limit, self.options.transcribe.max_batch_size))
                        pending = []
                # Only a few batches in flight per worker, so an interrupt has little to wait
                # for. GPU workers take the largest batches, CPU workers the smallest.
                for pool in pools:
                    while ready and pool.busy(in_flight) < pool.capacity and not graceful:
                        batch = ready.popleft() if pool.takes_largest else ready.pop()
                        submit(pool, batch, attempts.pop(id(batch), 1))

                if not in_flight and (graceful or (producer_done and not pending and not ready)):
                    break

                # 3. Collect finished batches.
                if not in_flight:
                    if capacity == 0 and (self.gpu is None or not self.gpu.enabled):
                        no_workers = True  # every worker failed for good: nothing can run
                        break
                    time.sleep(0.05)  # GPU-only mode waiting for a GPU to free up
                    continue
                done, _ = cf.wait(list(in_flight), timeout=0.1, return_when=cf.FIRST_COMPLETED)
                broken: set[str] = set()
                for future in done:
                    batch, attempt, pool = in_flight.pop(future)
                    try:
                        hyps, stats = future.result()
                    except Exception as exc:
                        if pool.gpu_index is not None:
                            # GPUs are opportunistic: any failure there (CUDA OOM above all)
                            # sends the batch back to the queue and the GPU into back-off.
                            self._stop_gpu_worker(pool, pools, exc)
                            requeue(batch, attempt, "the GPU worker failed")
                        elif isinstance(exc, WorkerLost):
                            # The executor already replaced the worker; an attempt that never
                            # started does not count against the batch.
                            requeue(batch, attempt if exc.counts_as_attempt else attempt - 1, "a worker was lost")
                        elif isinstance(exc, BrokenProcessPool):
                            broken.add(pool.name)
                            requeue(batch, attempt, "a worker process died")
                        else:
                            for job in batch.jobs:
                                fail(states[job.file_index], f"recognition failed: {describe_error(exc)}")
                        continue
                    self._record_worker(stats, pool.name)
                    share = stats["compute"] / max(batch.audio_seconds, 1e-9)
                    for job, hyp in zip(batch.jobs, hyps, strict=True):
                        state = states[job.file_index]
                        if state.index in records:
                            continue
                        state.hypotheses[job.segment_index] = hyp
                        state.asr_seconds += share * job.seconds
                        state.remaining -= 1
                        if state.remaining == 0:
                            self._finish(state, records, journal, bar, budget)
                for pool in pools:
                    if pool.name in broken:
                        # A worker died (OOM killer, segfault): the whole pool is unusable and
                        # every batch it had in flight is lost. Replace it; resubmit them.
                        for future, (batch, attempt, owner) in list(in_flight.items()):
                            if owner is pool:
                                del in_flight[future]
                                requeue(batch, attempt, "a worker process died")
                        _shutdown(pool.executor, hard=True)
                        assert pool.new_executor is not None
                        pool.executor = pool.new_executor()
        finally:
            hard = self.stop.hard.is_set()
            frontend.close(hard)
            for pool in pools:
                _shutdown(pool.executor, hard)
                if pool.gpu_index is not None and self.gpu is not None:
                    self.gpu.stopped(pool.gpu_index)
            if bar is not None:
                bar.close()
            for state in states.values():
                if state.index not in records:
                    status = "interrupted" if self.stop.graceful.is_set() else "failed"
                    if status == "interrupted":
                        fail(state, "interrupted before completion", status)
                    else:
                        fail(state, "no worker could run it" if no_workers else "not processed", status)
            journal.save()

    def _start_gpu_workers(self, pools: list[_Pool]) -> None:
        if self.gpu is None or not self.gpu.enabled:
            return
        for info in self.gpu.usable_gpus():
            device = self.gpu_device(info.index)
            executor = cf.ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=init_process,
                initargs=(dataclasses.replace(self.gpu_spec, device=device), self.plan.threads_per_worker),
            )
            self.gpu.started(info.index)
            pools.insert(0, _Pool(f"gpu{info.index}", executor, 1, takes_largest=True, gpu_index=info.index))
            log.warning("GPU worker started on %s (%s, %.1f GB free)", device, info.name, info.free_bytes / 1e9)

    def _stop_gpu_worker(self, pool: _Pool, pools: list[_Pool], exc: BaseException) -> None:
        if pool not in pools:
            return  # already stopped by an earlier batch of the same worker
        pools.remove(pool)
        _shutdown(pool.executor, hard=True)
        assert self.gpu is not None and pool.gpu_index is not None
        self.gpu.out_of_memory(pool.gpu_index)
        what = "out of memory" if is_cuda_oom(exc) else describe_error(exc)
        log.warning("GPU worker on GPU %d stopped (%s); its batches go back to the queue", pool.gpu_index, what)

    def _accept(self, state, prepared, pending, records, journal, bar, budget) -> None:
        log_track_choice(prepared, str(state.item.path))
        state.prepared = prepared
        state.hypotheses = [None] * len(prepared.segments)
        state.remaining = len(prepared.segments)
        if bar is not None:
            bar.total = (bar.total or 0) + round(prepared.duration)
            bar.refresh()
        if state.remaining == 0:  # silent file: valid, empty outputs
            self._finish(state, records, journal, bar, budget)
        else:
            pending.extend(prepared.jobs(state.index))

    def _record_failure(
        self, state: _FileState, message: str, status: str, records, journal: Journal, budget: AudioBudget
    ) -> None:
        """A file ends failed or interrupted: journal it, free its audio (first outcome wins)."""
        if state.index in records:
            return
        duration = state.prepared.duration if state.prepared else 0.0
        records[state.index] = FileRecord(
            relative_key(state.item.relative), str(state.item.path), status, state.fp, duration, error=message
        )
        if status == "failed":
            log.error("%s: %s", state.item.path, message)
        journal.update(records[state.index])
        budget.release(duration)
        state.prepared = None

    def _finish(self, state: _FileState, records, journal: Journal, bar, budget: AudioBudget) -> None:
        prepared = state.prepared
        assert prepared is not None
        prepared.timings["asr"] = state.asr_seconds
        key = relative_key(state.item.relative)
        info = {"engine": self.options.settings.get("engine", {}), "options": self.options.settings}
        result = assemble_result(
            prepared, [h for h in state.hypotheses if h is not None], self.options.transcribe, info
        )
        result.source = str(state.item.path)
        t0 = time.perf_counter()
        outputs = []
        try:
            for fmt in self.options.formats:
                path = output_path(self.output_dir, state.item.output_name, fmt)
                get_writer(fmt).write(result, path)
                outputs.append(path.relative_to(self.output_dir).as_posix())
        except OSError as exc:
            self._record_failure(state, f"cannot write outputs: {os_error(exc)}", "failed", records, journal, budget)
            return
        prepared.timings["write"] = time.perf_counter() - t0
        record = FileRecord(
            key,
            str(state.item.path),
            "done",
            state.fp,
            prepared.duration,
            wall=time.perf_counter() - state.started,
            outputs=outputs,
            timings={k: round(v, 4) for k, v in prepared.timings.items()},
            audio_track=prepared.track.to_dict() if prepared.track else {},
        )
        records[state.index] = record
        journal.update(record)
        log.info("%s: done, %.1f s of audio, RTF %.3f", state.item.path, record.duration, record.realtime_factor)
        if bar is not None:
            bar.update(round(prepared.duration))
        budget.release(prepared.duration)
        state.prepared = None  # free the samples now

    # -- helpers

    def _new_executor(self) -> cf.Executor:
        if self.plan.workers <= 0:
            return _InlineExecutor(self.spec, self.plan.threads_per_worker)
        # spawn: a clean interpreter per worker (no inherited OpenMP/ONNX thread state);
        # the weights are memory-mapped, so workers share one page-cache copy.
        return cf.ProcessPoolExecutor(
            max_workers=self.plan.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=init_process,
            initargs=(self.spec, self.plan.threads_per_worker),
        )

    def _record_worker(self, stats: dict[str, float], pool: str) -> None:
        # Keyed by pool too: Ray actors on different nodes may share a pid.
        pid = (pool, stats["pid"])
        self.batches_by_pool[pool] = self.batches_by_pool.get(pool, 0) + 1
        self.worker_compute[pid] = self.worker_compute.get(pid, 0.0) + stats["compute"]
        self.worker_wait[pid] = self.worker_wait.get(pid, 0.0) + max(0.0, stats["wait"])

    def _worker_summary(self, wall: float) -> dict[str, Any]:
        compute = sum(self.worker_compute.values())
        wait = sum(self.worker_wait.values())
        slots = sum(group.slots for group in self.groups)
        slots += sum(1 for name in self.batches_by_pool if name.startswith("gpu"))  # local GPU workers
        return {
            "processes_used": len(self.worker_compute),
            "compute_seconds": round(compute, 2),
            # Idle gaps between a worker's batches: time it starved for input.
            "wait_seconds": round(wait, 2),
            "wait_share": round(wait / (wait + compute), 4) if compute + wait > 0 else 0.0,
            # Recognition time over workers x the whole run (start-up and the tail included).
            "busy_share": round(compute / (slots * wall), 4) if wall > 0 else 0.0,
            "batches": dict(self.batches_by_pool),
            "batches_retried": self.batches_retried,
        }


def _shutdown(executor: cf.Executor, hard: bool) -> None:
    if isinstance(executor, cf.ProcessPoolExecutor):
        if hard:
            for process in list(getattr(executor, "_processes", {}).values()):
                process.terminate()
        executor.shutdown(wait=True, cancel_futures=True)
    else:
        executor.shutdown(wait=False)


def _progress(enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=0, unit="s", unit_scale=False, desc="audio", dynamic_ncols=True)


def print_summary(summary: RunSummary) -> None:
    data = summary.to_dict()
    print(format_table(summary.records))
    print(
        f"\n{data['files_done']} done, {data['files_skipped']} skipped, {data['files_failed']} failed; "
        f"{data['audio_hours'] * 3600:.1f} s of audio in {data['wall_seconds']:.1f} s wall "
        f"(realtime factor {data['realtime_factor']:.3f})" + ("; interrupted" if summary.interrupted else "")
    )
