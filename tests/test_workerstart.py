"""Workers start from a fork server that has loaded torch and numba's compiler
(runner/workerstart.py, prefork.py): real pools of real processes on the tiny fixture model."""

from __future__ import annotations

import concurrent.futures as cf
import gc
import multiprocessing
import os
import subprocess
import sys

import pytest
from conftest import FIXTURES, ROOT, SAMPLES

from fireredasr_fast.engines import EngineSpec
from fireredasr_fast.runner.worker import init_process
from fireredasr_fast.runner.workerstart import START_ENV, preload_modules, worker_context

pytestmark = pytest.mark.skipif(
    "forkserver" not in multiprocessing.get_all_start_methods(), reason="no fork server on this platform"
)

SPEC = EngineSpec("firered", str(FIXTURES / "tiny_model"))
# What a FireRedASR worker has no use for: the VAD's and the Whisper engine's runtimes, and
# torch's compiler stack (model.py builds on the meta device without it).
# numpy's Fortran wrapper generator neither (kept lazy before numba's import, kernels.py).
NOT_IN_A_WORKER = (
    "onnxruntime", "silero_vad", "faster_whisper", "ctranslate2", "torch._dynamo", "sympy", "numpy.f2py.crackfortran",
)  # fmt: skip


def _state() -> dict:
    """In the worker: where it came from and what it has loaded."""
    parallel = sys.modules.get("numba.np.ufunc.parallel")
    state = {
        "parent": os.getppid(),
        "loaded": sorted(name for name in ("torch", "numba", *NOT_IN_A_WORKER) if name in sys.modules),
        "numba_threads_started": bool(parallel and parallel._is_initialized),
        "engine_loaded": sys.modules["fireredasr_fast.runner.worker"]._engine is not None,
        "frozen_objects": gc.get_freeze_count(),
        "collector_on": gc.isenabled(),
    }
    if "numba" in sys.modules:
        import torch
        from numba.core import config
        from numba.core.registry import cpu_target

        from fireredasr_fast.engines.firered import kernels

        state["numba_pool_size"] = config.NUMBA_NUM_THREADS
        state["torch_threads"] = torch.get_num_threads()
        # Filled by kernels.prepare_compiler (in the server) or by the first compile.
        state["typing_registries"] = len(cpu_target.typing_context._registries)
        if kernels._compiled.cache_info().currsize:
            state["kernels_compiled_here"] = sum(
                sum(kernel.stats.cache_misses.values()) for kernel in kernels._compiled()[1:]
            )
    return state


def test_workers_are_spawned_when_asked(monkeypatch):
    monkeypatch.setenv(START_ENV, "spawn")
    assert worker_context(SPEC).get_start_method() == "spawn"


def test_a_worker_is_forked_with_torch_and_numba_already_loaded():
    context = worker_context(SPEC)
    assert context.get_start_method() == "forkserver"
    with cf.ProcessPoolExecutor(1, mp_context=context) as pool:
        state = pool.submit(_state).result(timeout=300)
    # Forked by the server (not by this process), which had imported torch, and numba with
    # its compiler's registries (prefork.py); numba's thread pool is left to the worker.
    assert state["parent"] != os.getpid()
    assert {"torch", "numba"} <= set(state["loaded"])
    assert state["typing_registries"] > 0
    assert not state["numba_threads_started"]
    # What the server loaded is out of the collector's reach, so stays shared (prefork.py).
    assert state["frozen_objects"] > 10000
    assert preload_modules(SPEC)[-1] == "fireredasr_fast.runner.prefork"
    # The server imported with the collector off (forkstart.py); its workers collect.
    assert state["collector_on"]


def test_the_server_imports_with_the_collector_off_and_turns_it_back_on():
    """forkstart.py, the server's first import, turns the garbage collector off; prefork.py,
    its last, freezes what was loaded and turns it back on (in the server's order, here in a
    fresh interpreter as the server runs them)."""
    import subprocess

    modules = preload_modules(SPEC)
    code = (
        "import gc, importlib, json, sys\n"
        "seen = []\n"
        "for name in sys.argv[1:]:\n"
        "    importlib.import_module(name)\n"
        "    seen.append(gc.isenabled())\n"
        "print(json.dumps([seen, gc.get_freeze_count()]))\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", code, *modules], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    seen, frozen = __import__("json").loads(done.stdout)
    assert seen == [False] * (len(modules) - 1) + [True]
    assert frozen > 10000


def test_a_worker_builds_its_engine_without_what_it_does_not_need():
    context = worker_context(SPEC)
    with cf.ProcessPoolExecutor(1, mp_context=context, initializer=init_process, initargs=(SPEC, 1)) as pool:
        state = pool.submit(_state).result(timeout=300)
    assert state["engine_loaded"]
    assert state["numba_threads_started"]  # the engine's decoder kernels run in the worker
    assert not set(state["loaded"]) & set(NOT_IN_A_WORKER), state["loaded"]


def _init_state(spec: EngineSpec, threads: int) -> dict:
    context = worker_context(spec)
    with cf.ProcessPoolExecutor(1, mp_context=context, initializer=init_process, initargs=(spec, threads)) as pool:
        return pool.submit(_state).result(timeout=300)


def test_a_forked_worker_runs_the_plans_threads_and_loads_the_kernels_compiled():
    """numba read its configuration in the server, before the worker's thread count was set;
    the worker's pool and torch must still run the plan's count (numba's OpenMP pool would
    otherwise start at the server's count and set torch's to it), and the kernels come from
    numba's cache, not compiled again in each worker."""
    with cf.ProcessPoolExecutor(1, mp_context=worker_context(SPEC)) as pool:
        servers_count = pool.submit(_state).result(timeout=300)["numba_pool_size"]
    _init_state(SPEC, 1)  # the kernels compiled into numba's cache, if they were not there
    threads = 2 if servers_count == 1 else 1  # not the count the server's numba read
    state = _init_state(SPEC, threads)
    assert state["numba_threads_started"]
    assert (state["numba_pool_size"], state["torch_threads"]) == (threads, threads)
    assert state["kernels_compiled_here"] == 0


def test_a_server_started_early_is_the_one_the_workers_come_from():
    """start_fork_server (the CLI's, before it checks the model) and the workers' context
    share one server."""
    from multiprocessing import forkserver

    from fireredasr_fast.runner.workerstart import start_fork_server

    assert start_fork_server("firered")
    server = forkserver._forkserver._forkserver_pid
    assert worker_context(SPEC).get_start_method() == "forkserver"
    assert forkserver._forkserver._forkserver_pid == server


@pytest.mark.parametrize(("extra", "started"), [([], ["firered"]), (["--workers", "0"], [])])
def test_the_cli_starts_the_server_before_it_checks_the_model(monkeypatch, tmp_path, extra, started):
    """The server's imports overlap the main process's model check only if it starts first:
    here the model check fails, after the server was asked for (not with --workers 0)."""
    from fireredasr_fast import cli

    calls: list[str] = []
    monkeypatch.setattr(cli, "start_fork_server", calls.append)
    argv = ["--model-dir", str(tmp_path / "no-model"), "-o", str(tmp_path / "out"), *extra, str(tmp_path)]
    assert cli.main(argv) == 2
    assert calls == started


def test_a_batch_submitted_after_a_worker_died_comes_back_failed_not_raised():
    """A worker killed between two looks of the scheduler breaks the pool; the next submit
    must hand back a failed future (requeued and the group restarted like the batches in
    flight), not raise out of the run."""
    from concurrent.futures.process import BrokenProcessPool

    import psutil

    from fireredasr_fast.runner.plan import Plan
    from fireredasr_fast.runner.workers import LocalWorkers

    plan = Plan(
        workers=1, threads_per_worker=1, physical_cores=2, logical_cores=2, available_gb=1, model_gb=0, reason="test"
    )
    group = LocalWorkers(SPEC, plan)
    group.start()
    try:
        first = group.submit([])
        first.result(timeout=300)
        for child in psutil.Process().children(recursive=True):
            if child.pid in group._executor._processes:  # type: ignore[union-attr]
                child.kill()
        with pytest.raises(BrokenProcessPool):
            group.submit([]).result(timeout=300)  # may be submitted before the death is seen
        late = group.submit([])
        assert isinstance(late.exception(timeout=60), BrokenProcessPool)
        group.restart()
        assert group.submit([]).result(timeout=300)[0] == []
    finally:
        group.shutdown(hard=True)


@pytest.mark.parametrize(
    ("argv", "started"),
    [
        (["--model-dir", "m", "a.mp4"], ["firered"]),
        (["--engine", "whisper", "--workers", "2", "--", "a.mp4"], ["whisper"]),
        (["--device", "cuda", "--gpu", "auto", "a.mp4"], ["firered"]),
        (["--", "--workers", "0"], ["firered"]),  # inputs after --
        (["--workers", "0", "a.mp4"], []),
        (["--cluster", "auto", "a.mp4"], []),
        (["--device", "cuda", "a.mp4"], []),
        (["--gpu", "only", "a.mp4"], []),
        (["--check"], []),
        (["doctor", "--workers", "1"], []),
        (["--help"], []),
        (["--workers", "two", "a.mp4"], []),  # the CLI's parser says what is wrong
        (["--engine", "nemo", "a.mp4"], []),
    ],
)
def test_the_command_starts_the_server_only_for_local_cpu_workers(monkeypatch, argv, started):
    """The command's early start reads the options that decide local CPU workers and which
    engine they run (workerstart.start_for_command)."""
    from fireredasr_fast.runner import workerstart

    calls: list[str] = []
    monkeypatch.setattr(workerstart, "start_fork_server", lambda engine: calls.append(engine) or True)
    assert workerstart.start_for_command(argv) == bool(started)
    assert calls == started


# The command run with a spy on the fork server's start: what this process had imported when
# the server was asked for, and the server's process id.
_SPY = """
import runpy, sys
import multiprocessing.forkserver as forkserver
start = forkserver.ensure_running
def spy():
    if not hasattr(spy, "seen"):
        spy.seen = sorted(m for m in ("numpy", "torch", "fireredasr_fast.cli") if m in sys.modules)
        print("imported before the server:", spy.seen, file=sys.stderr, flush=True)
    start()
    print("server", forkserver._forkserver._forkserver_pid, file=sys.stderr, flush=True)
forkserver.ensure_running = spy
sys.argv = ["fireredasr-fast", *sys.argv[1:]]
runpy.run_module("fireredasr_fast", run_name="__main__")
"""


@pytest.mark.parametrize(
    ("extra", "named"), [([], "no-model"), (["--beam-size", "0"], "--beam-size"), (["--bogus"], "--bogus")]
)
def test_the_command_starts_the_server_before_its_imports_and_stops_it_when_no_run_follows(tmp_path, extra, named):
    """The server is asked for before the CLI's imports (numpy, the pipeline); a command that
    ends with a setup or usage error stops it (no server outlives the command, still
    importing) and still says what is wrong in one line."""
    import psutil

    argv = ["--model-dir", str(tmp_path / "no-model"), "--workers", "1", *extra, str(tmp_path)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", _SPY, *argv], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert lines[0] == "imported before the server: []"
    servers = {int(line.split()[1]) for line in lines if line.startswith("server ")}
    assert len(servers) == 1
    assert not psutil.pid_exists(servers.pop())
    errors = [line for line in lines if "error" in line]
    assert len(errors) == 1 and named in errors[0], lines


def test_a_pool_forks_its_first_worker_before_the_first_batch():
    """LocalWorkers starts its first worker when the pool starts (workers._start_a_worker),
    so its fork and engine build overlap the front end's first file; the next start on a
    batch that finds no idle worker, as before."""
    import time

    from fireredasr_fast.runner.plan import Plan
    from fireredasr_fast.runner.workers import LocalWorkers

    plan = Plan(
        workers=2, threads_per_worker=1, physical_cores=2, logical_cores=2, available_gb=1, model_gb=0, reason="test"
    )
    group = LocalWorkers(SPEC, plan)
    group.start()
    try:
        deadline = time.monotonic() + 300
        while not group._executor._processes and time.monotonic() < deadline:  # type: ignore[union-attr]
            time.sleep(0.05)
        assert len(group._executor._processes) == 1  # type: ignore[union-attr]
        assert group.submit([]).result(timeout=300)[0] == []
    finally:
        group.shutdown(hard=True)


def _model_copy(path):
    """The tiny fixture's model files (checkpoint.REQUIRED_FILES) copied to `path`, to damage."""
    from fireredasr_fast.engines.firered.checkpoint import REQUIRED_FILES

    path.mkdir()
    for name in REQUIRED_FILES:
        (path / name).write_bytes((FIXTURES / "tiny_model" / name).read_bytes())
    return path


def test_a_call_in_the_fork_server_runs_in_its_child_and_brings_its_error_back(tmp_path):
    """in_fork_server (the model's check, cli.py): the call runs in a process forked from the
    running server, in the background; its exception comes back through the future."""
    from multiprocessing import forkserver

    from fireredasr_fast.engines.firered.options import FireRedOptions
    from fireredasr_fast.errors import ModelDirError
    from fireredasr_fast.runner.workerstart import in_fork_server, start_fork_server

    assert start_fork_server("firered")
    assert in_fork_server("os:getppid").result(timeout=300) == forkserver._forkserver._forkserver_pid
    damaged = _model_copy(tmp_path / "model")
    (damaged / "dict.txt").write_text("<blank> 0\n", encoding="utf-8")
    check = in_fork_server("fireredasr_fast.engines.firered.checkpoint:check_model", damaged, FireRedOptions(), 30.0)
    with pytest.raises(ModelDirError, match=r"dict\.txt"):
        check.result(timeout=300)


def test_without_a_fork_server_the_call_runs_here_at_once():
    code = (
        "import os; from fireredasr_fast.runner.workerstart import in_fork_server; "
        "f = in_fork_server('os:getpid'); print(f.done(), f.result() == os.getpid())"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.stdout.split() == ["True", "True"], done.stderr


# The command, with a look at its main process's modules as it ends (exit_now runs atexit).
_MODULES_AT_EXIT = """
import atexit, runpy, sys
atexit.register(lambda: print("torch in the main process:", "torch" in sys.modules, file=sys.stderr, flush=True))
sys.argv = ["fireredasr-fast", *sys.argv[1:]]
runpy.run_module("fireredasr_fast", run_name="__main__")
"""


def _command(argv: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", _MODULES_AT_EXIT, *argv], capture_output=True, text=True, env=env,
                          timeout=600)  # fmt: skip


def test_the_command_checks_the_model_in_the_fork_server_and_never_imports_torch(tmp_path):
    """A run with local CPU workers on a machine without CUDA: its main process decodes while
    the model is checked in a child of the fork server, and never imports torch itself."""
    out = tmp_path / "out"
    done = _command(["--model-dir", str(FIXTURES / "tiny_model"), "--workers", "1", "--formats", "srt",
                     "--no-progress", "-o", str(out), str(SAMPLES / "aishell_zh.mkv")])  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "torch in the main process: False" in done.stderr.splitlines()
    assert (out / "aishell_zh.srt").read_text(encoding="utf-8").strip()


def test_a_model_refused_beside_the_start_is_one_line_and_leaves_nothing(tmp_path):
    """The same run with a damaged model: refused once its check (running beside the front
    end's start) fails: one error line (not the plan's), status 2, and nothing made: the new
    output folder, its parent and the lock file in it are gone again."""
    damaged = _model_copy(tmp_path / "model")
    data = (damaged / "model.pth.tar").read_bytes()
    (damaged / "model.pth.tar").write_bytes(data[: len(data) // 2])
    out = tmp_path / "new" / "out"
    done = _command(["--model-dir", str(damaged), "--workers", "1", "--no-progress", "-o", str(out),
                     str(SAMPLES / "aishell_zh.mkv")])  # fmt: skip
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if not line.startswith("torch in the main process")]
    assert len(lines) == 1 and "model.pth.tar: refused" in lines[0], done.stderr
    assert not (tmp_path / "new").exists()
