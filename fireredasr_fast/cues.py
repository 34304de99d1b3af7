"""Turn recognised segments into subtitle cues: split, wrap, time, and tidy.

A segment (up to 60 s) is far too long for one subtitle. It is cut into cues at pauses
first, then at punctuation, then by length and duration, and each cue is wrapped into a
few balanced lines. Latin words are atomic (never split across lines or cues); CJK text
may break between any two characters. Widths and wrapping are in textlines.py, words and
their times in words.py, token-time checks in tokentimes.py.
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import itertools
import math
from dataclasses import dataclass

from .errors import check_number
from .flags import SUBTITLES, section
from .results import Cue, Segment, Turn
from .textlines import STRONG_PUNCT, WEAK_PUNCT, char_width, join_lines, wrap_words
from .vad import clip_regions
from .words import Word, break_wide_words, label_words, speaker_runs, timed_words

# The shortest cue the tidy-up pass will leave when it has to squeeze cues together.
_MIN_SLOT = 0.05
# Cue times are written in milliseconds (rounded here to 1 ms); comparisons allow that.
_TIME_EPS = 0.002


# Reading speeds, characters a second, from Netflix's Timed Text Style Guides for adult
# programmes (README, "Reading speed"): English (USA) 20, Simplified Chinese 9.
MAX_CPS_LATIN = 20.0
MAX_CPS_CJK = 9.0


@dataclass(frozen=True)
class CueOptions:
    max_line_width: float = 16.0  # in CJK characters; Latin characters count half
    max_lines: int = 2
    max_duration: float = 7.0  # seconds
    # Seconds; a shorter cue is extended into the following silence, else starts earlier, else
    # the next cue starts later: it always holds where the file is long enough.
    min_duration: float = 0.8
    min_gap: float = 0.1  # seconds between consecutive cues
    pause_split: float = 0.35  # a silence at least this long always ends a cue
    # Cue starts move to a VAD speech onset this close (seconds); 0 turns it off.
    snap_to_speech: float = 0.4
    # Reading speed limits in characters a second (spaces and punctuation count), for Latin and
    # other narrow text and for CJK text; a cue that reads faster stays up longer, into the
    # silence before the next cue. 0 turns a limit off.
    max_cps: float = MAX_CPS_LATIN
    max_cps_cjk: float = MAX_CPS_CJK

    def __post_init__(self) -> None:
        for name in ("max_cps", "max_cps_cjk"):  # 0: no limit
            check_number(name, getattr(self, name), 0.0)
        check_number("max_line_width", self.max_line_width, 1.0)  # at least one CJK character
        check_number("max_lines", self.max_lines, 1, integer=True)
        check_number("max_duration", self.max_duration, _MIN_SLOT, above=True)
        check_number("min_duration", self.min_duration, 0.0, self.max_duration)
        for name in ("min_gap", "pause_split", "snap_to_speech"):
            check_number(name, getattr(self, name), 0.0)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """The subtitle flags (flags.py), defaults the class's own."""
        c = section(parser, SUBTITLES)
        c.add_argument(
            "--max-line-width",
            type=float,
            default=cls.max_line_width,
            help="CJK characters per line; a Latin character counts half (default: %(default)s)",
        )
        c.add_argument("--max-lines", type=int, default=cls.max_lines, help="lines per cue (default: %(default)s)")
        c.add_argument(
            "--max-cue-duration",
            type=float,
            default=cls.max_duration,
            help="longest a cue stays on screen, in seconds (default: %(default)s)",
        )
        c.add_argument(
            "--min-cue-duration",
            type=float,
            default=cls.min_duration,
            help="shortest cue in seconds, extended into the following silence, else started earlier "
            "(default: %(default)s)",
        )
        c.add_argument(
            "--max-cps",
            type=float,
            default=cls.max_cps,
            help="reading speed limit of Latin text in characters a second: a faster cue stays up into the silence "
            "after it, else is listed for review (reason fast); 0 = no limit (default: %(default)s, Netflix's "
            "English guide)",
        )
        c.add_argument(
            "--max-cps-cjk",
            type=float,
            default=cls.max_cps_cjk,
            help="the same for CJK characters (default: %(default)s, Netflix's Simplified Chinese guide)",
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> CueOptions:
        return cls(
            max_line_width=args.max_line_width,
            max_lines=args.max_lines,
            max_duration=args.max_cue_duration,
            min_duration=args.min_cue_duration,
            max_cps=args.max_cps,
            max_cps_cjk=args.max_cps_cjk,
        )


def reading_seconds(lines: list[str], options: CueOptions) -> float:
    """How long a cue's text needs on screen at the reading speed limits: every character
    counts (spaces and punctuation too, as the style guides count), wide ones (CJK characters
    and full-width punctuation) at max_cps_cjk, the others at max_cps; line breaks count as
    spaces between Latin words and not at all between CJK characters."""
    text = join_lines(lines)
    wide = sum(1 for ch in text if char_width(ch) == 1.0)
    narrow = sum(1 for ch in text if char_width(ch) == 0.5)
    seconds = 0.0
    if options.max_cps > 0:
        seconds += narrow / options.max_cps
    if options.max_cps_cjk > 0:
        seconds += wide / options.max_cps_cjk
    return seconds


def reads_too_fast(cue: Cue, options: CueOptions) -> bool:
    """Whether the cue is on screen for less time than its text needs (reading_seconds)."""
    return cue.end - cue.start < reading_seconds(cue.lines, options) - _TIME_EPS


def _ends_with(word: Word, marks: frozenset[str]) -> bool:
    text = word.text.rstrip("”’」』）)\"'")
    return bool(text) and text[-1] in marks


def _pause_chunks(words: list[Word], regions: list[tuple[float, float]], pause_split: float) -> list[list[Word]]:
    """Hard cuts at silences: long gaps between word times, and VAD pauses inside the segment."""
    cut = [False] * len(words)  # cut[i]: a cue must end after words[i]
    for i in range(len(words) - 1):
        if words[i + 1].start - words[i].end >= pause_split:
            cut[i] = True
    mids = [(w.start + w.end) / 2 for w in words]
    for (_, pause_start), (pause_end, _) in itertools.pairwise(regions):
        centre = (pause_start + pause_end) / 2
        # The pause belongs to the word boundary whose neighbours' midpoints enclose it.
        i = bisect.bisect_right(mids, centre) - 1
        if 0 <= i < len(words) - 1:
            cut[i] = True
    chunks: list[list[Word]] = []
    cur: list[Word] = []
    for word, end_here in zip(words, cut, strict=True):
        cur.append(word)
        if end_here:
            chunks.append(cur)
            cur = []
    if cur:
        chunks.append(cur)
    return chunks


def _split_chunk(words: list[Word], opt: CueOptions) -> list[list[Word]]:
    """Cut a pause-free run of words into cues by dynamic programming.

    Every cue must wrap into max_lines lines and last at most max_duration (a single word is
    always allowed). Among valid cuts, prefer few cues, cuts at sentence ends then clause
    marks then silences, no sentence end inside a cue, and evenly filled cues.
    """
    n = len(words)
    run = _Run.of(words, opt)
    best = [math.inf] * (n + 1)
    back = [0] * (n + 1)
    best[0] = 0.0
    for i in range(n):
        if best[i] != math.inf:
            _cues_from(i, run, opt, best, back)
    pieces: list[list[Word]] = []
    j = n
    while j > 0:
        i = back[j]
        pieces.append(words[i:j])
        j = i
    pieces.reverse()
    return pieces


@dataclass
class _Run:
    """Per-word values of a run, computed once: the search visits each word many times."""

    widths: list[float]
    spaced: list[bool]
    starts: list[float]
    ends: list[float]
    strong: list[bool]  # ends a sentence
    boundary_cost: list[float]  # of a cue ending after the word

    @classmethod
    def of(cls, words: list[Word], opt: CueOptions) -> _Run:
        run = cls(
            [w.width for w in words],
            [w.space_before for w in words],
            [w.start for w in words],
            [w.end for w in words],
            [_ends_with(w, STRONG_PUNCT) for w in words],
            [],
        )
        for i in range(len(words) - 1):
            if run.strong[i]:
                run.boundary_cost.append(0.0)
            elif _ends_with(words[i], WEAK_PUNCT):
                run.boundary_cost.append(0.4)
            else:
                gap = max(run.starts[i + 1] - run.ends[i], 0.0)
                run.boundary_cost.append(1.5 - min(gap / max(opt.pause_split, 1e-6), 1.0))
        run.boundary_cost.append(0.0)
        return run


def _cues_from(i: int, run: _Run, opt: CueOptions, best: list[float], back: list[int]) -> None:
    """Relax every cue that starts at word i: best[j + 1] is the cheapest cut of words[:j + 1]."""
    capacity = opt.max_line_width * opt.max_lines
    widths = run.widths
    lines, line_w, total, inner = 1, widths[i], widths[i], 0.0
    latest_end = run.starts[i] + opt.max_duration
    for j in range(i, len(widths)):
        if j > i:
            w_j = widths[j]
            gap = 0.5 if run.spaced[j] else 0.0
            if line_w + gap + w_j <= opt.max_line_width:
                line_w += gap + w_j
            else:
                lines += 1
                line_w = w_j
            total += w_j + gap
            if lines > opt.max_lines or run.ends[j] > latest_end:
                break  # greedy wrapping is optimal for the line count, so longer runs cannot fit either
        underfill = 1.0 - total / capacity if total < capacity else 0.0
        cost = best[i] + 1.0 + underfill * underfill + run.boundary_cost[j] + inner
        if total < 3.0:
            cost += 1.0  # one- or two-character cues flash by
        if cost < best[j + 1]:
            best[j + 1] = cost
            back[j + 1] = i
        if run.strong[j]:
            inner += 2.5


# ---------------------------------------------------------------------------- building


def _cue_confidences(seg: Segment, piece: list[Word]) -> tuple[float | None, list[float] | None]:
    """The mean confidence of the cue's tokens and the tokens' own; the segment's mean (and
    no token values) when its tokens have none."""
    confidences = seg.token_confidences
    if confidences is None or len(confidences) != len(seg.tokens):
        return seg.confidence, None
    indices = sorted({t for w in piece for t in w.token_indices if t < len(confidences)})
    if not indices:
        return seg.confidence, None
    own = [float(confidences[t]) for t in indices]
    return sum(own) / len(own), own


def build_cues(
    segments: list[Segment],
    speech: list[tuple[float, float]],
    duration: float,
    options: CueOptions | None = None,
    turns: list[Turn] | None = None,
) -> list[Cue]:
    """Cues for a whole file: each segment split and wrapped, then the times tidied across the
    file. With speaker `turns`, each word takes the speaker of the turn covering its midpoint
    and cues are cut where it changes: a cue never spans two speakers."""
    opt = options or CueOptions()
    cues: list[Cue] = []
    for seg in sorted(segments, key=lambda s: s.start):
        if not seg.text.strip():
            continue
        regions = clip_regions(speech, seg.start, seg.end)
        words = timed_words(seg, regions)
        if not words:
            continue
        if turns is not None:
            label_words(words, turns)
        words = break_wide_words(words, opt.max_line_width)
        for chunk in _pause_chunks(words, regions, opt.pause_split):
            for run in speaker_runs(chunk):
                cues.extend(_run_cues(seg, run, opt))
    if opt.snap_to_speech > 0:
        snap_to_speech_onsets(cues, speech, opt.snap_to_speech)
    return tidy_cues(cues, duration, opt)


def _run_cues(seg: Segment, words: list[Word], opt: CueOptions) -> list[Cue]:
    """Cues for one pause-free run of one speaker's words."""
    cues = []
    for piece in _split_chunk(words, opt):
        lines = wrap_words([w.text for w in piece], [w.space_before for w in piece], opt.max_line_width, opt.max_lines)
        mean, own = _cue_confidences(seg, piece)
        cues.append(Cue(piece[0].start, max(w.end for w in piece), lines, mean, list(seg.flags), own, piece[0].speaker))
    return cues


def snap_to_speech_onsets(cues: list[Cue], speech: list[tuple[float, float]], max_shift: float) -> None:
    """Move each cue's start to the nearest VAD speech onset within `max_shift` seconds.

    Token times from attention or word alignment are often a tenth of a second or two off at
    the start of a sentence (Whisper's tend to be late); the VAD's onset is where the voice
    really begins. Never moves a start before the previous cue's end or past its own end.
    """
    onsets = sorted(start for start, _ in speech)
    previous_end = 0.0
    for cue in cues:
        # Only the onsets within max_shift of the start can qualify (a margin for rounding):
        # the same candidates, in the same order, as a scan of all of them.
        lo = bisect.bisect_left(onsets, cue.start - 2 * max_shift)
        hi = bisect.bisect_right(onsets, cue.start + 2 * max_shift)
        near = [o for o in onsets[lo:hi] if abs(o - cue.start) <= max_shift and previous_end <= o < cue.end]
        if near:
            cue.start = min(near, key=lambda o: abs(o - cue.start))
        previous_end = cue.end


def tidy_cues(cues: list[Cue], duration: float, options: CueOptions | None = None) -> list[Cue]:
    """Make cue times playable: in order, inside the file, no overlaps, min_gap apart,
    at least min_duration where the silence after allows, at most max_duration.

    Only the earlier cue's end is trimmed for a gap, so every cue keeps starting on its first
    word; a later cue is pushed only when two cues would otherwise start at the same instant.
    """
    opt = options or CueOptions()
    hi = duration if duration and duration > 0 else math.inf
    out = [
        dataclasses.replace(
            c, start=min(max(c.start, 0.0), hi), end=min(max(c.end, 0.0), hi), lines=list(c.lines), flags=list(c.flags)
        )
        for c in cues
    ]
    out = [c for c in out if any(line.strip() for line in c.lines)]
    out.sort(key=lambda c: (c.start, c.end))
    for c in out:
        c.end = min(max(c.end, c.start), c.start + opt.max_duration)
    _space_out(out, hi, opt)
    _hold_min_duration(out, hi, opt)
    _hold_reading_speed(out, hi, opt)
    for c in out:
        c.start, c.end = round(c.start, 3), round(c.end, 3)
    return out


def _space_out(out: list[Cue], hi: float, opt: CueOptions) -> None:
    """Cues in order min_gap apart, at least _MIN_SLOT long, inside the file (up to `hi`)."""
    # Trim each cue's end to leave min_gap before the next one.
    for prev, cur in itertools.pairwise(out):
        prev.end = max(min(prev.end, cur.start - opt.min_gap), prev.start + _MIN_SLOT)
    # Degenerate timings (several cues starting together) push later cues forward.
    for prev, cur in itertools.pairwise(out):
        if cur.start < prev.end + opt.min_gap:
            cur.start = prev.end + opt.min_gap
        cur.end = max(cur.end, cur.start + _MIN_SLOT)
    # Anything pushed past the end of the file is pulled back, from the last cue down.
    limit = hi
    for c in reversed(out):
        if c.end > limit:
            c.end = limit
        if c.start > c.end - _MIN_SLOT:
            c.start = max(c.end - _MIN_SLOT, 0.0)
        limit = c.start - opt.min_gap


def _hold_min_duration(out: list[Cue], hi: float, opt: CueOptions) -> None:
    """Every cue at least min_duration where its neighbours leave room: extended into the
    silence after it, else started earlier into the silence before it, else given time a
    longer neighbour can spare (the previous one ends earlier, else the next one starts later,
    each keeping min_duration). Cues are never pushed past their neighbours: a cue between two
    at their minimum, min_gap apart, stays short (fast speech cut into tiny cues)."""
    need = min(opt.min_duration, hi)
    for i, c in enumerate(out):
        if c.end - c.start >= need:
            continue
        nxt = out[i + 1] if i + 1 < len(out) else None
        prev = out[i - 1] if i > 0 else None
        after = nxt.start - opt.min_gap if nxt is not None else hi
        before = prev.end + opt.min_gap if prev is not None else 0.0
        c.end = max(c.end, min(c.start + need, after))
        c.start = min(c.start, max(c.end - need, before))
        # The previous cue gives first: its words were said; the next one's are still to come.
        if c.end - c.start < need and prev is not None:
            take = min(max(0.0, prev.end - prev.start - need), need - (c.end - c.start))
            prev.end -= take
            c.start = prev.end + opt.min_gap if take > 0 else c.start
        if c.end - c.start < need and nxt is not None:
            take = min(max(0.0, nxt.end - nxt.start - need), need - (c.end - c.start))
            nxt.start += take
            c.end = nxt.start - opt.min_gap if take > 0 else c.end


def _hold_reading_speed(out: list[Cue], hi: float, opt: CueOptions) -> None:
    """A cue that reads faster than the limits stays up longer, into the silence before the next
    cue (min_gap before it), the end of the file and max_duration permitting; what still
    reads too fast goes to the review list (guard.mark_for_review)."""
    for i, c in enumerate(out):
        need = min(reading_seconds(c.lines, opt), opt.max_duration)
        if c.end - c.start < need:
            room = out[i + 1].start - opt.min_gap if i + 1 < len(out) else hi
            c.end = max(c.end, min(c.start + need, room))
