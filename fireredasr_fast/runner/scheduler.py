"""The folder runner: many files through a pool of worker processes, safely.

Flow: the front end (frontend.py) decodes and segments upcoming files into a queue bounded
in audio seconds (the preload queue); the main thread (_Schedule, one per run) cuts each queued
file's segments into length-sorted batches of its own (a file's text never depends on the
rest of the run), and keeps the worker processes fed; each worker builds its engine once
from an EngineSpec and recognises batches;
when the last segment of a file comes back, the file's cues and outputs are written
atomically and journaled.

Failures stay local: a bad file fails alone; a crashed worker is replaced and its batches
retried a bounded number of times, and so is a worker whose batch runs past its deadline
(a hung or stopped process: BatchDeadline); Ctrl-C / SIGTERM / SIGHUP stop taking work,
give the batches in flight a few seconds, then kill them, and leave only complete files
behind, the others "interrupted". No child process outlives the run (lifeline.py).
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures as cf
import contextlib
import dataclasses
import logging
import math
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fireredasr_fast.batching import Batch, SegmentJob, make_batches
from fireredasr_fast.engines import EngineSpec
from fireredasr_fast.errors import FireRedFastError, check_number
from fireredasr_fast.flags import PARALLELISM, section
from fireredasr_fast.fsutil import display_name, file_identity
from fireredasr_fast.glossary import Glossary, GlossaryError
from fireredasr_fast.guard import review_counts
from fireredasr_fast.inputs import InputFile, output_clashes
from fireredasr_fast.results import SAMPLE_RATE, Hypothesis
from fireredasr_fast.transcribe import (
    FilePiece,
    PreparedFile,
    TranscribeOptions,
    assemble_result,
    log_track_choice,
    segment_range,
)
from fireredasr_fast.vad import SpeechSegment
from fireredasr_fast.writers import write_result

from .frontend import AudioBudget, Frontend, frontend_options
from .gpu import GpuScheduler
from .journal import (
    JOURNAL_NAME,
    REPORT_NAME,
    FileRecord,
    Journal,
    format_table,
    relative_key,
    write_report,
)
from .lock import LOCK_NAME, RunRefused, output_folder_lock
from .plan import Plan
from .progress import Progress
from .settings import FileFingerprints, RunSettings
from .store import FileStore, Recognition, normalised, segment_key
from .worker import WorkerLost, describe_error, os_error
from .workers import GpuWorkers, LocalWorkers, WorkerGroup

log = logging.getLogger("fireredasr_fast")

MAX_BATCH_ATTEMPTS = 3
# After the first Ctrl-C / SIGTERM / SIGHUP, the batches in flight get this long to finish
# (their files may then complete); whatever still runs is killed.
STOP_GRACE_SECONDS = 3.0
DEADLINE_ENV = "FIREREDASR_FAST_BATCH_DEADLINE"


@dataclass(frozen=True)
class BatchDeadline:
    """How long a batch may run before its worker counts as hung (SIGSTOP, a deadlock, a
    swapping machine) and is killed, the batch retried elsewhere.

    A batch's clock starts when a worker can have taken it (batches go out in submission
    order). It gets `factor` times what its audio takes at the slowest speed measured on its
    pool so far (worker seconds per audio second), at least `floor`; a pool's first batch, with
    no speed known and the model still loading, gets `first`. Generous on purpose: a false
    alarm costs a retry, a missed hang the whole night.

    The environment variable FIREREDASR_FAST_BATCH_DEADLINE ("floor=5,factor=3,first=60")
    overrides them (the fault tests keep deadlines short with it)."""

    floor: float = 300.0
    factor: float = 10.0
    first: float = 1800.0

    def __post_init__(self) -> None:
        for name in ("floor", "factor", "first"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"batch deadline {name} must be a positive number of seconds, not {value}")

    @classmethod
    def from_env(cls) -> BatchDeadline:
        text = os.environ.get(DEADLINE_ENV, "").strip()
        if not text:
            return cls()
        try:
            values = {key.strip(): float(value) for key, value in (item.split("=") for item in text.split(","))}
            return dataclasses.replace(cls(), **values)
        except (ValueError, TypeError) as exc:
            log.warning("%s=%r ignored (%s); expected e.g. floor=5,factor=3,first=60", DEADLINE_ENV, text, exc)
            return cls()

    def allowance(self, audio_seconds: float, speed: float | None) -> float:
        """Seconds a batch of `audio_seconds` may run; `speed` None: its pool's first batch."""
        if speed is None:
            return max(self.floor, self.first)
        return max(self.floor, self.factor * audio_seconds * speed)


@dataclass
class RunOptions:
    output_dir: Path
    formats: tuple[str, ...] = ("srt", "vtt", "txt", "json")
    transcribe: TranscribeOptions = TranscribeOptions()
    overwrite: bool = False
    preload_seconds: float = 3600.0  # audio decoded ahead of the workers
    frontend_processes: int | None = None  # VAD processes (None: from the plan, frontend.py)
    progress: bool = True
    deadline: BatchDeadline = field(default_factory=BatchDeadline.from_env)

    def __post_init__(self) -> None:
        check_number("preload_seconds", self.preload_seconds, 0.0, above=True)
        if self.frontend_processes is not None:
            check_number("frontend_processes", self.frontend_processes, 0, integer=True)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """--preload-seconds and --frontend-processes; the output folder, formats, --overwrite
        and --no-progress are the CLI's own flags (cli.py)."""
        p = section(parser, PARALLELISM)
        p.add_argument(
            "--preload-seconds",
            type=float,
            default=cls.preload_seconds,
            help="seconds of audio decoded ahead of the workers (default: %(default)s)",
        )
        p.add_argument(
            "--frontend-processes",
            type=int,
            default=cls.frontend_processes,
            help="processes running the VAD, files decoded at once (default: one per core; beside CPU "
            "workers used only while recognition waits for audio; 0: one thread; docs/tuning.md)",
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace, **values: Any) -> RunOptions:
        """The run options from the command line; `values`: the fields the CLI works out itself
        (formats, transcribe, progress)."""
        return cls(
            output_dir=Path(args.output_dir),
            overwrite=args.overwrite,
            preload_seconds=args.preload_seconds,
            frontend_processes=args.frontend_processes,
            **values,
        )


@dataclass
class RunSummary:
    records: list[FileRecord]
    wall: float
    interrupted: bool
    worker_stats: dict[str, Any]
    # Segments recognised by the workers, segments taken from the stores (store.py), files
    # whose outputs were rewritten from their stored recognition.
    recognition: dict[str, int] = field(default_factory=dict)

    @property
    def failed(self) -> list[FileRecord]:
        return [r for r in self.records if r.status == "failed"]

    @property
    def unfinished(self) -> list[FileRecord]:
        """Files a stop signal left undone (status "interrupted"): a rerun does them."""
        return [r for r in self.records if r.status == "interrupted"]

    def to_dict(self) -> dict[str, Any]:
        done = [r for r in self.records if r.status == "done"]
        audio = sum(r.duration for r in done)
        return {
            "files_done": len(done),
            "files_skipped": sum(r.status == "skipped" for r in self.records),
            "files_failed": len(self.failed),
            "files_interrupted": len(self.unfinished),
            "audio_hours": round(audio / 3600, 4),
            "wall_seconds": round(self.wall, 2),
            "realtime_factor": round(self.wall / audio, 4) if audio else 0.0,
            "interrupted": self.interrupted,
            **self.recognition,
            "workers": self.worker_stats,
        }


# ---------------------------------------------------------------- parent side


@dataclass
class _FileState:
    index: int
    item: InputFile
    fps: FileFingerprints
    started: float
    store: FileStore | None = None  # None: recognition not kept (it could not be written)
    prepared: PreparedFile | None = None  # once the whole file is decoded and segmented
    # Its segments known so far: stretches sent early (FilePiece), then the whole file's.
    segments: list[SpeechSegment] = field(default_factory=list)
    stored: dict[tuple[int, int, int], Hypothesis] | None = None  # the partial store's, once read
    hypotheses: list[Hypothesis | None] = field(default_factory=list)
    remaining: int = 0  # segments in a batch or waiting for one
    early_seconds: float = 0.0  # audio of its segments recognised before its file was prepared
    reused: int = 0  # segments taken from the partial store
    asr_seconds: float = 0.0
    # When its processing began: the start of its first batch on a worker (or, without speech,
    # its segments known). Its realtime factor counts from here, not from its time in the queue
    # or a worker's start-up.
    processing_since: float | None = None
    # Its glossary (--hotwords and its folder's own), None when it has no terms.
    hotwords: Glossary | None = None


class _StopFlag:
    """The first Ctrl-C / SIGTERM / SIGHUP: stop (STOP_GRACE_SECONDS for the batches in flight,
    then kill them). A second one: stop now."""

    SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))

    def __init__(self) -> None:
        self.graceful = threading.Event()
        self.hard = threading.Event()
        self.since = 0.0  # time.monotonic() of the first stop signal

    def install(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {sig: signal.getsignal(sig) for sig in self.SIGNALS}
        for sig in previous:
            signal.signal(sig, self._handle)

        def restore() -> None:
            for sig, old in previous.items():
                signal.signal(sig, old)

        return restore

    def _handle(self, signum: int, frame: Any) -> None:
        if self.graceful.is_set():
            self.hard.set()
            _say("\nsecond interrupt: stopping now")
            return
        self.since = time.monotonic()
        self.graceful.set()
        _say(f"\ninterrupted: stopping; unfinished files are marked interrupted ({signal.Signals(signum).name})")

    def grace_over(self) -> bool:
        return self.hard.is_set() or (self.graceful.is_set() and time.monotonic() - self.since > STOP_GRACE_SECONDS)


def _say(text: str) -> None:
    """A line on stderr from a signal handler: never raises (a hang-up may have closed the
    terminal), or the exception would surface wherever the main thread happened to be."""
    with contextlib.suppress(OSError, ValueError):
        print(text, file=sys.stderr, flush=True)


class ModelRefused(RunRefused):
    """The model's check, run beside the run's start (Runner's `model_check`), failed: the run
    stopped before it wrote anything or started a worker."""


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
        model_check: cf.Future | None = None,
        start_lines: Sequence[str] = (),
    ) -> None:
        self.spec = spec
        # The model's check still running in the background (cli.py): the front end starts
        # beside it; outputs and workers wait for it (_model_checked), and so do `start_lines`
        # (the plan, the GPUs), printed once it passed: a refused model is one line.
        self.model_check = model_check
        self.start_lines = start_lines
        # GPU workers may run another precision (fp16/bf16) than the CPU workers; by default
        # what the command line gives them without --precision (EngineSpec.for_gpu).
        self.gpu_spec = gpu_spec or spec.for_gpu()
        self.plan = plan
        self.options = options
        self.gpu = gpu
        # GPU workers join the run when a GPU has room (workers.py); `gpu_device`: the device
        # string a GPU worker on GPU `index` gets (a seam for tests without CUDA).
        self.gpu_workers = GpuWorkers(gpu, self.gpu_spec, plan.threads_per_worker, gpu_device)
        self.output_dir = options.output_dir
        # Who runs the batches: local CPU processes unless the caller brings its own (a cluster).
        self.groups: list[WorkerGroup] = groups or [LocalWorkers(spec, plan)]
        self.stop = _StopFlag()
        self.worker_compute: dict[tuple[str, Any], float] = {}
        self.worker_wait: dict[tuple[str, Any], float] = {}
        self.batches_by_pool: dict[str, int] = {}
        self.batches_retried = 0  # sent back to the queue after a worker was lost
        self.batches_timed_out = 0  # ran past their deadline: the worker was killed
        # What the outputs depend on, split into recognition and rendering (settings.py).
        self.settings = RunSettings.build(spec, options.transcribe, options.formats, self.gpu_spec)
        # segments_streamed: of a file's stretches recognised while the rest of it was still
        # in the front end (frontend.py).
        self.counts = {"segments_recognised": 0, "segments_reused": 0, "segments_streamed": 0, "files_rerendered": 0}

    # -- public

    def run(self, inputs: list[InputFile]) -> RunSummary:
        """Transcribe `inputs`. RunRefused before any work when two of them would write the same
        output, or another run holds the output folder's lock (one run per folder)."""
        clashes = output_clashes(inputs, self.options.formats, (JOURNAL_NAME, REPORT_NAME, LOCK_NAME))
        if clashes:
            listed = "; ".join(clashes[:10]) + (f"; and {len(clashes) - 10} more" if len(clashes) > 10 else "")
            raise RunRefused(f"inputs would overwrite each other's outputs: {listed}; rename them or run them apart")
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with output_folder_lock(self.output_dir):
            return self._run(inputs)

    def _model_checked(self) -> None:
        """Wait for the model's check when it runs in the background (ModelRefused with its
        error), then print the start lines; once."""
        check, self.model_check = self.model_check, None
        lines, self.start_lines = self.start_lines, ()
        if check is not None:
            try:
                check.result()
            except FireRedFastError as exc:
                raise ModelRefused(str(exc)) from None
        for line in lines:
            print(line, file=sys.stderr)

    def _run(self, inputs: list[InputFile]) -> RunSummary:
        t_start = time.perf_counter()
        journal = Journal(self.output_dir)
        records: dict[int, FileRecord] = {}
        todo: list[_FileState] = []
        stored: list[tuple[_FileState, Recognition]] = []
        for index, item in enumerate(inputs):
            state = self._plan_file(index, item, journal, records)
            if state is None:
                continue
            recognition = None if self.options.overwrite else self._stored(state)
            if recognition is None:
                todo.append(state)
            else:
                stored.append((state, recognition))

        restore_signals = self.stop.install()
        try:
            if stored or not todo:
                self._model_checked()  # before re-rendering writes outputs; else beside the front end
            self._rerender(stored, records, journal)
            if todo:
                self._process(todo, records, journal)
        finally:
            restore_signals()
        ordered = [records[i] for i in sorted(records)]
        wall = time.perf_counter() - t_start
        summary = RunSummary(ordered, wall, self.stop.graceful.is_set(), self._worker_summary(wall), dict(self.counts))
        try:
            journal.save()
        except OSError as exc:
            log.error("%s: cannot write the journal: %s", display_name(journal.path), os_error(exc))
        try:
            write_report(self.output_dir, ordered, {**summary.to_dict(), "plan": self.plan.to_dict()})
        except OSError as exc:
            log.error("%s: cannot write the run report: %s", display_name(self.output_dir), os_error(exc))
        return summary

    def _plan_file(
        self, index: int, item: InputFile, journal: Journal, records: dict[int, FileRecord]
    ) -> _FileState | None:
        """The file's state to work on, or None when it is done (skipped) or unreadable (failed)."""
        key = relative_key(item.relative)
        try:
            hotwords = self.options.transcribe.hotwords.for_file(item.path) or None
            fps = self.settings.fingerprints(item, hotwords)
            identity = file_identity(item.path)
        except (OSError, GlossaryError) as exc:
            records[index] = FileRecord(
                key, str(item.path), "failed", error=str(exc) if isinstance(exc, GlossaryError) else os_error(exc)
            )
            log.error("%s: %s", item.path, records[index].error)
            return None
        if not self.options.overwrite and journal.is_complete(key, fps.outputs, self.output_dir):
            old = journal.records[key]
            records[index] = FileRecord(
                key, str(item.path), "skipped", fps.outputs, old.duration, outputs=old.outputs,
                recognition=old.recognition, written=old.written,
            )  # fmt: skip
            return None
        store = FileStore(self.output_dir, key, fps.recognition, identity)
        return _FileState(index, item, fps, 0.0, store, hotwords=hotwords)

    def _stored(self, state: _FileState) -> Recognition | None:
        return state.store.load_recognition() if state.store is not None else None

    # -- rendering: a recognised file's outputs

    def _rerender(
        self, stored: list[tuple[_FileState, Recognition]], records: dict[int, FileRecord], journal: Journal
    ) -> None:
        """Files recognised before with these recognition settings: their outputs from the
        stored recognition, no decoding, no VAD, no engine."""
        for state, recognition in stored:
            key = relative_key(state.item.relative)
            if self.stop.graceful.is_set():
                records[state.index] = FileRecord(
                    key, str(state.item.path), "interrupted", state.fps.outputs, error="interrupted before completion"
                )
                continue
            state.started = time.perf_counter()
            try:
                record = self._render(state, recognition, journal)
            except OSError as exc:
                record = FileRecord(
                    key, str(state.item.path), "failed", state.fps.outputs, recognition.duration,
                    error=f"cannot write outputs: {os_error(exc)}",
                )  # fmt: skip
                log.error("%s: %s", state.item.path, record.error)
            else:
                record.reused = len(recognition.segments)
                self.counts["files_rerendered"] += 1
                if state.store is not None:
                    state.store.finished()  # a partial store left by a run whose writing failed
                self.counts["segments_reused"] += record.reused
            records[state.index] = record
            journal_outcome(journal, record)

    def _render(self, state: _FileState, recognition: Recognition, journal: Journal) -> FileRecord:
        """Assemble and write a recognised file's outputs; remove the outputs of formats no
        longer asked for that an earlier run wrote and nobody changed since. Raises OSError."""
        settings = self.settings.journal_settings(state.item, state.hotwords)
        info = {"engine": settings["engine"], "options": settings}
        result = assemble_result(recognition, recognition.hypotheses, self.options.transcribe, info, state.hotwords)
        result.source = str(state.item.path)
        t0 = time.perf_counter()
        paths = write_result(
            result, self.output_dir, state.item.output_name, self.options.formats, self.options.transcribe.writer
        )
        written = {path.relative_to(self.output_dir).as_posix(): list(file_identity(path)) for path in paths}
        timings = dict(result.info.get("timings", {}))
        timings["write"] = time.perf_counter() - t0
        key = relative_key(state.item.relative)
        self._remove_stale_outputs(journal.records.get(key), written)
        record = FileRecord(
            key,
            str(state.item.path),
            "done",
            state.fps.outputs,
            recognition.duration,
            wall=time.perf_counter() - (state.processing_since or state.started),
            outputs=list(written),
            timings={k: round(v, 4) for k, v in timings.items()},
            language=result.info.get("language", ""),
            audio_track=recognition.track.to_dict() if recognition.track else {},
            recognition=state.fps.recognition,
            written=written,
            speech_seconds=round(result.speech_seconds, 3),
            covered_seconds=round(result.covered_seconds, 3),
        )
        record.review, record.guarded = review_counts(result)
        return record

    def _remove_stale_outputs(self, old: FileRecord | None, written: dict[str, list[int]]) -> None:
        """Outputs the journal says an earlier run wrote that this run did not: removed while
        they are what was written (same size and mtime), kept (with a line) once changed."""
        if old is None:
            return
        for name, identity in old.written.items():
            if name in written:
                continue
            path = self.output_dir / name
            try:
                if list(file_identity(path)) != list(identity):
                    log.warning("%s: kept, changed since this tool wrote it", path)
                    continue
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("%s: cannot remove (%s)", path, os_error(exc))

    # -- the scheduling loop (_Schedule), fed by the front end (frontend.py)

    def _process(self, todo: list[_FileState], records: dict[int, FileRecord], journal: Journal) -> None:
        _Schedule(self, todo, records, journal).run()

    # -- helpers

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
            "batches_timed_out": self.batches_timed_out,
        }


# ---------------------------------------------------------------- the scheduling loop


class _Schedule:
    """One run of the scheduling loop: each prepared file's segments cut into length-sorted
    batches of its own, the worker pools kept fed, results gathered per file, each file
    written and journaled when its last segment comes back.

    State, all of this run:
    - `states`: every file to do, by index; `records`: the outcome of each file that ended
      (the first outcome wins)
    - `pending`: segments of accepted files (or stretches) not yet in a batch, one list per
      stretch; `ready`: batches waiting for a worker, longest first; `in_flight`: future ->
      (batch, attempt, worker group);
      `attempts`: id(batch) -> the attempt number of a requeued batch's next submission
    - `pools`: the worker groups fed (workers.py), the runner's and the GPU workers that
      joined; `producer_done`: the front end has sent its last
      file; `no_workers`: every worker failed for good
    """

    def __init__(
        self, runner: Runner, todo: list[_FileState], records: dict[int, FileRecord], journal: Journal
    ) -> None:
        self.runner = runner
        self.options = runner.options
        self.stop = runner.stop
        self.gpu = runner.gpu
        self.records = records
        self.journal = journal
        self.states = {state.index: state for state in todo}
        self.budget = AudioBudget(self.options.preload_seconds)
        self.prepared_queue: queue.Queue = queue.Queue()
        # Decoding and the VAD (frontend.py): messages (index, PreparedFile | exception), then None.
        fast_consumers = runner.gpu_workers.enabled or any(g.name != "cpu" for g in runner.groups)
        setup = frontend_options(runner.plan, fast_consumers, self.options.frontend_processes)
        self.progress = Progress(False, {})  # made when the run starts; its probes feed the front end
        self.frontend = Frontend(
            todo, self.options.transcribe, self.budget, setup, self.stop.graceful, lambda i: self.progress.streams(i)
        )
        self.pending: list[list[SegmentJob]] = []  # one list per stretch of a file
        self.ready: collections.deque[Batch] = collections.deque()
        self.in_flight: dict[cf.Future, tuple[Batch, int, WorkerGroup]] = {}
        self.attempts: dict[int, int] = {}
        self.pools: list[WorkerGroup] = []
        self.producer_done = False
        self.no_workers = False
        self.clocks: dict[cf.Future, float] = {}  # time.monotonic() when a worker can have taken the batch
        self.speed: dict[str, float] = {}  # by pool: the slowest worker seconds per audio second seen

    def run(self) -> None:
        sources = {state.index: state.item.path for state in self.states.values()}
        self.progress = Progress(self.options.progress, sources)
        self.frontend.start(self.prepared_queue)
        try:
            self.runner._model_checked()  # the front end started beside it; no worker before it
        except ModelRefused:
            self.frontend.close(True)  # nothing was written: no file fails, none is journaled
            self.progress.close()
            raise
        self.pools = self._start_groups()
        try:
            while not self.stop.hard.is_set() and self._step():
                pass
        finally:
            self._close()

    def _step(self) -> bool:
        """One turn of the loop; False when the run is over."""
        self.progress.poll()
        self._take_prepared()
        graceful = self.stop.graceful.is_set()
        if not graceful:
            self.pools[:0] = reversed(self.runner.gpu_workers.join())  # each new one first
        capacity = sum(pool.capacity for pool in self.pools)
        if not graceful:
            self._cut_batches(capacity)
            self._submit_ready()
            self.frontend.demand(self._hungry(capacity))
        elif self.in_flight and not self._stop_waits():
            self._abandon_in_flight()
        if not self.in_flight:
            return self._idle(graceful, capacity)
        self._collect()
        self._enforce_deadlines()
        return True

    # -- 1. take newly prepared files

    def _take_prepared(self) -> None:
        """Accept what the front end sent; block briefly only when nothing else can progress.
        Once stopping, nothing more is accepted: those files end interrupted."""
        if self.stop.graceful.is_set():
            return
        block = not self.in_flight and not self.pending and not self.ready and not self.producer_done
        try:
            while True:
                message = self.prepared_queue.get(timeout=0.05 if block else 0)
                block = False
                if message is None:
                    self.producer_done = True
                    return
                index, result = message
                if isinstance(result, BaseException):
                    self._fail(self.states[index], describe_error(result))
                elif isinstance(result, FilePiece):
                    self._accept_piece(self.states[index], result)
                    return  # its batches go to the workers before the next message is read
                else:
                    self._accept(self.states[index], result)
        except queue.Empty:
            pass

    def _accept_piece(self, state: _FileState, piece: FilePiece) -> None:
        """A stretch of a file still in the front end: its segments go to batches now."""
        if state.index in self.records:
            return
        if piece.first != len(state.segments):
            self._fail(state, f"internal error: stretch {piece.stretch} out of order")
            return
        self._add_stretch(state, piece.segments, piece.jobs(state.index))
        self.runner.counts["segments_streamed"] += len(piece.segments)

    def _accept(self, state: _FileState, prepared: PreparedFile) -> None:
        if state.index in self.records:
            return
        log_track_choice(prepared, display_name(state.item.path))
        early = len(state.segments)
        if prepared.segments[:early] != state.segments:
            self._fail(state, "internal error: the segments recognised early differ from the whole file's")
            return
        state.prepared = prepared
        for jobs in prepared.stretch_jobs(state.index):
            if jobs[0].segment_index >= early:
                self._add_stretch(state, [prepared.segments[job.segment_index] for job in jobs], jobs)
        # The bar's share of the file: its segments to recognise, those of the early stretches included.
        todo = [segment_range(s) for s, h in zip(state.segments, state.hypotheses, strict=True) if h is None]
        waiting = sum(part.stop - part.start for part in todo) / SAMPLE_RATE
        self.progress.accept(state.index, prepared.duration, waiting + state.early_seconds)
        self.progress.advance(state.index, state.early_seconds)
        if state.remaining == 0:  # silent file (valid, empty outputs), or every segment stored
            state.processing_since = state.processing_since or time.perf_counter()
            self._finish(state)

    def _add_stretch(self, state: _FileState, segments: list[SpeechSegment], jobs: list[SegmentJob]) -> None:
        """A stretch's segments: those a previous run stored taken back, the others pending."""
        if state.stored is None:
            state.stored = self._resume(state)
        first = len(state.segments)
        state.segments.extend(segments)
        state.hypotheses.extend(state.stored.get(segment_key(first + i, s)) for i, s in enumerate(segments))
        todo = [job for job in jobs if state.hypotheses[job.segment_index] is None]
        state.reused += len(jobs) - len(todo)
        self.runner.counts["segments_reused"] += len(jobs) - len(todo)
        state.remaining += len(todo)
        if todo:
            self.pending.append(todo)

    def _resume(self, state: _FileState) -> dict[tuple[int, int, int], Hypothesis]:
        """What an interrupted run of this file already recognised, by segment_key (none
        with --overwrite); the partial store left ready for this run's."""
        if state.store is None:
            return {}
        try:
            return state.store.resume_lookup(reuse=not self.options.overwrite)
        except OSError as exc:
            self._lose_store(state, exc)
            return {}

    def _lose_store(self, state: _FileState, exc: OSError) -> None:
        log.warning(
            "%s: cannot keep its recognition (%s); an interruption or new subtitle options will recognise it again",
            display_name(state.item.path),
            os_error(exc),
        )
        state.store = None

    # -- 2. cut batches and keep the workers fed

    def _cut_batches(self, capacity: int) -> None:
        """Cut the pending segments into batches when the ready queue runs low: each file's
        on its own, and always the same way (make_batches over each stretch of the file's
        segments at --batch-seconds, docs/architecture.md#stretches). A segment's text then
        never depends on the other files of the run, the worker count, when its file was
        prepared or whether its stretch came early: an engine may write other text for a
        segment in another batch (Whisper packs a batch's short segments into shared windows;
        padding changes FireRedASR's sums)."""
        if not self.pending or len(self.ready) >= capacity:
            return
        transcribe = self.options.transcribe
        for jobs in self.pending:
            for batch in make_batches(jobs, transcribe.batch_seconds, transcribe.max_batch_size):
                batch.hotwords = self.states[jobs[0].file_index].hotwords
                self.ready.append(batch)
        self.pending = []

    def _submit_ready(self) -> None:
        # Only a few batches in flight per worker, so an interrupt has little to wait for.
        # Which ready batch each group takes: _take.
        for pool in self.pools:
            while self.ready and self._busy(pool) < pool.capacity:
                batch = self._take(pool)
                self._submit(pool, batch, self.attempts.pop(id(batch), 1))

    def _take(self, pool: WorkerGroup) -> Batch:
        """The ready batch `pool` gets next. With no largest-batch taker beside them, CPU
        workers take the longest ready batch: the last ones to start are then the short
        ones, so the workers finish close together (docs/benchmarks.md, a second worker that pays)."""
        if pool.takes_largest:
            return self.ready.popleft()
        if any(other.takes_largest for other in self.pools):
            return self.ready.pop()
        longest = max(range(len(self.ready)), key=lambda i: self.ready[i].audio_seconds)
        batch = self.ready[longest]
        del self.ready[longest]
        return batch

    def _submit(self, pool: WorkerGroup, batch: Batch, attempt: int) -> None:
        self.in_flight[pool.submit(batch.jobs, batch.hotwords)] = (batch, attempt, pool)

    def _hungry(self, capacity: int) -> bool:
        """Recognition waits for audio: no batch waiting or to cut, and room for more in
        flight (the front end may then take more cores, frontend.VadShare)."""
        return not self.ready and not self.pending and len(self.in_flight) < capacity

    def _busy(self, pool: WorkerGroup) -> int:
        return sum(1 for _, _, owner in self.in_flight.values() if owner is pool)

    def _idle(self, graceful: bool, capacity: int) -> bool:
        """Nothing in flight: stop when all is done (or stopping), or wait for a GPU to free up."""
        if graceful or (self.producer_done and not self.pending and not self.ready):
            return False
        if capacity == 0 and (self.gpu is None or not self.gpu.enabled):
            self.no_workers = True  # every worker failed for good: nothing can run
            return False
        time.sleep(0.05)  # GPU-only mode waiting for a GPU to free up
        return True

    # -- 3. collect finished batches

    def _collect(self) -> None:
        done, _ = cf.wait(list(self.in_flight), timeout=0.1, return_when=cf.FIRST_COMPLETED)
        broken: set[str] = set()
        for future in done:
            batch, attempt, pool = self.in_flight.pop(future)
            try:
                hyps, stats = future.result()
            except Exception as exc:
                if self.stop.graceful.is_set():
                    continue  # stopping (a group-wide SIGTERM ends workers too): no retry
                if self._batch_failed(batch, attempt, pool, exc):
                    broken.add(pool.name)
                continue
            self._batch_done(batch, pool, hyps, stats)
        for pool in self.pools:
            if pool.name in broken:
                self._replace_pool(pool)

    def _batch_done(self, batch: Batch, pool: WorkerGroup, hyps: list[Hypothesis], stats: dict[str, float]) -> None:
        self.runner._record_worker(stats, pool.name)
        share = stats["compute"] / max(batch.audio_seconds, 1e-9)
        started = time.perf_counter() - stats["compute"]  # on the worker, in this clock
        pool.warm = True
        self.speed[pool.name] = max(self.speed.get(pool.name, 0.0), share)
        self.runner.counts["segments_recognised"] += len(batch.jobs)
        finished: dict[int, list[tuple[int, Any, Hypothesis]]] = {}
        for job, hyp in zip(batch.jobs, hyps, strict=True):
            state = self.states[job.file_index]
            if state.index in self.records:
                continue
            # As a resumed run reads it back from the store: the same values either way.
            hyp = normalised(hyp)
            state.hypotheses[job.segment_index] = hyp
            state.asr_seconds += share * job.seconds
            state.processing_since = min(state.processing_since or started, started)
            self.progress.advance(state.index, job.seconds)
            if state.prepared is None:
                state.early_seconds += job.seconds  # the bar learns the file's share once prepared
            state.remaining -= 1
            segment = state.segments[job.segment_index]
            finished.setdefault(state.index, []).append((job.segment_index, segment, hyp))
        for index, segments in finished.items():
            state = self.states[index]
            self._keep(state, segments)
            if state.remaining == 0 and state.prepared is not None:
                self._finish(state)

    def _keep(self, state: _FileState, segments: list[tuple[int, Any, Hypothesis]]) -> None:
        """Make a file's finished segments durable in its partial store (store.py)."""
        if state.store is None:
            return
        try:
            state.store.append(segments)
        except OSError as exc:
            self._lose_store(state, exc)

    def _batch_failed(self, batch: Batch, attempt: int, pool: WorkerGroup, exc: Exception) -> bool:
        """Requeue or fail a batch whose worker raised; True when the pool itself is broken."""
        if pool.opportunistic:
            # GPUs are opportunistic: any failure there (CUDA OOM above all) sends the batch
            # back to the queue and the GPU into back-off.
            self._stand_down(pool, exc)
            self._requeue(batch, attempt, "the GPU worker failed")
        elif isinstance(exc, WorkerLost):
            # The executor already replaced the worker; an attempt that never started does
            # not count against the batch.
            self._requeue(batch, attempt if exc.counts_as_attempt else attempt - 1, "a worker was lost")
        elif isinstance(exc, BrokenProcessPool):
            self._requeue(batch, attempt, "a worker process died")
            return True
        else:
            self._fail_batch(batch, f"recognition failed: {describe_error(exc)}")
        return False

    def _requeue(self, batch: Batch, attempt: int, reason: str) -> None:
        self.runner.batches_retried += 1
        if attempt >= MAX_BATCH_ATTEMPTS:
            self._fail_batch(batch, f"{reason} {attempt} times while recognising this file")
        else:
            self.ready.appendleft(batch)
            self.attempts[id(batch)] = attempt + 1

    def _fail_batch(self, batch: Batch, message: str) -> None:
        for job in batch.jobs:
            self._fail(self.states[job.file_index], message)

    # -- deadlines and stopping

    def _enforce_deadlines(self) -> None:
        """Start the clock of each batch a worker can have taken (a pool hands batches out in
        submission order: one with fewer than `slots` earlier batches still in flight); kill
        the pool of a batch past its deadline (BatchDeadline). Ray's actors are not ours to kill."""
        if self.stop.graceful.is_set():
            return
        now = time.monotonic()
        self.clocks = {f: t for f, t in self.clocks.items() if f in self.in_flight}
        ahead: collections.Counter = collections.Counter()
        for future, (batch, _, pool) in list(self.in_flight.items()):
            ahead[pool] += 1
            if ahead[pool] > pool.slots or not pool.killable:
                continue
            start = self.clocks.setdefault(future, now)
            speed = self.speed.get(pool.name) if pool.warm else None
            if now - start > self.options.deadline.allowance(batch.audio_seconds, speed):
                self._expire(future)
                return  # the in-flight table changed; the next turn goes on

    def _expire(self, future: cf.Future) -> None:
        batch, _, pool = self.in_flight[future]
        self.runner.batches_timed_out += 1
        log.warning(
            "%s: a batch of %.0f s of audio ran past its deadline (a hung or stopped worker): "
            "its processes are killed and the batch retried",
            pool.name,
            batch.audio_seconds,
        )
        if pool.opportunistic:
            # Its batches come back failed and return to the queue; the GPU backs off.
            self._stand_down(pool, TimeoutError("a batch ran past its deadline"))
        else:
            self._replace_pool(pool, culprit=future)

    def _stop_waits(self) -> bool:
        """Stopping: whether a batch in flight is expected back within the grace, at its
        pool's measured speed (then it may still complete its file); if none is, or the grace
        is over, what runs is killed at once."""
        if self.stop.grace_over():
            return False
        end_of_grace = self.stop.since + STOP_GRACE_SECONDS
        for future, (batch, _, pool) in self.in_flight.items():
            start, speed = self.clocks.get(future), self.speed.get(pool.name)
            if start is None or speed is None or not pool.warm:
                continue  # not started, or nothing measured: not expected soon
            if start + batch.audio_seconds * speed < end_of_grace:
                return True
        return False

    def _abandon_in_flight(self) -> None:
        """The stop's grace is over: kill what still runs; its files end interrupted."""
        for pool in {pool for _, _, pool in self.in_flight.values()}:
            pool.shutdown(hard=True)
        self.in_flight.clear()

    # -- worker pools

    def _start_groups(self) -> list[WorkerGroup]:
        """The runner's worker groups, started (none in GPU-only mode)."""
        if self.gpu is not None and not self.gpu.cpu_workers_allowed:
            return []
        pools = list(self.runner.groups)
        for pool in pools:
            pool.start()
            log.debug("workers: %s", pool.describe())
        pools.sort(key=lambda pool: not pool.takes_largest)  # largest-batch takers choose first
        return pools

    def _replace_pool(self, pool: WorkerGroup, culprit: cf.Future | None = None) -> None:
        """A worker died (OOM killer, segfault) or hung (`culprit`, the batch past its
        deadline): the whole pool is unusable and every batch it had in flight is lost.
        Replace it; resubmit them (with a culprit, only its attempt counts)."""
        for future, (batch, attempt, owner) in list(self.in_flight.items()):
            if owner is pool:
                del self.in_flight[future]
                if culprit is None:
                    self._requeue(batch, attempt, "a worker process died")
                elif future is culprit:
                    self._requeue(batch, attempt, "a worker hung (its batch ran past its deadline)")
                else:
                    self._requeue(batch, attempt - 1, "a worker process was killed")
        pool.restart()

    def _stand_down(self, pool: WorkerGroup, exc: BaseException) -> None:
        """An opportunistic group failed: it leaves the run (the GPU backs off, workers.py)."""
        if pool not in self.pools:
            return  # already stood down by an earlier batch of the same worker
        self.pools.remove(pool)
        pool.stand_down(exc)

    # -- the end of the run

    def _close(self) -> None:
        """Stop the front end and the pools (hand the GPUs back), end every unfinished file."""
        # Once stopping, nothing running is waited for: the VAD and workers are killed.
        hard = self.stop.graceful.is_set()
        self.frontend.close(hard)
        for pool in self.pools:
            pool.shutdown(hard)
        for state in self.states.values():
            if state.index in self.records:
                continue
            if self.stop.graceful.is_set():
                self._fail(state, "interrupted before completion", "interrupted")
            else:
                self._fail(state, "no worker could run it" if self.no_workers else "not processed")
        self.progress.close()

    # -- a file's outcome

    def _fail(self, state: _FileState, message: str, status: str = "failed") -> None:
        """A file ends failed or interrupted: journal it, free its audio (first outcome wins)."""
        if state.index in self.records:
            return
        duration = state.prepared.duration if state.prepared else 0.0
        self.records[state.index] = FileRecord(
            relative_key(state.item.relative), str(state.item.path), status, state.fps.outputs, duration, error=message
        )
        if status == "failed":
            log.error("%s: %s", display_name(state.item.path), message)
        self._journal(self.records[state.index])
        self.progress.end(state.index)
        self.budget.release(duration)
        state.prepared, state.segments = None, []

    def _finish(self, state: _FileState) -> None:
        """The file's last segment came back: keep its recognition, write its outputs, journal it."""
        prepared = state.prepared
        assert prepared is not None
        prepared.timings["asr"] = state.asr_seconds
        recognition = Recognition.of(prepared, [h for h in state.hypotheses if h is not None])
        if state.store is not None:
            try:
                state.store.save_recognition(recognition)
            except OSError as exc:
                self._lose_store(state, exc)
        try:
            record = self.runner._render(state, recognition, self.journal)
        except OSError as exc:
            self._fail(state, f"cannot write outputs: {os_error(exc)}")
            return
        record.reused = state.reused
        self.records[state.index] = record
        if self._journal(record):
            log.info(
                "%s: done, %.1f s of audio, RTF %.3f",
                display_name(state.item.path), record.duration, record.realtime_factor,
            )  # fmt: skip
            if state.store is not None:
                state.store.finished()
        self.progress.end(state.index)
        self.budget.release(prepared.duration)
        state.prepared, state.segments = None, []  # free the samples now

    def _journal(self, record: FileRecord) -> bool:
        return journal_outcome(self.journal, record)


def journal_outcome(journal: Journal, record: FileRecord) -> bool:
    """Journal a file's outcome; False when the journal cannot be written (a full disk, a
    directory in its place): that fails the file, whose outputs a rerun could not trust,
    not the run."""
    try:
        journal.update(record)
        return True
    except OSError as exc:
        if record.status == "done":
            record.status = "failed"
        record.error = "; ".join(filter(None, [f"cannot write the journal: {os_error(exc)}", record.error]))
        log.error("%s: %s", display_name(record.source), record.error)
        return False


def print_summary(summary: RunSummary) -> None:
    data = summary.to_dict()
    print(format_table(summary.records))
    print(
        f"\n{data['files_done']} done, {data['files_skipped']} skipped, {data['files_failed']} failed, "
        f"{data['files_interrupted']} interrupted; "
        f"{data['audio_hours'] * 3600:.1f} s of audio in {data['wall_seconds']:.1f} s wall "
        f"(realtime factor {data['realtime_factor']:.3f})" + ("; interrupted" if summary.interrupted else "")
    )
