"""Imported by the workers' fork server only (workerstart.py), first: the garbage collector
is off while the server imports torch, numba and the engine. Those imports make hundreds of
thousands of objects that all live on, and with torch loaded each full collection walks them
all: about a sixth of the server's preload, before which no worker can start
(docs/benchmarks.md, the serial part of a run). prefork.py, imported last, freezes what was
loaded and turns the collector back on; a worker turns it on too (worker.init_process), in
case the server's preload stopped short. This is Python's own recipe for a process that
forks (gc.freeze): disable early, freeze before forking, enable in the children.
"""

from __future__ import annotations

import gc

gc.disable()
