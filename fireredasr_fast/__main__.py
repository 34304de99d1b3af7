"""The command: `fireredasr-fast [options] INPUT...`, `python -m fireredasr_fast` (the CLI
itself is cli.py).

Two things around cli.main, both for the serial seconds of a run (docs/benchmarks.md, the
serial start, cut):

- First, before the CLI's imports (numpy, the pipeline, ~0.2 s), the workers' fork server
  is started when the command line's options say local CPU workers will run
  (workerstart.start_for_command): its own imports (torch, numba) are what the first
  worker waits for. A command that ends without a run (a usage error, --help) stops it.
- Last, once main() has returned, with every output, the journal and the report written
  and closed and the worker pools joined, the process ends through lifeline.exit_now: the
  threads joined, the atexit handlers run, stdout and stderr flushed, and the interpreter's
  teardown of torch, numba and onnxruntime (a serial half second) skipped.
"""

from __future__ import annotations

import sys
from typing import NoReturn

from fireredasr_fast.runner.lifeline import exit_now
from fireredasr_fast.runner.workerstart import start_for_command, stop_fork_server


def run() -> NoReturn:
    """The console entry point: the command line in sys.argv, its exit status the process's."""
    started = start_for_command(sys.argv[1:])
    code = 2
    try:
        from fireredasr_fast.cli import main

        code = main()
    finally:  # a usage error or --help (SystemExit) included
        if started and code == 2:
            stop_fork_server()
    exit_now(code)


if __name__ == "__main__":
    run()
