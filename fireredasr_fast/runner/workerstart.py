"""How local worker processes start: forked from a server that has already loaded what
every worker needs, so that a second worker costs little more than its own work.

A worker started with `spawn` is a fresh interpreter that imports torch, numba and the
engine and initialises numba's compiler for itself: seconds of CPU and a large share of its private
memory before its first batch (docs/tuning.md#worker-start-up-and-memory).
Python's fork server (multiprocessing "forkserver") is one process, started once per run
from a clean interpreter, that imports the modules named here (`preload_modules`) and then
forks a worker whenever the pool needs one: every worker shares those pages copy-on-write.

What the server may do is limited by what a fork copies: only the forking thread. So the
server imports, but never computes: no torch operation (its OpenMP pool), no VAD or engine
built, no numba kernel compiled (that starts numba's pool); the engine may set up what
needs no thread (prefork.py: numba's compiler registries for FireRedASR). Each worker
still pins its own thread counts (plan.set_process_threads) and builds its engine on the
shared, memory-mapped weights (worker.load_engine). Where there is no fork server
(Windows), or it cannot start, workers are spawned.

The command starts the server first thing (start_for_command, from `fireredasr_fast.__main__`
before the CLI's own imports), so that its imports run on another core while the main
process imports the pipeline and decodes the first file; the model's check runs in a child
of it (in_fork_server), and the worker pool later reuses it. That start reads only the few
options that decide whether local CPU workers will run (their full names); the CLI asks
again once it has parsed everything (start_fork_server does nothing when a server runs),
and a command that ends without a run (a usage error, --help) stops the server it started
(stop_fork_server). This module and
what it imports at the top stay light (no numpy): they are the command's first imports.

The server is a child of the run's main process: it exits when the main process does (it
watches a pipe only the main process holds), and its workers are tied to the main process
by the lifeline (lifeline.py: the parent pipe they watch is the main process's).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import multiprocessing
import multiprocessing.context
import os
import signal
import threading
from typing import TYPE_CHECKING, Any, NoReturn

from fireredasr_fast.engines import DEFAULT_ENGINE, ENGINES

from .lifeline import quiet_start

if TYPE_CHECKING:
    import concurrent.futures as cf

    from fireredasr_fast.engines import EngineSpec

log = logging.getLogger(__name__)

# --device -> the GPU workers it implies when --gpu is not given (auto: CPU workers, and GPU
# workers when GPU memory is free; only: no CPU workers).
DEVICE_GPU_MODES = {"auto": "auto", "cpu": "off", "cuda": "only"}
DEFAULT_DEVICE = "auto"

# Imported by the server for every engine: the worker's own code (and through it the
# pipeline's modules that unpickling a batch needs).
WORKER_MODULE = "fireredasr_fast.runner.worker"
# Imported first: the garbage collector off while the server imports (forkstart.py).
START_MODULE = "fireredasr_fast.runner.forkstart"
# Imported last: freezes what the server loaded (prefork.py).
PREPARE_MODULE = "fireredasr_fast.runner.prefork"


def preload_modules(spec: EngineSpec | str) -> list[str]:
    """What the fork server imports for workers of `spec`'s engine (a spec or its name), in order."""
    engine = spec if isinstance(spec, str) else spec.engine
    engine_module = ENGINES[engine][0].split(":")[0]
    return [START_MODULE, "torch", WORKER_MODULE, engine_module, PREPARE_MODULE]


# "spawn" here starts workers the old way (a fresh interpreter each).
START_ENV = "FIREREDASR_FAST_WORKER_START"


def start_fork_server(engine: str) -> bool:
    """Start the workers' fork server for `engine` now, unless workers are to be spawned
    (START_ENV, or no fork server on this platform) or one runs already. It does its imports
    while this process goes on. False when workers will be spawned."""
    wanted = os.environ.get(START_ENV, "forkserver")
    if wanted != "forkserver" or "forkserver" not in multiprocessing.get_all_start_methods():
        return False
    from multiprocessing import forkserver

    multiprocessing.get_context("forkserver").set_forkserver_preload(preload_modules(engine))
    try:
        # Started inside quiet_start: the server, and every worker it forks, begin with the
        # terminal's signals blocked (the signal mask survives fork and exec); a SIGHUP to the
        # group must not end the server the workers are forked from.
        with quiet_start():
            forkserver.ensure_running()
    except OSError as exc:
        log.warning("worker fork server did not start (%s): workers are spawned", exc)
        return False
    return True


def worker_context(spec: EngineSpec) -> multiprocessing.context.BaseContext:
    """The multiprocessing context local CPU workers start from: the fork server (started
    here, once per process, with `spec`'s modules preloaded) where the platform has one,
    else, or with START_ENV=spawn, spawn. A server already running (started by
    start_fork_server, or an earlier run in this process) is reused with what it preloaded then."""
    if not start_fork_server(spec.engine):
        return multiprocessing.get_context("spawn")
    return multiprocessing.get_context("forkserver")


def gpu_mode(gpu: str | None, device: str) -> str:
    """--gpu, else what --device implies."""
    return gpu or DEVICE_GPU_MODES[device]


def local_cpu_workers(cluster: str | None, workers: int | None, gpu: str) -> bool:
    """Whether a run with these options has CPU workers on this machine (and so a fork server)."""
    return not cluster and workers != 0 and gpu != "only"


class _PreParseError(Exception):
    pass


class _PreParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _PreParseError(message)


def _pre_parser() -> argparse.ArgumentParser:
    """The options that decide whether a run has local CPU workers, and which engine they run;
    everything else is left for the CLI's parser. Abbreviations are not read (allow_abbrev):
    an abbreviated option counts as not given here, and the CLI decides again."""
    p = _PreParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    p.add_argument("--engine", choices=tuple(ENGINES), default=DEFAULT_ENGINE)
    p.add_argument("--workers", type=int)
    p.add_argument("--cluster")
    p.add_argument("--device", choices=tuple(DEVICE_GPU_MODES), default=DEFAULT_DEVICE)
    p.add_argument("--gpu", choices=tuple(dict.fromkeys(DEVICE_GPU_MODES.values())))
    p.add_argument("--check", "-h", "--help", action="store_true")
    return p


def start_for_command(argv: list[str]) -> bool:
    """Start the fork server for the command line `argv` (without the program's name) before
    the CLI imports anything heavy, when its options say local CPU workers will run: not for
    `doctor`, --check or --help, and not where the options cannot be read (the CLI's parser
    then says what is wrong). True when a server was started here."""
    if argv[:1] == ["doctor"]:
        return False
    options = argv[: argv.index("--")] if "--" in argv else argv  # inputs follow a --
    try:
        args, _ = _pre_parser().parse_known_args(options)
    except (_PreParseError, argparse.ArgumentError):
        return False
    if args.check or not local_cpu_workers(args.cluster, args.workers, gpu_mode(args.gpu, args.device)):
        return False
    return start_fork_server(args.engine)


def call(target: str, *args: Any) -> Any:
    """The function `target` names ("module:function", as engines/__init__.py names engines)
    called with `args`: sent by name, a call needs no import of its module by the sender."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)(*args)


def in_fork_server(target: str, *args: Any) -> cf.Future:
    """`call(target, *args)` in a process forked from the running fork server, in the
    background: the future of its result (or exception). For the model's check (cli.py): the
    torch it needs is the server's import, and this process decodes its first file meanwhile
    instead of importing torch for itself (docs/tuning.md#worker-start-up-and-memory). With
    no fork server, or one that cannot fork, the call runs in this process (with no server:
    now, and the future is done when returned)."""
    import concurrent.futures as cf  # not at the top: this module is the command's first import

    future: cf.Future = cf.Future()
    if _fork_server_pid() is None:
        _settle(future, target, args)
    else:
        thread = threading.Thread(target=_call_in_child, args=(future, target, args), name="fork-server-call")
        thread.daemon = True
        thread.start()
    return future


def _call_in_child(future: cf.Future, target: str, args: tuple[Any, ...]) -> None:
    import concurrent.futures as cf
    from concurrent.futures.process import BrokenProcessPool

    try:
        # quiet_start: the child begins with the terminal's signals blocked, as the workers do.
        with quiet_start(), cf.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("forkserver")) as pool:
            child = pool.submit(call, target, *args)
        exception = child.exception()
    except (BrokenProcessPool, OSError):  # the server could not fork: here instead
        _settle(future, target, args)
        return
    if isinstance(exception, BrokenProcessPool):
        _settle(future, target, args)
    elif exception is not None:
        future.set_exception(exception)
    else:
        future.set_result(child.result())


def _settle(future: cf.Future, target: str, args: tuple[Any, ...]) -> None:
    try:
        future.set_result(call(target, *args))
    except Exception as exc:
        future.set_exception(exc)


def _fork_server_pid() -> int | None:
    from multiprocessing import forkserver

    return getattr(forkserver._forkserver, "_forkserver_pid", None)


def stop_fork_server() -> None:
    """Stop this process's fork server now, if one runs: for a command that ends without the
    run it was started for. Killed rather than asked (closing its pipe), because it would
    notice only once its imports are done, seconds later."""
    from multiprocessing import forkserver

    server = forkserver._forkserver
    pid = _fork_server_pid()
    if pid is None:
        return
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(OSError, ChildProcessError):
        server._stop()
