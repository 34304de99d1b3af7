"""Running many files on many workers: the scheduler (scheduler.py) wires the stages, worker
processes build an engine once and recognise batches (worker.py), plan.py sizes the pool,
gpu.py decides when a GPU worker joins, journal.py records what is done, cluster.py puts the
workers on a Ray cluster."""
