"""Segments -> batches. Segments of similar length share a batch, so little compute is
spent on padding; a batch is bounded by its padded audio seconds, not its count, so one
batch costs about the same whether it holds many short segments or a few long ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .glossary import Glossary
from .results import SAMPLE_RATE


@dataclass
class SegmentJob:
    """One segment waiting for recognition: where it came from and its samples (int16)."""

    file_index: int
    segment_index: int
    start: float  # absolute start in the file, seconds
    samples: np.ndarray

    @property
    def seconds(self) -> float:
        return self.samples.size / SAMPLE_RATE


@dataclass
class Batch:
    jobs: list[SegmentJob]
    # The glossary of the file the jobs come from (a batch never mixes files), when it has one.
    hotwords: Glossary | None = None

    @property
    def padded_seconds(self) -> float:
        return max(job.seconds for job in self.jobs) * len(self.jobs) if self.jobs else 0.0

    @property
    def audio_seconds(self) -> float:
        return sum(job.seconds for job in self.jobs)


def make_batches(jobs: Iterable[SegmentJob], max_padded_seconds: float, max_size: int = 64) -> list[Batch]:
    """Sort by length (longest first) and cut greedily when the padded size would exceed
    `max_padded_seconds` or `max_size` (a single segment always forms a batch)."""
    ordered: Sequence[SegmentJob] = sorted(jobs, key=lambda job: job.samples.size, reverse=True)
    batches: list[Batch] = []
    current: list[SegmentJob] = []
    for job in ordered:
        # Longest first: the first job of a batch fixes its padded length.
        longest = current[0].seconds if current else job.seconds
        if current and (longest * (len(current) + 1) > max_padded_seconds or len(current) >= max_size):
            batches.append(Batch(current))
            current = []
        current.append(job)
    if current:
        batches.append(Batch(current))
    return batches


def group_by_length(lengths: Sequence[int], max_padded: int, group_overhead: float) -> list[list[int]]:
    """Split items into groups that each run as one padded batch, at the least cost.

    A group costs its longest item times (its size + `group_overhead`): padding makes every
    member as long as the longest, and each extra group pays a fixed cost that also grows with
    its longest item (for an encoder-decoder, one more beam search whose step count follows
    the longest output). Items are sorted longest first, and the best split of a sorted list
    into runs is found exactly by dynamic programming (n <= a few hundred: O(n^2)). A group's
    padded size (count x longest) stays within `max_padded` unless it is a single item.
    Items of length 0 are left out. Returns lists of indices into `lengths`, longest first.
    """
    order = sorted((i for i, n in enumerate(lengths) if n > 0), key=lambda i: -lengths[i])
    count = len(order)
    # best[j]: least cost of grouping order[:j]; cut[j]: where its last group starts.
    best = [0.0] + [float("inf")] * count
    cut = [0] * (count + 1)
    for start in range(count):
        longest = lengths[order[start]]
        for stop in range(start + 1, count + 1):
            size = stop - start
            if size > 1 and size * longest > max_padded:
                break
            cost = best[start] + longest * (size + group_overhead)
            if cost < best[stop]:
                best[stop], cut[stop] = cost, start
    groups: list[list[int]] = []
    stop = count
    while stop > 0:
        groups.append(order[cut[stop] : stop])
        stop = cut[stop]
    return groups[::-1]
