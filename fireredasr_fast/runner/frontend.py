"""The runner's front end: media files -> PreparedFile (decode + VAD), several at once.

Decoding is one ffmpeg process per file, started by a front-end thread here; the VAD runs in
a pool of single-threaded processes, a file's audio cut into the VAD's own blocks
(vad.VAD_BLOCK_FRAMES, ~17.5 min), so a long file's blocks run in several processes at once
and come out exactly as one process running them in turn would give them. With no processes
the VAD runs in the front-end thread itself (the runner's original single preload thread).

What is held is bounded in audio seconds (AudioBudget): before a file is decoded, its
duration (from ffmpeg's probe) is reserved, so the audio decoded ahead of the workers never
exceeds the budget, however many files are decoded at once (one file longer than the whole
budget may still enter, alone). Decoding and the VAD run at the priority the plan gives them
(plan.PRELOAD_NICE beside multi-threaded workers).

How many files are decoded at once follows how fast the workers consume audio: it starts at
one and grows by one, up to the process count, each time a file is taken while the workers
have eaten what is held down below LOW_WATER_SHARE of the budget (at the start nothing is
held: the front end fans out at once, while the workers wait for their first batches).

Beside local CPU workers the front end adapts (FrontendOptions.adaptive, the default there):
the VAD has a process per core, but only as many of its blocks run at once as recognition
leaves cores idle: all of them while the workers wait for audio (the runner says so through
`demand`), one while they have batches to run, the cores then going back to the workers
(VadShare). A block's probabilities never depend on which process ran it, or how many ran
at once (vad.VAD_BLOCK_FRAMES).
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import psutil

from fireredasr_fast.audio import AudioStreams, probe_audio_streams
from fireredasr_fast.inputs import InputFile
from fireredasr_fast.transcribe import STREAMS_HELD, TranscribeOptions, prepare_file
from fireredasr_fast.vad import VAD_BLOCK_FRAMES, WINDOW_SAMPLES, WINDOW_SECONDS, SileroVad, SpeechSegmenter, vad_blocks

from .lifeline import GROUP_SIGNALS, attach, stop_pool
from .plan import PRELOAD_NICE, THREAD_ENV_VARS, Plan, lower_thread_priority

log = logging.getLogger("fireredasr_fast")

# Files decoded at once grow while what is held stays below this share of the budget: the
# workers then consume audio faster than one decoding file brings it.
LOW_WATER_SHARE = 0.25
# A container's stated duration is approximate: what is reserved before decoding has this
# margin, and the surplus goes back as soon as the samples are counted.
DURATION_MARGIN_SHARE = 0.02
DURATION_MARGIN_SECONDS = 1.0
# Resident memory of one VAD process (Python, onnxruntime and the model; a block's audio in
# float32 while it runs), an upper bound from docs/tuning.md#the-front-end-decoding-and-the-vad;
# sizes the pool against available memory.
VAD_PROCESS_BYTES = 4e8
FRONTEND_MEMORY_SHARE = 0.1  # of the available memory, for the VAD processes
CLOSE_WAIT_SECONDS = 2.0  # close() waits this long at most for the front-end threads to end


@dataclass(frozen=True)
class FrontendOptions:
    processes: int = 0  # VAD processes; 0 = the VAD in the front-end thread (one file at a time)
    nice: int = 0  # priority of decoding (the threads here and their ffmpeg) and the VAD processes
    block_frames: int = VAD_BLOCK_FRAMES  # the VAD's block; the same in a serial run gives the same segments
    # The VAD's blocks run at once on all the processes only while recognition waits for audio
    # (Frontend.demand), on one otherwise; False: always on all of them.
    adaptive: bool = False


def frontend_options(plan: Plan, fast_consumers: bool, processes: int | None = None) -> FrontendOptions:
    """Size the front end from the plan. `fast_consumers`: GPU workers or a cluster, which eat
    audio at hundreds of times realtime (docs/tuning.md): every VAD process busy all along.
    Beside local CPU workers, which may consume audio faster or slower than one front-end core
    prepares it (a small model or a large one, docs/benchmarks.md), the front end adapts: a
    process per core, used only while recognition waits. An explicit `processes` wins, fixed."""
    # Beside fast consumers several front-end processes are busy at once: at full priority
    # they would take cores from CPU workers of any thread count.
    nice = PRELOAD_NICE if plan.threads_per_worker > 1 or fast_consumers else 0
    if processes is not None:
        return FrontendOptions(processes=max(0, processes), nice=nice)
    # This machine's cores and memory: a cluster's plan counts its nodes'.
    cores = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    by_memory = int(psutil.virtual_memory().available * FRONTEND_MEMORY_SHARE // VAD_PROCESS_BYTES)
    processes = max(1, min(cores, by_memory))
    if fast_consumers:
        return FrontendOptions(processes=processes, nice=nice)
    # One process would only do what the front-end thread does: keep the thread then.
    return FrontendOptions(processes=processes if processes > 1 else 0, nice=nice, adaptive=processes > 1)


class VadShare:
    """How many VAD blocks may run at once: `most` (the processes), or with `adaptive` one
    while recognition has work and `most` while it waits for audio (`want`)."""

    def __init__(self, most: int, adaptive: bool) -> None:
        self.most = max(1, most)
        self.adaptive = adaptive
        self.limit = self.most  # a run starts with its workers waiting for their first audio
        self.running = 0
        self.peak = 0
        self.changes = 0  # how often the limit moved
        self.offloaded = 0  # blocks sent to a process
        self.early = 0  # of which while their file was still being decoded
        self.closed = False
        self.cond = threading.Condition()

    def want(self, hungry: bool) -> None:
        """Recognition waits for audio (`hungry`), or has work."""
        if not self.adaptive:
            return
        limit = self.most if hungry else 1
        with self.cond:
            if limit != self.limit:
                self.limit = limit
                self.changes += 1
                self.cond.notify_all()

    def acquire(self) -> bool:
        """Wait for room for one more block; RuntimeError once the front end is closed.
        True when the block may go to a process: recognition waits (or always, not adaptive)."""
        with self.cond:
            while self.running >= self.limit and not self.closed:
                self.cond.wait(0.5)
            if self.closed:
                raise RuntimeError("the front end is closed")
            self.running += 1
            self.peak = max(self.peak, self.running)
            return not self.adaptive or self.limit > 1

    def try_acquire(self) -> bool:
        """Room for one more block going to a process now, while recognition waits."""
        with self.cond:
            if self.closed or not self.hungry or self.running >= self.limit:
                return False
            self.running += 1
            self.peak = max(self.peak, self.running)
            return True

    @property
    def hungry(self) -> bool:
        return self.adaptive and self.limit > 1

    def release(self, *_: Any) -> None:
        with self.cond:
            self.running -= 1
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()


class AudioBudget:
    """Audio seconds held ahead of recognition: reserved before decoding, settled to the real
    length after, released when the runner is done with the file. `peak` is the most ever held."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.used = 0.0
        self.peak = 0.0
        self.closed = False
        self.cond = threading.Condition()

    def reserve(self, seconds: float) -> bool:
        """Wait until `seconds` fit (or nothing is held: one file may always enter, however
        long), then hold them. False when the budget was closed while waiting."""
        with self.cond:
            while self.used > 0 and self.used + seconds > self.limit and not self.closed:
                self.cond.wait(0.5)
            if self.closed:
                return False
            self._add(seconds)
            return True

    def settle(self, reserved: float, actual: float) -> None:
        """A reservation becomes the file's real length."""
        with self.cond:
            self._add(actual - reserved)
            self.cond.notify_all()

    def release(self, seconds: float) -> None:
        with self.cond:
            self.used = max(0.0, self.used - seconds)
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def _add(self, seconds: float) -> None:
        self.used = max(0.0, self.used + seconds)
        self.peak = max(self.peak, self.used)


class FrontendItem(Protocol):
    """What the front end reads from the runner's per-file state (and stamps `started` on)."""

    index: int
    item: InputFile
    started: float


class ProcessVad:
    """The VAD's blocks in the front end's process pool: the same probabilities as SileroVad
    in one process. A pool broken by a dead process (the OOM killer) is replaced once.

    With `local` (the adaptive front end's own SileroVad), a block runs in the calling thread
    unless the share lets recognition's idle cores take it and more blocks follow: then it
    goes to a process and the thread goes on to the next. The last block always runs here,
    so a file of one block never starts a process. While recognition waits, the blocks a
    file being decoded has complete already go to the processes at once (`begin`): the VAD
    then runs beside ffmpeg instead of after it."""

    def __init__(
        self,
        pool: Callable[[cf.Executor | None], cf.Executor],
        block_frames: int,
        share: VadShare | None = None,
        local: SileroVad | None = None,
    ) -> None:
        self.pool = pool  # pool(None): the current one; pool(broken): a new one in its place
        self.block_frames = block_frames
        self.share = share or VadShare(1, adaptive=False)
        self.local = local
        self._early: list[cf.Future] = []  # blocks 0.. of the file being decoded, sent early
        self._used: list[cf.Executor] = []  # the pool they went to
        self._on_block: Callable[[np.ndarray], None] | None = None  # the file's StretchFeed
        self._delivered = 0  # its blocks given to it, in order

    def begin(self, on_block: Callable[[np.ndarray], None] | None = None) -> Callable[[bytearray], None] | None:
        """A file is about to be decoded: the listener of its bytes (audio.decode_audio).
        `on_block` gets each block's probabilities in order, those sent early as they finish."""
        self._early, self._used = [], []
        self._on_block, self._delivered = on_block, 0
        return self._feed if self.local is not None else None

    def _feed(self, buffer: bytearray) -> None:
        """Send each block decoded whole to a process, while recognition waits and a process
        is free (never waiting: the decode goes on). Its bytes are what the whole file's
        samples hold there: the decoded bytes only ever grow."""
        step = 2 * WINDOW_SAMPLES * self.block_frames  # int16 bytes per block
        while (len(self._early) + 1) * step <= len(buffer) and self.share.try_acquire():
            start = len(self._early) * step
            block = np.frombuffer(buffer, dtype=np.int16, count=step // 2, offset=start).copy()  # one copy
            try:
                self._early.append(self._submit(block, self._used, None))
            except BrokenProcessPool:
                return  # probabilities() replaces the pool and runs the rest
            self.share.early += 1
        self._deliver(self._early, wait=False)

    def _deliver(self, futures: list[cf.Future], wait: bool) -> None:
        """Give the blocks finished (all of them with `wait`) to on_block, in order."""
        while self._on_block is not None and self._delivered < len(futures):
            future = futures[self._delivered]
            if not (wait or future.done()) or future.exception() is not None:
                return  # a broken pool: probabilities() runs the block again
            self._delivered += 1
            self._on_block(future.result())

    def probabilities(self, samples: np.ndarray, on_block: Callable[[np.ndarray], None] | None = None) -> np.ndarray:
        early, used = self._early, self._used
        self._early, self._used = [], []
        if on_block != self._on_block:  # bound methods: equal, not the same object
            self._on_block, self._delivered = on_block, 0
        try:
            if samples.size == 0:
                return np.zeros(0, dtype=np.float32)
            blocks = vad_blocks(samples.size, self.block_frames)
            try:
                return self._run(samples, blocks, used, None, early)
            except BrokenProcessPool:
                return self._run(samples, blocks, [], used[0] if used else None, [])
        finally:
            self._on_block = None

    def _run(
        self,
        samples: np.ndarray,
        blocks: list[slice],
        used: list[cf.Executor],
        broken: cf.Executor | None,
        early: list[cf.Future],
    ) -> np.ndarray:
        """Each block not sent early, as the share allows, to a process or to this thread;
        the results in order, each given to on_block as soon as it and those before it are
        done. `used`: the pool this file's blocks went to, once they have."""
        futures = list(early)
        for i in range(len(early), len(blocks)):
            self._deliver(futures, wait=False)
            offload = self.share.acquire()
            if self.local is None or (offload and i + 1 < len(blocks)):
                futures.append(self._submit(samples[blocks[i]], used, broken))
            else:
                futures.append(self._here(samples[blocks[i]]))
        parts = [future.result() for future in futures]
        self._deliver(futures, wait=True)
        return np.concatenate(parts)

    def _submit(self, block: np.ndarray, used: list[cf.Executor], broken: cf.Executor | None) -> cf.Future:
        try:
            if not used:
                used.append(self.pool(broken))
            future = used[0].submit(_block_probabilities, block)
        except BaseException:
            self.share.release()
            raise
        future.add_done_callback(self.share.release)
        self.share.offloaded += 1
        return future

    def _here(self, block: np.ndarray) -> cf.Future:
        assert self.local is not None
        future: cf.Future = cf.Future()
        try:
            future.set_result(self.local.block_probabilities(block))
        finally:
            self.share.release()
        return future


_process_vad: SileroVad | None = None


def _init_vad_process(nice: int, block_frames: int) -> None:
    # Started from whichever front-end thread first needed it, which may end before the
    # process: the watchdog alone ties it to the main process (lifeline.py).
    attach(kernel_signal=False)
    lower_thread_priority(nice)
    # One thread, without set_process_threads: that imports torch (~2 CPU s, ~150 MB), which
    # the VAD does not use (vad.SileroVad runs onnxruntime alone, one thread of its own).
    for name in THREAD_ENV_VARS:
        os.environ[name] = "1"
    global _process_vad
    _process_vad = SileroVad(block_frames)


def _pid() -> int:
    time.sleep(0.05)  # long enough for the pool to hand the next call to another process
    return os.getpid()


def _block_probabilities(block: np.ndarray) -> np.ndarray:
    assert _process_vad is not None, "the VAD process was not initialised"
    return _process_vad.block_probabilities(block)


class Frontend:
    """Prepares `items` in order into `out` as (index, PreparedFile | exception), then None;
    a long file's stretches come first as (index, FilePiece), in order, as soon as each is
    final (transcribe.prepare_file): their recognition need not wait for the file's end.

    start() returns at once; close() stops taking files and ends the VAD processes."""

    def __init__(
        self,
        items: Sequence[FrontendItem],
        transcribe: TranscribeOptions,
        budget: AudioBudget,
        options: FrontendOptions = FrontendOptions(),
        stop: threading.Event | None = None,
        probed: Callable[[int], AudioStreams | None] | None = None,
    ) -> None:
        self.items = list(items)
        # A file's probe made already (the progress bar's), by its index; None: probe it here.
        self.probed = probed or (lambda index: None)
        self.transcribe = transcribe
        self.budget = budget
        self.options = options
        self.stop = stop or threading.Event()  # the run's: stop taking files
        self._closing = threading.Event()
        self._next = 0
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._running = 0
        self._executor: cf.Executor | None = None
        self.files_at_once = 1
        self.max_files_at_once = max(1, options.processes)
        self.share = VadShare(options.processes, options.adaptive)
        self.stats = {"prepared_seconds": 0.0, "decode": 0.0, "vad": 0.0}

    def start(self, out: queue.Queue) -> None:
        if not self.options.adaptive:
            self._pool()  # adaptive: started when a long file comes while recognition waits
        self._add_thread(out)

    def warm_up(self) -> None:
        """Start every VAD process now and wait until each has loaded the model (a benchmark
        times the front end, not Python's start-up)."""
        pool = self._pool()
        if pool is not None:
            pids = set()
            while len(pids) < self.options.processes:
                pids.update(f.result() for f in [pool.submit(_pid) for _ in range(self.options.processes)])

    def _pool(self, broken: cf.Executor | None = None) -> cf.Executor | None:
        """The VAD processes (None with processes=0); a new pool in place of a `broken` one."""
        with self._lock:
            if broken is not None and self._executor is broken:
                log.warning("a VAD process died; starting the front end's processes again")
                stop_pool(broken, hard=True)
                self._executor = None
            if self._executor is None and self.options.processes > 0 and not self._closing.is_set():
                self._executor = cf.ProcessPoolExecutor(
                    max_workers=self.options.processes,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_init_vad_process,
                    initargs=(self.options.nice, self.options.block_frames),
                )
            return self._executor

    def demand(self, hungry: bool) -> None:
        """The runner's word on recognition: waiting for audio (`hungry`: the VAD may take
        every process), or busy (one; the cores go back to the workers). Adaptive only."""
        self.share.want(hungry)

    def close(self, hard: bool = False) -> None:
        """Stop taking files. The VAD blocks running finish (`hard`: their processes are
        killed); a front-end thread ends after its current file, its result unread."""
        self._closing.set()
        self.budget.close()
        self.share.close()
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            stop_pool(executor, hard)
        # A front-end thread still inside the VAD's ONNX session (or loading it) when the
        # interpreter exits aborts the process ("terminate called"): give them a moment to
        # end their current step; a long file's decode is not waited for.
        end = time.monotonic() + CLOSE_WAIT_SECONDS
        for thread in list(self._threads):
            if thread is not threading.current_thread():
                thread.join(max(0.0, end - time.monotonic()))

    def _current_pool(self, broken: cf.Executor | None) -> cf.Executor:
        pool = self._pool(broken)
        if pool is None:
            raise RuntimeError("the front end is closed")
        return pool

    def _add_thread(self, out: queue.Queue) -> None:
        with self._lock:
            self._running += 1
        thread = threading.Thread(target=self._run, args=(out,), name=f"frontend-{len(self._threads)}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _take(self) -> FrontendItem | None:
        with self._lock:
            if self._next >= len(self.items) or self.stop.is_set() or self._closing.is_set():
                return None
            self._next += 1
            return self.items[self._next - 1]

    def _run(self, out: queue.Queue) -> None:
        lower_thread_priority(self.options.nice)  # this thread and the ffmpeg it starts
        # Ctrl-C is the main thread's; what this thread starts (ffmpeg, VAD processes)
        # inherits the mask and leaves it to the main process too (lifeline.py).
        if hasattr(signal, "pthread_sigmask"):
            signal.pthread_sigmask(signal.SIG_BLOCK, GROUP_SIGNALS)
        try:
            vad: Any = None  # FireRedVAD (--vad firered): SpeechSegmenter runs it in this thread
            if self.transcribe.vad.backend == "silero" and self.options.processes > 0:
                local = SileroVad(self.options.block_frames) if self.options.adaptive else None
                vad = ProcessVad(self._current_pool, self.options.block_frames, self.share, local)
            elif self.transcribe.vad.backend == "silero":
                vad = SileroVad(self.options.block_frames)
            segmenter = SpeechSegmenter(self.transcribe.vad, vad)
            while (state := self._take()) is not None:
                self._maybe_grow(out)
                if not self._prepare(state, segmenter, out):
                    break
        except Exception as exc:
            log.error("preload stopped: %s", exc)
        finally:
            with self._lock:
                self._running -= 1
                last = self._running == 0
            if last:
                out.put(None)

    def _prepare(self, state: FrontendItem, segmenter: SpeechSegmenter, out: queue.Queue) -> bool:
        """One file into `out`; False when the run stopped while waiting for room."""
        stream = state.item.audio_stream
        if stream is None:
            stream = self.transcribe.audio_stream
        try:
            streams = self.probed(state.index) or probe_audio_streams(state.item.path)
        except Exception as exc:  # one bad file must not stop the others
            out.put((state.index, exc))
            return True
        held = min(streams.count, STREAMS_HELD) if stream is None and streams.count > 1 else 1
        reserved = self._reservation(streams.duration, held)
        if not self.budget.reserve(reserved):
            return False
        self._warm_for(streams.duration)
        state.started = time.perf_counter()
        try:
            prepared = prepare_file(
                state.item.path,
                segmenter,
                stream,
                streams,
                self.transcribe.speakers,
                lambda piece: out.put((state.index, piece)),
            )
        except Exception as exc:
            self.budget.release(reserved)
            out.put((state.index, exc))
            return True
        self.budget.settle(reserved, prepared.duration)
        with self._lock:
            self.stats["prepared_seconds"] += prepared.duration
            for key in ("decode", "vad"):
                self.stats[key] += prepared.timings.get(key, 0.0)
        out.put((state.index, prepared))
        return True

    def _warm_for(self, duration: float | None) -> None:
        """Adaptive: a file of several VAD blocks about to be decoded while recognition waits
        starts the VAD processes now, so they load their model while ffmpeg decodes."""
        block_seconds = self.options.block_frames * WINDOW_SECONDS
        if not self.share.hungry or duration is None or duration <= block_seconds:
            return
        if self.transcribe.vad.backend != "silero":
            return  # FireRedVAD runs in the front-end thread (SpeechSegmenter)
        with self._lock:
            if self._executor is not None:
                return
        pool = self._pool()
        if pool is not None:
            for _ in range(self.options.processes):
                pool.submit(int)  # a process per call: each spawns and loads the VAD now

    def _reservation(self, duration: float | None, streams_held: int) -> float:
        """Seconds to hold before decoding: the stated duration with a margin, times the
        streams held at once while they are compared (transcribe.STREAMS_HELD); with no stated
        duration, the whole budget (the file then waits until nothing else is held)."""
        if duration is None:
            return self.budget.limit
        return (duration * (1 + DURATION_MARGIN_SHARE) + DURATION_MARGIN_SECONDS) * streams_held

    def _maybe_grow(self, out: queue.Queue) -> None:
        with self._lock:
            grow = (
                self.files_at_once < self.max_files_at_once
                and self._next < len(self.items)
                and self.budget.used < LOW_WATER_SHARE * self.budget.limit
            )
            if grow:
                self.files_at_once += 1
        if grow and not (self.stop.is_set() or self._closing.is_set()):
            self._add_thread(out)
