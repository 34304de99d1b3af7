"""Imported by the workers' fork server only (workerstart.py), last, never by a worker or
the runner: it moves every object the server loaded out of the garbage collector's reach
(gc.freeze). A collection in a worker would otherwise write to every page of those objects
and so give the worker its own copy of pages it shares with the server
(docs/tuning.md#worker-start-up-and-memory).

numba is deliberately not loaded in the server: workers forked after it was imported spent
several times the CPU on the same batches (measured, same page); each worker imports it.
"""

from __future__ import annotations

import gc

gc.freeze()
