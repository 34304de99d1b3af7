"""Imported by the workers' fork server only (workerstart.py), last, never by a worker or
the runner: importing it is the server's preparation, once for all the workers it forks
(docs/tuning.md#worker-start-up-and-memory).

- For FireRedASR workers (the server imported that engine) it sets up numba's compiler,
  which each worker would otherwise do for itself (kernels.prepare_compiler). Nothing here
  loads or runs a kernel or a torch operation: their thread pools must start in the
  workers, after the fork.
- It then moves every object loaded so far out of the garbage collector's reach
  (gc.freeze): a collection in a worker would otherwise write to every page of those
  objects and so give the worker its own copy of pages it shares with the server.
"""

from __future__ import annotations

import gc
import sys

if "fireredasr_fast.engines.firered.engine" in sys.modules:
    from fireredasr_fast.engines.firered import kernels

    kernels.prepare_compiler()

gc.freeze()
