"""Segments -> batches: the runner's padded-seconds batches and the engine's length groups."""

from __future__ import annotations

import itertools
import random

import numpy as np

from fireredasr_fast.batching import Batch, SegmentJob, group_by_length, make_batches
from fireredasr_fast.results import SAMPLE_RATE


def _cost(lengths: list[int], groups: list[list[int]], overhead: float) -> float:
    return sum(max(lengths[i] for i in g) * (len(g) + overhead) for g in groups)


def _all_runs(order: list[int]) -> list[list[list[int]]]:
    """Every split of `order` into consecutive runs."""
    splits = []
    for cuts in itertools.product([False, True], repeat=max(len(order) - 1, 0)):
        groups, current = [], [order[0]]
        for item, cut in zip(order[1:], cuts, strict=True):
            if cut:
                groups.append(current)
                current = []
            current.append(item)
        splits.append([*groups, current])
    return splits


def test_group_by_length_finds_the_cheapest_split_within_the_budget() -> None:
    rng = random.Random(0)
    for _ in range(200):
        lengths = [rng.choice([0, rng.randint(1, 50), rng.randint(200, 6000)]) for _ in range(rng.randint(1, 9))]
        budget = rng.choice([300, 6000, 40000])
        overhead = rng.choice([0.0, 0.7, 1.5, 4.0])
        groups = group_by_length(lengths, budget, overhead)
        nonzero = [i for i, n in enumerate(lengths) if n > 0]
        assert sorted(i for g in groups for i in g) == nonzero  # every item once, empties out
        for g in groups:
            assert len(g) == 1 or len(g) * max(lengths[i] for i in g) <= budget
        if not nonzero:
            assert groups == []
            continue
        # Brute force over every split of the longest-first order that fits the budget.
        order = [g for group in groups for g in group]
        assert [lengths[i] for i in order] == sorted((lengths[i] for i in nonzero), reverse=True)
        feasible = [
            split
            for split in _all_runs(order)
            if all(len(g) == 1 or len(g) * max(lengths[i] for i in g) <= budget for g in split)
        ]
        best = min(_cost(lengths, split, overhead) for split in feasible)
        assert abs(_cost(lengths, groups, overhead) - best) < 1e-9


def test_one_long_segment_is_not_padded_onto_short_ones() -> None:
    # The case that made the rule: a 42 s segment and three of 2-4 s (frames of 10 ms).
    lengths = [4219, 350, 350, 239]
    assert group_by_length(lengths, 40000, 1.5) == [[0], [1, 2, 3]]
    # Similar lengths stay together: one more beam search would cost more than the padding.
    assert group_by_length([1000, 900, 800, 700], 40000, 1.5) == [[0, 1, 2, 3]]
    # Without a cost per group, only padding counts.
    assert group_by_length([1000, 900, 800, 700], 40000, 0.0) == [[0], [1], [2], [3]]


def _job(index: int, seconds: float) -> SegmentJob:
    return SegmentJob(0, index, 0.0, np.zeros(round(seconds * SAMPLE_RATE), dtype=np.int16))


def test_make_batches_bounds_padded_seconds_and_count() -> None:
    jobs = [_job(i, s) for i, s in enumerate([3.0, 30.0, 2.0, 10.0, 9.0, 1.0, 60.0, 5.0])]
    batches = make_batches(jobs, max_padded_seconds=40.0, max_size=3)
    assert sorted(j.segment_index for b in batches for j in b.jobs) == list(range(len(jobs)))
    for batch in batches:
        assert len(batch.jobs) <= 3
        assert len(batch.jobs) == 1 or batch.padded_seconds <= 40.0
        seconds = [j.seconds for j in batch.jobs]
        assert seconds == sorted(seconds, reverse=True)
    assert [j.seconds for j in batches[0].jobs] == [60.0]  # over budget alone, still a batch


def test_cpu_workers_alone_take_the_longest_ready_batch_first():
    """Four files of one batch each for two CPU workers: the longest first, so the last to
    start are the short ones and the workers finish together; beside a GPU group (which takes
    from the front) CPU workers keep taking from the back."""
    from collections import deque
    from types import SimpleNamespace

    from fireredasr_fast.runner.scheduler import _Schedule

    def batch(file_index: int, seconds: float) -> Batch:
        return Batch([SegmentJob(file_index, 0, 0.0, np.zeros(int(seconds * 16000), np.int16))])

    cpu, gpu = SimpleNamespace(takes_largest=False), SimpleNamespace(takes_largest=True)
    files = [60.0, 81.7, 60.0, 66.4]
    alone = SimpleNamespace(ready=deque(batch(i, s) for i, s in enumerate(files)), pools=[cpu])
    taken = [_Schedule._take(alone, cpu).jobs[0].file_index for _ in files]  # type: ignore[arg-type]
    assert taken == [1, 3, 0, 2]
    mixed = SimpleNamespace(ready=deque(batch(i, s) for i, s in enumerate(files)), pools=[gpu, cpu])
    assert _Schedule._take(mixed, cpu).jobs[0].file_index == 3  # type: ignore[arg-type]
    assert _Schedule._take(mixed, gpu).jobs[0].file_index == 0  # type: ignore[arg-type]
