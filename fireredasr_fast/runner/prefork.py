"""Imported by the workers' fork server only (workerstart.py), last, never by a worker or
the runner. It lets each engine the server loaded prepare what its workers would otherwise
each set up for themselves, as long as that starts no thread (the engine module's
`prepare_fork_server`; FireRedASR: numba's compiler registries, not its thread pool), then
moves every object the server loaded out of the garbage collector's reach (gc.freeze). A
collection in a worker would otherwise write to every page of those objects and so give the
worker its own copy of pages it shares with the server
(docs/tuning.md#worker-start-up-and-memory), and turns the collector back on (forkstart.py).
"""

from __future__ import annotations

import gc
import sys

from fireredasr_fast.engines import ENGINES

for _target, _ in ENGINES.values():
    _prepare = getattr(sys.modules.get(_target.split(":")[0]), "prepare_fork_server", None)
    if _prepare is not None:
        _prepare()

gc.freeze()
gc.enable()  # off since forkstart.py, the server's first import
