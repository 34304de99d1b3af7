"""Running the CLI as a real subprocess and reading what it wrote (shared by the fault tests)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
from conftest import ROOT

FORMATS = "srt,vtt,txt,json"


def cli_command(model_dir: Path, out: Path, *inputs: Path, workers: int = 1, extra: tuple[str, ...] = ()) -> list[str]:
    # Small batches: many of them, so a run can be interrupted with work still queued.
    return [
        sys.executable, str(ROOT / "long_video_transcribe.py"), "--model-dir", str(model_dir),
        "--workers", str(workers), "--threads-per-worker", "1", "--batch-seconds", "10",
        "--formats", FORMATS, "--no-progress", "-o", str(out), *extra, "--", *map(str, inputs),
    ]  # fmt: skip


def env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))


def run(cmd: list[str], **extra_env: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env={**env(), **extra_env}, timeout=600)


def outputs(out: Path) -> dict[str, bytes]:
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.suffix in (".srt", ".vtt", ".txt")
    }


def json_content(out: Path) -> dict[str, object]:
    # Timings differ run to run; everything else must be identical.
    found = {}
    for path in sorted(out.rglob("*.json")):
        if path.name.startswith(".") or path.name == "run-report.json":
            continue
        data = json.loads(path.read_text())
        found[path.name] = (data["segments"], data["cues"], data["duration"])
    return found


def journal(out: Path) -> dict[str, str]:
    path = out / ".fireredasr-fast-journal.json"
    if not path.is_file():
        return {}
    try:
        return {r["relative"]: r["status"] for r in json.loads(path.read_text())["files"]}
    except ValueError:
        return {}


def wait_for(condition, timeout: float = 300.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def run_and_kill_a_worker(cmd: list[str], is_busy_worker: Callable[[psutil.Process], bool]) -> tuple[int, str]:
    """Start the CLI, SIGKILL the first descendant process that `is_busy_worker` picks while
    the run is going, and wait for the run to end. Returns (exit code, stderr)."""
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    parent = psutil.Process(proc.pid)

    def busy_worker() -> psutil.Process | None:
        try:
            children = parent.children(recursive=True)
        except psutil.Error:  # a process of the tree ended while it was walked
            return None
        for child in children:
            try:
                if is_busy_worker(child):
                    return child
            except psutil.Error:
                continue
        return None

    wait_for(lambda: busy_worker() is not None or proc.poll() is not None)
    victim = busy_worker()
    assert victim is not None, "the run finished before a worker could be killed"
    victim.send_signal(signal.SIGKILL)
    _, stderr = proc.communicate(timeout=600)
    return proc.returncode, stderr
