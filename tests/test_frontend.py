"""The parallel front end (runner/frontend.py): VAD blocks in several processes give the
segments of a serial run, what is held never exceeds the audio budget, and the runner's
outputs do not depend on the front end's process count. Real ffmpeg, real silero VAD."""

from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import SAMPLES, run_ffmpeg

from fireredasr_fast.inputs import InputFile, collect_inputs
from fireredasr_fast.runner.frontend import AudioBudget, Frontend, FrontendOptions, frontend_options
from fireredasr_fast.runner.plan import PRELOAD_NICE, make_plan
from fireredasr_fast.transcribe import FilePiece, TranscribeOptions, prepare_file
from fireredasr_fast.vad import SileroVad, SpeechSegmenter, vad_blocks

# Small VAD blocks (~33 s) so a two-minute file has four of them to spread over processes.
BLOCK_FRAMES = 1024


@dataclass
class _Item:
    index: int
    item: InputFile
    started: float = 0.0


def _drain(
    out: queue.Queue, budget: AudioBudget | None = None, hold: float = 0.0, pieces: list | None = None
) -> dict[int, object]:
    """Take every message like the runner; with a budget, hold each file a while, then free it.
    A file's stretches sent early (FilePiece) go to `pieces`, as (index, piece)."""
    results: dict[int, object] = {}
    while (message := out.get(timeout=300)) is not None:
        index, result = message
        if isinstance(result, FilePiece):
            assert index not in results, "a stretch after its file"
            if pieces is not None:
                pieces.append(message)
            continue
        results[index] = result
        if budget is not None and not isinstance(result, BaseException):
            time.sleep(hold)
            budget.release(result.duration)
    return results


def test_vad_blocks_in_processes_give_the_serial_segments(long_file: Path):
    serial = prepare_file(long_file, SpeechSegmenter(vad=SileroVad(BLOCK_FRAMES)))
    assert len(vad_blocks(serial.samples.size, BLOCK_FRAMES)) >= 4
    assert len(serial.segments) >= 3

    out: queue.Queue = queue.Queue()
    frontend = Frontend(
        [_Item(0, InputFile(long_file, Path(long_file.name)))],
        TranscribeOptions(),
        AudioBudget(3600.0),
        FrontendOptions(processes=2, block_frames=BLOCK_FRAMES),
    )
    frontend.start(out)
    try:
        parallel = _drain(out)[0]
    finally:
        frontend.close()
    assert not isinstance(parallel, BaseException), parallel
    assert (parallel.samples == serial.samples).all()
    assert [(s.start, s.end, s.speech) for s in parallel.segments] == [
        (s.start, s.end, s.speech) for s in serial.segments
    ]
    assert parallel.speech == serial.speech


@pytest.mark.parametrize("hungry", [True, False], ids=["recognition-waits", "recognition-busy"])
def test_the_adaptive_vad_takes_processes_only_while_recognition_waits(long_file: Path, hungry: bool):
    """The same segments as a serial run whatever the demand; blocks go to processes (some
    while the file is still being decoded) only while the runner says recognition waits."""
    import psutil

    serial = prepare_file(long_file, SpeechSegmenter(vad=SileroVad(BLOCK_FRAMES)))
    out: queue.Queue = queue.Queue()
    frontend = Frontend(
        [_Item(0, InputFile(long_file, Path(long_file.name)))],
        TranscribeOptions(),
        AudioBudget(3600.0),
        FrontendOptions(processes=2, block_frames=BLOCK_FRAMES, adaptive=True),
    )
    frontend.demand(hungry)
    frontend.start(out)
    pieces: list = []
    try:
        prepared = _drain(out, pieces=pieces)[0]
        vad_processes = [c for c in psutil.Process().children() if "--multiprocessing-fork" in c.cmdline()]
    finally:
        frontend.close()
    assert not isinstance(prepared, BaseException), prepared
    assert [(s.start, s.end, s.speech) for s in prepared.segments] == [
        (s.start, s.end, s.speech) for s in serial.segments
    ]
    assert prepared.speech == serial.speech
    # Its first stretches came before it, each the serial run's segments and samples.
    assert pieces and sum(len(piece.segments) for _, piece in pieces) < len(serial.segments)
    assert [len(piece.segments) for _, piece in pieces] == [serial.stretches[piece.stretch] for _, piece in pieces]
    early = [job for _, piece in pieces for job in piece.jobs(0)]
    assert [(job.segment_index, job.samples.tobytes()) for job in early] == [
        (job.segment_index, job.samples.tobytes()) for job in serial.jobs(0)[: len(early)]
    ]
    if hungry:
        assert frontend.share.offloaded >= 2 and frontend.share.early >= 1 and len(vad_processes) == 2
    else:
        assert frontend.share.offloaded == 0 and vad_processes == []


def test_audio_held_never_exceeds_the_budget(tmp_path: Path):
    names = []
    for i, sample in enumerate(("two_cities.mp4", "aishell_zh.mkv", "two_cities.mp4", "two_cities.mp4")):
        names.append(tmp_path / f"{i} {sample}")
        names[-1].write_bytes((SAMPLES / sample).read_bytes())
    (tmp_path / "broken.mp4").write_bytes(b"not media")
    names.insert(3, tmp_path / "broken.mp4")
    # Two audio streams, ffmpeg's default silent: both are read (held at once) and compared.
    run_ffmpeg(
        "-f", "lavfi", "-t", "12", "-i", "anullsrc=r=16000:cl=mono", "-i", str(SAMPLES / "two_cities.mp4"),
        "-map", "0:a", "-map", "1:a", "-t", "12", "-c:a", "aac", str(tmp_path / "two streams.mkv"),
    )  # fmt: skip
    names.append(tmp_path / "two streams.mkv")
    items = [_Item(i, InputFile(path, Path(path.name))) for i, path in enumerate(names)]
    limit = 100.0  # two of the 44 s files, not three
    budget = AudioBudget(limit)
    seen: list[float] = []
    stop_watch = threading.Event()

    def watch() -> None:
        while not stop_watch.is_set():
            seen.append(budget.used)
            time.sleep(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out: queue.Queue = queue.Queue()
    frontend = Frontend(items, TranscribeOptions(), budget, FrontendOptions(processes=2))
    frontend.start(out)
    try:
        results = _drain(out, budget, hold=0.3)
    finally:
        frontend.close()
        stop_watch.set()
        watcher.join()
    assert sorted(results) == list(range(len(items)))
    assert isinstance(results[3], BaseException)  # the broken file fails alone
    assert sum(not isinstance(r, BaseException) for r in results.values()) == 5
    assert results[5].track.stream == 1  # the speech, found through the VAD processes
    # Reservations count: what is held, decoded or being decoded, stays within the budget.
    assert budget.peak <= limit and max(seen) <= limit
    assert budget.peak > 44.0  # more than one file was held at once
    assert frontend.files_at_once == 2  # the consumer kept up: a second file was decoded at once
    assert budget.used == pytest.approx(0.0, abs=1e-6)


def test_frontend_size_follows_the_consumers(monkeypatch):
    import psutil

    cpu_plan = make_plan(0, workers=2, threads_per_worker=1, physical_cores=2)
    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: 2)
    # Beside CPU workers: a VAD process per core, used only while recognition waits.
    assert frontend_options(cpu_plan, fast_consumers=False) == FrontendOptions(processes=2, nice=0, adaptive=True)
    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: 1)
    assert frontend_options(cpu_plan, fast_consumers=False) == FrontendOptions(processes=0, nice=0)
    monkeypatch.undo()
    assert frontend_options(cpu_plan, fast_consumers=False, processes=3) == FrontendOptions(processes=3, nice=0)
    threaded = make_plan(0, workers=1, threads_per_worker=2, physical_cores=2)
    assert frontend_options(threaded, fast_consumers=False).nice == PRELOAD_NICE
    gpu = frontend_options(cpu_plan, fast_consumers=True)
    assert gpu.processes >= 1 and gpu.nice == PRELOAD_NICE
    assert frontend_options(cpu_plan, fast_consumers=True, processes=5).processes == 5


def test_runner_outputs_do_not_depend_on_the_frontend(tmp_path: Path, random_model_dir: Path, monkeypatch):
    import torch

    from fireredasr_fast.engines import EngineSpec
    from fireredasr_fast.runner.plan import THREAD_ENV_VARS
    from fireredasr_fast.runner.scheduler import Runner, RunOptions

    for name in THREAD_ENV_VARS:  # the inline worker pins this process's thread pools
        monkeypatch.setenv(name, os.environ.get(name, ""))
    threads = torch.get_num_threads()
    spec = EngineSpec("firered", str(random_model_dir), None, "cpu", (("beam_size", 1),))
    inputs, _ = collect_inputs([str(SAMPLES / "aishell_zh.mkv")])
    plan = make_plan(0, workers=0, threads_per_worker=1)
    outputs = {}
    try:
        for processes in (0, 2):
            out = tmp_path / f"p{processes}"
            options = RunOptions(out, ("srt", "txt"), progress=False, frontend_processes=processes)
            summary = Runner(spec, plan, options).run(inputs)
            assert [r.status for r in summary.records] == ["done"]
            # Files only: the output folder also holds the recognition stores' folder (store.py).
            outputs[processes] = {
                p.name: p.read_bytes() for p in sorted(out.glob("*.*")) if p.is_file() and p.suffix != ".json"
            }
    finally:
        torch.set_num_threads(threads)
    assert outputs[0] and outputs[0] == outputs[2]


def test_a_dead_vad_process_is_replaced(caplog):
    """The OOM killer takes a VAD process: the pool is started again and the file prepared."""
    import signal

    import psutil

    item = _Item(0, InputFile(SAMPLES / "aishell_zh.mkv", Path("aishell_zh.mkv")))
    frontend = Frontend([item], TranscribeOptions(), AudioBudget(3600.0), FrontendOptions(processes=1))
    frontend.warm_up()
    (vad_process,) = [c for c in psutil.Process().children() if "--multiprocessing-fork" in c.cmdline()]
    os.kill(vad_process.pid, signal.SIGKILL)
    vad_process.wait(timeout=30)
    out: queue.Queue = queue.Queue()
    frontend.start(out)
    try:
        results = _drain(out)
    finally:
        frontend.close()
    assert not isinstance(results[0], BaseException), results[0]
    assert len(results[0].segments) >= 1
    assert "a VAD process died" in caplog.text
