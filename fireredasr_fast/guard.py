"""The degenerate-output guard: find segments whose text is a decoder loop or cannot be speech,
and cut them back to what is plausible.

Attention decoders loop when they lose their place (robotic voices, music, noise): Whisper
writes "Yis, Yis, Yis, ..." for half a minute, FireRedASR-AED repeats a token until its step
limit. Checks, per segment:

- loop: a stretch of text repeated back to back (`min_loop_repeats` times or more, covering at
  least `min_loop_chars` characters);
- compression: the text compresses better than `max_compression_ratio` with zlib
  (faster-whisper's test for repetitive output, same definition; a higher threshold, because
  real rhetoric reaches faster-whisper's 2.4: docs/benchmarks.md);
- rate: more text per second of speech than anyone speaks (`max_width_per_second`, in the
  display width of textlines.py: a CJK character 1, a Latin character 0.5).

What is done about it depends on the engine: the Whisper engine re-decodes the window with
beam search that forbids repeats, deterministically (engines/whisper/engine.py); then, for every engine, the
pipeline keeps a still-degenerate text up to where its loop starts and drops it when even that
is implausible, or when it holds more text than the speech could (`guard_hypothesis`); a text
that only compresses too well is kept and flagged. Either way the segment carries the reasons as flags, so
its cues reach the review list. A hypothesis that passes every check is returned as it is.
Thresholds and their measurements: docs/benchmarks.md ("Degenerate-output guard").
"""

from __future__ import annotations

import argparse
import dataclasses
import zlib
from dataclasses import dataclass

import numpy as np

from .cues import CueOptions, reads_too_fast
from .flags import REVIEW, section
from .results import Cue, FileResult, Hypothesis
from .textlines import SP_SPACE, text_width

# The review rules' defaults: a cue is listed when its mean confidence is below
# REVIEW_THRESHOLD, or when the mean of its WEAK_TOKENS least confident tokens is below
# WEAK_TOKEN_THRESHOLD (one or two misheard words in a long cue hardly move its mean).
# Chosen on labelled programmes: docs/benchmarks.md ("Review list that finds mistakes").
REVIEW_THRESHOLD = 0.7
WEAK_TOKEN_THRESHOLD = 0.5
WEAK_TOKENS = 2

# Reasons (why a segment is degenerate) and actions (what the guard did), as written in the
# JSON's flags and the review list.
LOOP = "loop"
COMPRESSION = "compression"
RATE = "rate"
LOW_CONFIDENCE = "low-confidence"
WEAK_TOKEN = "weak-token"
# A cue that reads faster than CueOptions' reading speed limits even after it was extended.
FAST = "fast"
REDECODED = "redecoded"
TRUNCATED = "truncated"
DROPPED = "dropped"
# A cue mostly over what the event detector calls music or singing (vad.py, music="flag").
MUSIC = "music"
# Speech the engine gave no text for: a segment left empty, or speech no cue covers
# (results.FileResult.lost); listed so that nothing is lost silently.
NO_TEXT = "no-text"


@dataclass(frozen=True)
class GuardOptions:
    enabled: bool = True
    # Above faster-whisper's 2.4, which real rhetoric reaches, and below the loops recorded from
    # Whisper (docs/benchmarks.md#review-list-and-degenerate-output-guard-issue-23).
    max_compression_ratio: float = 2.6
    # A loop: one unit of at most max_loop_period characters said min_loop_repeats times in a
    # row, over at least min_loop_chars characters ("哈哈哈哈", "no, no, no, no" stay speech).
    min_loop_repeats: int = 4
    min_loop_chars: int = 24
    max_loop_period: int = 48
    # Fast Mandarin is ~8 characters a second, fast English ~20 letters (width 10) a second.
    max_width_per_second: float = 16.0
    # Rates are measured over at least this many seconds (a short segment's edges are loose).
    min_rate_seconds: float = 1.5

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """--no-guard (WhisperOptions.from_args reads it too: Whisper's re-decode is its guard)."""
        section(parser, REVIEW).add_argument(
            "--no-guard",
            action="store_true",
            help="keep decoder loops and implausible text as recognised (no re-decoding, cutting or dropping)",
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> GuardOptions:
        return cls(enabled=not args.no_guard)


def compression_ratio(text: str) -> float:
    """faster-whisper's measure: UTF-8 bytes over zlib-compressed bytes."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def find_loop(text: str, options: GuardOptions = GuardOptions()) -> tuple[int, int] | None:
    """(start, period) of the earliest loop in `text`, in characters, or None.

    A loop is a stretch where every character equals the one `period` characters before it,
    long enough for `min_loop_repeats` whole repeats and `min_loop_chars` characters.
    """
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    n = codes.size
    best: tuple[int, int] | None = None
    for period in range(1, min(options.max_loop_period, n // options.min_loop_repeats) + 1):
        span = max(period * options.min_loop_repeats, options.min_loop_chars)
        if span > n:
            continue
        same = np.concatenate(([False], codes[period:] == codes[:-period], [False]))
        # A run of r matches (text[i] == text[i + period]) from k on makes text[k:k + r + period]
        # periodic: r + period characters, starting at k.
        edges = np.flatnonzero(np.diff(same.astype(np.int8)))
        starts, ends = edges[0::2], edges[1::2]
        long_enough = np.flatnonzero(ends - starts + period >= span)
        if long_enough.size:
            start = int(starts[long_enough[0]])
            if best is None or start < best[0]:
                best = (start, period)
    return best


def degenerate_reasons(text: str, speech_seconds: float, options: GuardOptions = GuardOptions()) -> list[str]:
    """Why `text`, recognised from `speech_seconds` of speech, cannot be a transcript (empty: it can)."""
    if not text.strip():
        return []
    reasons = []
    if find_loop(text, options) is not None:
        reasons.append(LOOP)
    if compression_ratio(text) > options.max_compression_ratio:
        reasons.append(COMPRESSION)
    if text_width(text) / max(speech_seconds, options.min_rate_seconds) > options.max_width_per_second:
        reasons.append(RATE)
    return reasons


def _token_letters(token: str) -> int:
    return sum(1 for ch in token.replace(SP_SPACE, " ") if not ch.isspace())


def _tokens_before(tokens: list[str], text: str, cut: int) -> int:
    """How many tokens make up text[:cut] (tokens and text compared by their non-space characters)."""
    letters = sum(1 for ch in text[:cut] if not ch.isspace())
    counts = [_token_letters(t) for t in tokens]
    total_text = sum(1 for ch in text if not ch.isspace())
    if sum(counts) != total_text:
        # The text was rewritten (normalised, punctuated): cut the tokens in proportion.
        return round(len(tokens) * letters / max(total_text, 1))
    kept, seen = 0, 0
    for count in counts:
        if seen + count > letters:
            break
        seen += count
        kept += 1
    return kept


def truncate_hypothesis(hyp: Hypothesis, cut: int, flags: list[str]) -> Hypothesis:
    """`hyp` cut to text[:cut] with its tokens, times and confidences, carrying `flags`."""
    k = _tokens_before(list(hyp.tokens), hyp.text, cut)
    confidences = hyp.token_confidences[:k] if hyp.token_confidences is not None else None
    confidence = hyp.confidence
    if confidences is not None:
        confidence = sum(confidences) / len(confidences) if confidences else None
    return dataclasses.replace(
        hyp,
        text=hyp.text[:cut].rstrip(),
        tokens=list(hyp.tokens[:k]),
        token_ids=list(hyp.token_ids[:k]),
        token_times=hyp.token_times[:k] if hyp.token_times is not None else None,
        token_confidences=confidences,
        confidence=confidence,
        flags=list(flags),
    )


def guard_hypothesis(hyp: Hypothesis, speech_seconds: float, options: GuardOptions = GuardOptions()) -> Hypothesis:
    """The hypothesis itself when it is plausible; otherwise flagged, and cut at its loop or emptied.

    A loop: the text is kept up to the end of the loop's first repeat (the unit was probably
    said once); if what is left still fails a check, the text is dropped. No loop but more
    text than the speech could hold: dropped. Only a high compression ratio: kept, flagged
    (real, repetitive text reaches it too).
    """
    if not options.enabled:
        return hyp
    reasons = degenerate_reasons(hyp.text, speech_seconds, options)
    if not reasons:
        return hyp
    flags = [*hyp.flags, *(r for r in reasons if r not in hyp.flags)]
    loop = find_loop(hyp.text, options)
    if loop is not None:
        start, period = loop
        kept = truncate_hypothesis(hyp, start + period, [*flags, TRUNCATED])
        if kept.text.strip() and not degenerate_reasons(kept.text, speech_seconds, options):
            return kept
    elif RATE not in reasons:
        return dataclasses.replace(hyp, flags=flags)
    return truncate_hypothesis(hyp, 0, [*flags, DROPPED])


def weakest_confidence(cue: Cue, count: int = WEAK_TOKENS) -> float | None:
    """The mean confidence of the cue's `count` least confident tokens; None when the engine
    gave no token values."""
    tokens = cue.token_confidences
    if not tokens:
        return None
    low = sorted(tokens)[:count]
    return sum(low) / len(low)


def review_reasons(
    cue: Cue,
    threshold: float,
    weak_token_threshold: float = WEAK_TOKEN_THRESHOLD,
    cue_options: CueOptions | None = None,
) -> list[str]:
    """Why `cue` should be checked by an editor: a low mean confidence, a weak token (the
    weakest tokens' mean below `weak_token_threshold`), or text that reads too fast for the
    cue's time on screen (`cue_options`' reading speed limits). A threshold of 0 turns its
    rule off; cues without confidences are judged by their reading speed only."""
    reasons = []
    if cue.confidence is not None and cue.confidence < threshold:
        reasons.append(LOW_CONFIDENCE)
    weakest = weakest_confidence(cue)
    if weakest is not None and weakest < weak_token_threshold and LOW_CONFIDENCE not in reasons:
        reasons.append(WEAK_TOKEN)
    if cue_options is not None and reads_too_fast(cue, cue_options):
        reasons.append(FAST)
    return reasons


def mark_for_review(
    cues: list[Cue],
    threshold: float,
    music: list[tuple[float, float]] | None = None,
    weak_token_threshold: float = WEAK_TOKEN_THRESHOLD,
    cue_options: CueOptions | None = None,
) -> None:
    """Flag the cues review_reasons finds, and cues that lie mostly over `music` regions."""
    for cue in cues:
        for reason in review_reasons(cue, threshold, weak_token_threshold, cue_options):
            if reason not in cue.flags:
                cue.flags.append(reason)
        if music and MUSIC not in cue.flags:
            over = sum(max(0.0, min(cue.end, b) - max(cue.start, a)) for a, b in music)
            if over >= (cue.end - cue.start) / 2:
                cue.flags.append(MUSIC)


def review_counts(result: FileResult) -> tuple[int, int]:
    """(entries in the review list, segments the guard acted on) for one file."""
    dropped = sum(1 for seg in result.segments if seg.flags and not seg.text.strip())
    listed = sum(1 for cue in result.cues if cue.flags) + dropped + len(result.lost)
    return listed, sum(1 for seg in result.segments if seg.flags and NO_TEXT not in seg.flags)
