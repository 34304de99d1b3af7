"""Imported by the workers' fork server only (workerstart.py), never by a worker or the
runner: importing it is the server's preparation for FireRedASR workers. It sets up
numba's compiler, once, so that every worker forked afterwards shares it instead of spending
a second and tens of MB each (docs/tuning.md#worker-start-up-and-memory). Nothing here
loads or runs a kernel or a torch operation: their thread pools must start in the workers,
after the fork (kernels.prepare_compiler)."""

from __future__ import annotations

from fireredasr_fast.engines.firered import kernels

kernels.prepare_compiler()
