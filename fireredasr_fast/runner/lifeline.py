"""No process outlives the run: what ties each child process to the run's main process.

Whatever ends the main process (SIGKILL included), its children follow within a moment:

- Worker and VAD processes (multiprocessing) call `attach` first thing. On Linux it
  asks the kernel for SIGKILL when their parent dies (PR_SET_PDEATHSIG), which also ends a
  stopped (SIGSTOP) or busy process; everywhere, a watchdog thread waits on the pipe
  multiprocessing keeps from the main process (`parent_process().sentinel`), which the kernel
  closes when that process dies, and exits the process then. Workers forked from the fork
  server (workerstart.py) have the server as their parent: they let go of the pipe that keeps
  the server alive, so the server exits when the main process does and the kernel's signal
  follows (`_leave_fork_server_pipe`).
- ffmpeg writes its samples into a pipe only the main process reads: when that process
  dies, ffmpeg's next write fails (EPIPE) and it exits (audio.decode_audio).

The kernel sends the death signal when the *thread* that started the child ends, not the
process, so only worker processes ask for it: the run's own thread starts them and outlives
them. VAD processes, started by whichever front-end thread first needs one, rely on the
watchdog.

Ctrl-C reaches the whole process group, children included; only the main process decides
what to do with it. Children are started with SIGINT and SIGHUP blocked (`quiet_start`) and
ignore them once they run, so a Ctrl-C that lands while a child is still starting up prints
no traceback from the child. See docs/reliability.md.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import NoReturn

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# Signals the main process handles for the whole group (a terminal's Ctrl-C and hang-up).
GROUP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGHUP") if hasattr(signal, name))
# How a child ends when its parent is gone: the code multiprocessing gives a killed process.
ORPHAN_EXIT_CODE = 128 + 9
INTERRUPTED_EXIT_CODE = 130  # the shell's code for a command ended by Ctrl-C


def attach(kernel_signal: bool) -> None:
    """In a child process: end it when the main process ends (see the module docstring)."""
    for sig in GROUP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, GROUP_SIGNALS)  # blocked by quiet_start
    parent = multiprocessing.parent_process()
    if parent is not None:
        _leave_fork_server_pipe()
    if kernel_signal:
        _ask_kernel_for_sigkill()
    if parent is None:
        return
    if not parent.is_alive():  # died before the request above was in place
        os._exit(ORPHAN_EXIT_CODE)
    threading.Thread(target=_watch, args=(parent.sentinel,), name="lifeline", daemon=True).start()


def _leave_fork_server_pipe() -> None:
    """A process forked from the fork server (workerstart.py) is handed the write end of the
    pipe whose end-of-file tells the server that the main process is gone, so that it could
    start processes of its own from the server. Workers start none; holding it would keep the
    server, their parent, alive after the main process died, and the kernel's death signal
    with it (a stopped worker would then outlive the run). Spawned processes hold no such end."""
    from multiprocessing import forkserver

    server = forkserver._forkserver  # type: ignore[attr-defined]
    fd = getattr(server, "_forkserver_alive_fd", None)
    if fd is None:
        return
    server._forkserver_alive_fd = None
    with contextlib.suppress(OSError):
        os.close(fd)


def _ask_kernel_for_sigkill() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch(sentinel: int) -> None:
    multiprocessing.connection.wait([sentinel])  # readable (EOF) once the parent is gone
    os._exit(ORPHAN_EXIT_CODE)


@contextlib.contextmanager
def quiet_start() -> Iterator[None]:
    """Start child processes inside this block: they begin with SIGINT and SIGHUP blocked
    (a signal mask is inherited across fork and exec); `attach` then ignores and unblocks
    them. Signals that arrive meanwhile reach the main process's other threads or wait."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, GROUP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


# How long a pool's processes get to exit on their own at the end of a run before they are
# killed (a stopped or hung process never would).
QUIT_SECONDS = 10.0


def stop_pool(executor: object, hard: bool) -> None:
    """Shut a concurrent.futures pool down without ever waiting on a hung or stopped process:
    `hard` kills its processes at once; otherwise they get QUIT_SECONDS to finish and exit,
    then the rest are killed. Other executors (Ray's, the inline one) just shut down."""
    processes = list((getattr(executor, "_processes", None) or {}).values())
    if hard:
        kill_processes(processes)
    executor.shutdown(wait=False, cancel_futures=True)  # type: ignore[attr-defined]
    end = time.monotonic() + (0.0 if hard else QUIT_SECONDS)
    for process in processes:
        process.join(max(0.0, end - time.monotonic()))
    kill_processes(processes)
    for process in processes:
        process.join(QUIT_SECONDS)


def kill_processes(processes: list) -> None:
    """SIGKILL these processes: SIGTERM waits while a process is stopped (SIGSTOP)."""
    for process in processes:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            process.kill()


def exit_quietly_on_interrupt(main: Callable[..., int]) -> Callable[..., int]:
    """A Ctrl-C outside the run's own handling (loading the model, probing the inputs,
    printing the table) ends the command with one line and exit 130, not a traceback."""

    @functools.wraps(main)
    def wrapper(*args: object, **kwargs: object) -> int:
        main_thread = threading.current_thread() is threading.main_thread()
        command_line = not args and kwargs.get("argv") is None  # not called from Python with argv
        try:
            return main(*args, **kwargs)
        except KeyboardInterrupt:
            # A second Ctrl-C while the line is printed changes nothing.
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main_thread else None
            with contextlib.suppress(OSError, ValueError):
                print("\ninterrupted", file=sys.stderr, flush=True)
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
            return INTERRUPTED_EXIT_CODE
        finally:
            if main_thread and command_line:
                # The command is over; what is left is the interpreter's exit (joining the
                # pools' threads): a Ctrl-C now (the second of a quick stop) would only turn
                # the exit status into a death by SIGINT and a traceback.
                signal.signal(signal.SIGINT, signal.SIG_IGN)

    return wrapper


def exit_now(code: int) -> NoReturn:
    """End the command with `code` the way the interpreter would, less its teardown: the
    non-daemon threads joined and their exit hooks run (concurrent.futures'), the atexit
    handlers run (logging's flush, multiprocessing's finalizers: the resource tracker is
    told of every semaphore), stdout and stderr flushed; then the process exits without
    freeing its modules one by one. With torch, numba and onnxruntime loaded that teardown
    is a serial half second at the end of every run (docs/benchmarks.md, the serial start,
    cut). Only for the command line, once the run has written and closed everything: a
    caller's own Python objects are never finalised."""
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None and threading.current_thread() is threading.main_thread():
        shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
