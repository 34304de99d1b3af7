"""The fault catalogue, signals: whatever signal ends or upsets a run, it ends cleanly.

Real processes and real signals throughout: the CLI with the tiny fixture model and two
worker processes on short clips, and, for the process ties alone, small Python parents with
a real multiprocessing child or a real ffmpeg. docs/reliability.md lists each
case, what is promised and what happens."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from conftest import FIXTURES, ROOT, SAMPLES, run_ffmpeg
from runs import FORMATS, cli_command, env, journal, wait_for

from fireredasr_fast.runner import scheduler
from fireredasr_fast.runner.lifeline import exit_quietly_on_interrupt
from fireredasr_fast.runner.scheduler import DEADLINE_ENV, BatchDeadline

MODEL = FIXTURES / "tiny_model"
SHORT_DEADLINES = "floor=5,factor=5,first=120"  # a stopped worker is found within seconds


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """A short Mandarin clip first (its file is done early: the signal's cue), then longer
    English ones still in the works when the signal lands."""
    folder = tmp_path_factory.mktemp("clips")
    shutil.copy(SAMPLES / "aishell_zh.mkv", folder / "0 zh.mkv")
    for i in (1, 2, 3):
        shutil.copy(SAMPLES / "two_cities.mp4", folder / f"{i} en.mp4")
    return folder


class Run:
    """The CLI in its own session (so a Ctrl-C can go to its whole group, as a terminal sends
    it), every descendant process it ever had remembered, its output in files."""

    def __init__(self, tmp_path: Path, inputs: Path, **extra_env: str) -> None:
        self.out = tmp_path / "out"
        self.stderr_path = tmp_path / "stderr.txt"
        self.stdout_path = tmp_path / "stdout.txt"
        cmd = cli_command(MODEL, self.out, inputs, workers=2)
        with self.stdout_path.open("w") as stdout, self.stderr_path.open("w") as stderr:
            self.proc = subprocess.Popen(
                cmd, env={**env(), **extra_env}, start_new_session=True, stdout=stdout, stderr=stderr
            )
        self.main = psutil.Process(self.proc.pid)
        self.seen: dict[int, psutil.Process] = {}

    def watch(self) -> None:
        try:
            for child in self.main.children(recursive=True):
                self.seen.setdefault(child.pid, child)
        except psutil.Error:
            pass

    def until(self, condition) -> None:
        """Wait (remembering descendants) until `condition()` holds; the run must still go on."""

        def check() -> bool:
            self.watch()
            return condition() or self.proc.poll() is not None

        wait_for(check, timeout=300)
        self.watch()
        assert self.proc.poll() is None, f"the run ended first:\n{self.stderr}"

    def workers(self) -> list[psutil.Process]:
        """Spawned children of the main process, and the processes its fork server forked
        (workerstart.py: they carry the server's command line)."""
        found = []
        for process in self.main.children(recursive=True):
            try:
                cmdline = " ".join(process.cmdline())
                forked = "forkserver" in cmdline and process.ppid() != self.main.pid
            except psutil.Error:
                continue
            if ("spawn_main" in cmdline or forked) and "resource_tracker" not in cmdline:
                found.append(process)
        return found

    def send(self, name: str, group: bool = False) -> None:
        self.watch()
        if group:
            os.killpg(self.proc.pid, getattr(signal, name))
        else:
            os.kill(self.proc.pid, getattr(signal, name))

    def wait(self) -> int:
        return self.proc.wait(timeout=300)

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def report(self) -> dict:
        return json.loads((self.out / "run-report.json").read_text())

    def survivors(self, within: float = 10.0) -> list[psutil.Process]:
        """Descendants still alive `within` seconds from now at the latest (zombies count as gone)."""
        end = time.monotonic() + within
        while True:
            alive = [p for p in self.seen.values() if _alive(p)]
            if not alive or time.monotonic() > end:
                return alive
            time.sleep(0.1)


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _busy_worker(run: Run, seconds: float = 0.1) -> psutil.Process:
    """The worker that spent the most CPU over `seconds` (recognising a batch), else the first."""
    workers = run.workers()
    before = {w.pid: _cpu(w) for w in workers}
    time.sleep(seconds)
    return max(workers, key=lambda w: _cpu(w) - before[w.pid])


def _cpu(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
    except psutil.Error:
        return 0.0
    return times.user + times.system


def _first_file_done(run: Run):
    return lambda: "done" in journal(run.out).values()


def _assert_interrupted_cleanly(run: Run, code: int) -> None:
    assert code == 130, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    statuses = journal(run.out)
    # A batch due back within the grace may finish, so on a slow machine every file can end
    # done; none may fail, and whatever is not done is "interrupted".
    assert set(statuses.values()) <= {"done", "interrupted"}, statuses
    summary = run.report()["summary"]
    assert summary["interrupted"] and summary["files_failed"] == 0
    interrupted = sum(status == "interrupted" for status in statuses.values())
    assert summary["files_interrupted"] == interrupted
    if interrupted:
        assert "interrupted  " in run.stdout  # the closing table's status column
    assert not list(run.out.rglob("*.tmp"))
    assert not run.survivors(), "a child process outlived the run"


# ------------------------------------------------------------ signals to the main process


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signals", "group"),
    [(("SIGINT",), True), (("SIGTERM",), False), (("SIGHUP",), False), (("SIGINT", "SIGINT"), True)],
    ids=["ctrl-c", "sigterm", "sighup", "double-ctrl-c"],
)
def test_stop_signal_mid_run_interrupts_cleanly(clips, tmp_path, signals, group):
    run = Run(tmp_path, clips)
    run.until(_first_file_done(run))
    for name in signals:
        run.send(name, group)
        time.sleep(0.2)
    _assert_interrupted_cleanly(run, run.wait())


@pytest.mark.slow
def test_ctrl_c_while_the_workers_start_up(clips, tmp_path):
    run = Run(tmp_path, clips)
    run.until(lambda: bool(run.workers()))  # the workers are still importing and loading the model
    run.send("SIGINT", group=True)
    code = run.wait()
    assert code == 130, run.stderr
    assert "Traceback" not in run.stderr and "KeyboardInterrupt" not in run.stderr, run.stderr
    assert set(journal(run.out).values()) <= {"interrupted", "done"}
    assert not run.survivors()


@pytest.mark.slow
def test_sigkill_of_the_main_process_takes_every_child_with_it(clips, tmp_path):
    run = Run(tmp_path, clips)
    run.until(lambda: _first_file_done(run)() and bool(run.workers()))
    stopped = run.workers()[0]
    stopped.suspend()  # a stopped worker runs no code of its own: only the kernel can end it
    run.send("SIGKILL")
    assert run.wait() == -signal.SIGKILL
    assert len(run.seen) >= 2
    assert not run.survivors(), "children outlived a SIGKILLed run"


# ------------------------------------------------------------ signals to a worker


@pytest.mark.slow
def test_stopped_worker_is_killed_at_its_deadline_and_its_batch_retried(clips, tmp_path):
    # Two more English files: work still to do, with batches in flight, once the first is done.
    folder = Path(shutil.copytree(clips, tmp_path / "clips"))
    for i in (4, 5):
        shutil.copy(SAMPLES / "two_cities.mp4", folder / f"{i} en.mp4")
    run = Run(tmp_path, folder, **{DEADLINE_ENV: SHORT_DEADLINES})
    run.until(lambda: _first_file_done(run)() and bool(run.workers()))
    victim = _busy_worker(run)  # one with a batch: an idle one stopped would only lose none
    victim.suspend()
    code = run.wait()
    assert code == 0, run.stderr
    assert set(journal(run.out).values()) == {"done"} and len(journal(run.out)) == 6
    for name in ("0 zh", "1 en", "2 en", "3 en", "4 en", "5 en"):
        for fmt in FORMATS.split(","):
            assert (run.out / f"{name}.{fmt}").is_file()
    workers = run.report()["summary"]["workers"]
    assert workers["batches_timed_out"] >= 1 and workers["batches_retried"] >= 1
    assert "ran past its deadline" in run.stderr
    assert not _alive(victim)
    assert "Traceback" not in run.stderr


# ------------------------------------------------------------ the ties, without a model

_PARENT = """
import concurrent.futures as cf
import multiprocessing
import sys
import time

sys.path.insert(0, {root!r})
from fireredasr_fast.runner.lifeline import attach


def child(_):
    while True:
        sum(range(10000))  # busy, as a worker in a batch


if __name__ == "__main__":
    ctx = multiprocessing.get_context({method!r})
    pool = cf.ProcessPoolExecutor(1, mp_context=ctx, initializer=attach, initargs=({kernel},))
    pool.submit(child, 0)
    time.sleep(3600)
"""


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
@pytest.mark.parametrize("kernel", [True, False], ids=["kernel-signal", "watchdog"])
def test_a_pool_process_dies_with_its_parent(tmp_path, kernel, method):
    """Workers are forked from a fork server (workerstart.py) where there is one: their
    parent is then the server, which exits with the main process; the kernel's signal
    follows the server, the watchdog the main process's pipe."""
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(_PARENT).format(root=str(ROOT), kernel=kernel, method=method))
    parent = subprocess.Popen([sys.executable, str(script)], env=env())
    main = psutil.Process(parent.pid)
    wait_for(lambda: any(_busy(c) for c in _children(main) if "resource_tracker" not in _cmd(c)), 60)
    children = _children(main)
    busy = [c for c in children if "resource_tracker" not in _cmd(c) and _busy(c)]
    if kernel:
        busy[0].suspend()  # only the kernel's death signal ends a stopped process
    parent.kill()
    parent.wait()
    end = time.monotonic() + 10
    while any(_alive(c) for c in children) and time.monotonic() < end:
        time.sleep(0.1)
    assert not [c for c in children if _alive(c)]


def _busy(process: psutil.Process) -> bool:
    try:
        return process.cpu_times().user > 0.3
    except psutil.Error:
        return False


def _children(process: psutil.Process) -> list[psutil.Process]:
    try:
        return process.children(recursive=True)
    except psutil.Error:
        return []


def _cmd(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


_READER = """
import sys
sys.path.insert(0, {root!r})
from fireredasr_fast.audio import decode_audio
decode_audio({path!r})
"""


def test_ffmpeg_ends_when_the_process_reading_it_is_killed(tmp_path):
    media = tmp_path / "long.flac"
    run_ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1800:sample_rate=16000", str(media))
    script = tmp_path / "reader.py"
    script.write_text(_READER.format(root=str(ROOT), path=str(media)))
    reader = subprocess.Popen([sys.executable, str(script)], env=env())
    main = psutil.Process(reader.pid)
    wait_for(lambda: any("ffmpeg" in c.name() for c in _children(main)), 60)
    ffmpeg = [c for c in _children(main) if "ffmpeg" in c.name()]
    main.suspend()  # the pipe fills; ffmpeg waits to write
    time.sleep(0.3)
    reader.kill()
    reader.wait()
    end = time.monotonic() + 10
    while any(_alive(c) for c in ffmpeg) and time.monotonic() < end:
        time.sleep(0.1)
    assert not [c for c in ffmpeg if _alive(c)]


# ------------------------------------------------------------ in-process parts


def test_batch_deadline_is_generous_first_then_follows_the_measured_speed(monkeypatch):
    deadline = BatchDeadline(floor=10.0, factor=4.0, first=600.0)
    assert deadline.allowance(60.0, None) == 600.0  # first batch: the model loads, speed unknown
    assert deadline.allowance(60.0, 0.5) == 120.0  # 4 x 60 s x 0.5 s per audio second
    assert deadline.allowance(1.0, 0.5) == 10.0  # never below the floor
    monkeypatch.setenv(DEADLINE_ENV, "floor=2,factor=3,first=30")
    assert BatchDeadline.from_env() == BatchDeadline(2.0, 3.0, 30.0)
    monkeypatch.setenv(DEADLINE_ENV, "floor=-1")
    assert BatchDeadline.from_env() == BatchDeadline()  # refused with a warning, defaults kept
    with pytest.raises(ValueError, match="floor"):
        BatchDeadline(floor=float("nan"))


def test_stop_handler_escalates_and_survives_a_closed_terminal(monkeypatch):
    flag = scheduler._StopFlag()
    closed = open(os.devnull, "w")  # noqa: SIM115
    closed.close()
    monkeypatch.setattr(sys, "stderr", closed)  # a hang-up took the terminal away
    flag._handle(signal.SIGHUP, None)
    assert flag.graceful.is_set() and not flag.hard.is_set()
    flag._handle(signal.SIGTERM, None)
    assert flag.hard.is_set() and flag.grace_over()


def test_ctrl_c_outside_the_run_exits_130_with_one_line(monkeypatch, capsys, tmp_path):
    from fireredasr_fast import cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C while the inputs are listed (before the run's handler)

    monkeypatch.setattr(cli, "collect_inputs", interrupted)
    before = signal.getsignal(signal.SIGINT)
    code = cli.main(["--model-dir", str(MODEL), "--no-progress", "-o", str(tmp_path / "out"), str(tmp_path)])
    assert code == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "interrupted"
    assert signal.getsignal(signal.SIGINT) is before
    assert exit_quietly_on_interrupt(lambda: 0)() == 0
