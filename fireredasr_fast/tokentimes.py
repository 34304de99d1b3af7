"""Token times from an engine's alignment: whether they are plausible at all, and kept inside
the speech regions the VAD heard."""

from __future__ import annotations

import bisect
import math

# No speech carries more tokens than this in one second (fast Mandarin: ~8 characters a second).
MAX_TOKENS_PER_SECOND = 20


def plausible_token_times(times: list[tuple[float, float]], speech: list[tuple[float, float]]) -> bool:
    """False when an alignment has collapsed: its tokens cover under a third of the speech
    they were recognised from, or pile up more densely than any speech could (attention
    stuck on a few frames, as small or confused models do). Callers then estimate times from
    the speech regions instead."""
    if len(times) < 4:
        return True
    speech_seconds = sum(max(0.0, b - a) for a, b in speech)
    covered = max(b for _, b in times) - min(a for a, _ in times)
    if speech_seconds > 0 and covered < speech_seconds / 3:
        return False
    starts = sorted(a for a, _ in times)
    first = 0
    for last, start in enumerate(starts):
        while start - starts[first] > 1.0:
            first += 1
        if last - first + 1 > MAX_TOKENS_PER_SECOND:
            return False
    return True


def refine_token_times(
    token_times: list[tuple[float, float]], speech: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    """Pull token times that fall into a pause onto the nearest speech edge.

    Attention-based alignment smears tokens across silences; here each token is kept inside
    the one speech region that holds most of it (or the nearest one), so no token straddles a
    pause, and the result is made monotonic.
    """
    regions = sorted((a, b) for a, b in speech if b > a)
    if not regions:
        return [(float(a), float(b)) for a, b in token_times]
    starts = [a for a, _ in regions]
    out: list[tuple[float, float]] = []
    prev_start = prev_end = -math.inf
    for a, b in token_times:
        a, b = float(a), float(max(a, b))
        ra, rb = regions[_region_for(regions, starts, a, b)]
        a, b = min(max(a, ra), rb), min(max(b, ra), rb)
        # Running maxima keep order; each value is still one of the clamped times, so still in speech.
        a = max(a, prev_start)
        b = max(b, a, prev_end)
        prev_start, prev_end = a, b
        out.append((a, b))
    return out


def _region_for(regions: list[tuple[float, float]], starts: list[float], a: float, b: float) -> int:
    """The index of the region that holds most of the token (a, b), else of the nearest one."""
    k = bisect.bisect_right(starts, b)  # regions [0, k) start at or before the token's end
    best, best_score = None, -math.inf
    for j in (k - 2, k - 1, k):
        if 0 <= j < len(regions):
            ra, rb = regions[j]
            overlap = min(b, rb) - max(a, ra)
            score = overlap if overlap > 0 else -max(ra - b, a - rb, 0.0)  # negative distance
            if best is None or score > best_score:
                best, best_score = j, score
    # Scan wider only for a token overlapping many regions (rare: very long tokens).
    if best_score > 0:
        for j in range(bisect.bisect_right(starts, a) - 1, k):
            if 0 <= j < len(regions):
                overlap = min(b, regions[j][1]) - max(a, regions[j][0])
                if overlap > best_score:
                    best, best_score = j, overlap
    assert best is not None
    return best
