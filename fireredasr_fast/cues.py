"""Turn recognised segments into subtitle cues: split, wrap, time, and tidy.

A segment (up to 60 s) is far too long for one subtitle. It is cut into cues at pauses
first, then at punctuation, then by length and duration, and each cue is wrapped into a
few balanced lines. Latin words are atomic (never split across lines or cues); CJK text
may break between any two characters.

Display width follows subtitle convention: a CJK character or full-width punctuation
mark counts 1, a Latin character or space counts 0.5.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import math
import unicodedata
from dataclasses import dataclass, field

from .errors import check_number
from .results import Cue, Segment
from .vad import clip_regions

# Sentence ends: always a good place for a cue boundary, a poor place to run on.
STRONG_PUNCT = frozenset("。！？!?.…；;")
# Clause marks: a good place for a boundary when one is needed anyway.
WEAK_PUNCT = frozenset("，,、：:")
# SentencePiece marks a word start with this character.
SP_SPACE = "▁"
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


# ---------------------------------------------------------------------------- characters


def char_width(ch: str) -> float:
    if unicodedata.combining(ch):
        return 0.0
    return 1.0 if unicodedata.east_asian_width(ch) in ("W", "F") else 0.5


def text_width(text: str) -> float:
    return sum(char_width(ch) for ch in text)


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


def is_cjk(ch: str) -> bool:
    """A wide letter (Han, kana, Hangul): text that breaks between characters, without spaces."""
    return unicodedata.east_asian_width(ch) in ("W", "F") and not _is_punct(ch)


def _is_punct(ch: str) -> bool:
    return unicodedata.category(ch).startswith("P")


def _is_opening(ch: str) -> bool:
    # Opening brackets and quotes belong to the word after them.
    return unicodedata.category(ch) in ("Ps", "Pi")


def join_lines(lines: list[str]) -> str:
    """Join wrapped lines back into running text (no space between two CJK characters)."""
    out = ""
    for line in lines:
        line = line.strip()
        if not line:
            continue
        if out and not (_no_space_after(out[-1]) and _no_space_before(line[0])):
            out += " "
        out += line
    return out


def _no_space_after(ch: str) -> bool:
    return is_cjk(ch) or (_is_punct(ch) and char_width(ch) == 1.0)


def _no_space_before(ch: str) -> bool:
    return is_cjk(ch) or _is_punct(ch)


# ---------------------------------------------------------------------------- words


@dataclass
class _Word:
    """An unbreakable display unit: one CJK character or one Latin word, with punctuation attached."""

    text: str
    space_before: bool  # whether a space separates it from the previous word on the same line
    start: float = 0.0
    end: float = 0.0
    token_indices: list[int] = field(default_factory=list)

    @property
    def width(self) -> float:
        return text_width(self.text)


def _tokens_from_text(text: str) -> list[str]:
    """Tokens for a segment that has text but no tokens: CJK characters and spaced Latin words."""
    tokens: list[str] = []
    cur = ""
    pending_space = False
    for ch in text:
        if ch.isspace():
            if cur:
                tokens.append(cur)
                cur = ""
            pending_space = True
        elif is_cjk(ch) or (_is_punct(ch) and char_width(ch) == 1.0):
            if cur:
                tokens.append(cur)
                cur = ""
            tokens.append((" " if pending_space else "") + ch)
            pending_space = False
        else:
            if not cur:
                cur = " " if pending_space else ""
                pending_space = False
            cur += ch
    if cur:
        tokens.append(cur)
    return tokens


def _group_tokens(tokens: list[str], spaced: bool) -> list[_Word]:
    """Group tokens into words.

    `spaced` means the tokens carry their own spacing (Whisper words, or text split here),
    so no space is invented between CJK and Latin; SentencePiece and bare character tokens
    get a space at every CJK/Latin boundary.
    """
    words: list[_Word] = []
    pending_space = False
    prefix = ""  # opening punctuation waiting for the next word
    prefix_indices: list[int] = []
    for idx, tok in enumerate(tokens):
        lead = tok[:1] in (" ", SP_SPACE) or tok[:1].isspace()
        core = tok.replace(SP_SPACE, " ").strip()
        if not core:
            pending_space = pending_space or lead
            continue
        lead = lead or pending_space
        pending_space = False
        if all(_is_punct(ch) for ch in core):
            if words and not _is_opening(core[0]) and not (lead and spaced):
                words[-1].text += core
                words[-1].token_indices.append(idx)
                continue
            if _is_opening(core[0]) or not words:
                prefix += core
                prefix_indices.append(idx)
                pending_space = lead  # the space before "(" separates the word it opens
                continue
        prev = words[-1] if words else None
        if prev is None:
            new, space = True, False
        elif lead:
            new, space = True, True
        elif is_cjk(core[0]) or _no_space_after(prev.text[-1]):
            # A word boundary at every CJK character. Tokens without their own spacing
            # (SentencePiece, bare characters) get a space where a Latin word meets CJK.
            last = prev.text[-1]
            latin_next = core[0].isalnum() and not is_cjk(core[0])
            latin_prev = last.isalnum() and not is_cjk(last)
            new = True
            space = not spaced and ((latin_next and is_cjk(last)) or (latin_prev and is_cjk(core[0])))
        elif prefix:
            new, space = True, False
        else:
            new, space = False, False  # a SentencePiece continuation piece, or punctuation inside a word
        if new:
            words.append(_Word(prefix + core, space, token_indices=[*prefix_indices, idx]))
        else:
            prev.text += prefix + core
            prev.token_indices.extend([*prefix_indices, idx])
        prefix, prefix_indices = "", []
    if prefix:
        if words:
            words[-1].text += prefix
            words[-1].token_indices.extend(prefix_indices)
        else:
            words.append(_Word(prefix, False, token_indices=prefix_indices))
    return words


def _adopt_text(words: list[_Word], text: str) -> None:
    """Take each word's spelling and punctuation from the segment text when the two agree.

    The text is the authority (a punctuation model or case fix may have rewritten it while
    the tokens stayed raw). If the letters do not line up, the token spelling is kept.
    """
    spans: list[tuple[int, int]] = []
    pos = 0
    n = len(text)
    for word in words:
        letters = [ch.casefold() for ch in word.text if not _is_punct(ch) and not ch.isspace()]
        while pos < n and (text[pos].isspace() or (_is_punct(text[pos]) and not _is_opening(text[pos]))):
            pos += 1
        begin = pos
        for letter in letters:
            while pos < n and _is_punct(text[pos]):
                pos += 1
            if pos >= n or text[pos].casefold() != letter:
                return
            pos += 1
        spans.append((begin, pos))
    if any(not ch.isspace() and not _is_punct(ch) for ch in text[pos:]):
        return
    # Extend each span over the punctuation that follows it (but not over an opening mark).
    for i, (begin, end) in enumerate(spans):
        limit = spans[i + 1][0] if i + 1 < len(spans) else n
        while end < limit and _is_punct(text[end]) and not (_is_opening(text[end]) and i + 1 < len(spans)):
            end += 1
        piece = text[begin:end].strip()
        if piece:
            words[i].text = piece


# ---------------------------------------------------------------------------- timing


def _spread_times(words: list[_Word], regions: list[tuple[float, float]]) -> None:
    """Estimate word times by laying the words over the speech regions in proportion to their width.

    A word that would straddle a pause is kept inside the region that holds most of it, so
    estimated cues start where speech starts and gaps show up where VAD heard silence.
    """
    weights = [max(w.width + (0.5 if w.space_before else 0.0), 0.5) for w in words]
    total_w = sum(weights)
    lengths = [b - a for a, b in regions]
    total_len = sum(lengths)
    offsets = [0.0]
    for length in lengths:
        offsets.append(offsets[-1] + length)
    pos = 0.0
    for word, weight in zip(words, weights, strict=True):
        p0 = pos / total_w * total_len
        pos += weight
        p1 = pos / total_w * total_len
        best, best_overlap = 0, -1.0
        for k, (off, length) in enumerate(zip(offsets, lengths, strict=False)):
            overlap = min(p1, off + length) - max(p0, off)
            if overlap > best_overlap:
                best, best_overlap = k, overlap
        off, length = offsets[best], lengths[best]
        word.start = regions[best][0] + min(max(p0 - off, 0.0), length)
        word.end = regions[best][0] + min(max(p1 - off, 0.0), length)


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
        ra, rb = regions[best]
        a, b = min(max(a, ra), rb), min(max(b, ra), rb)
        # Running maxima keep order; each value is still one of the clamped times, so still in speech.
        a = max(a, prev_start)
        b = max(b, a, prev_end)
        prev_start, prev_end = a, b
        out.append((a, b))
    return out


# ---------------------------------------------------------------------------- splitting


def _ends_with(word: _Word, marks: frozenset[str]) -> bool:
    text = word.text.rstrip("”’」』）)\"'")
    return bool(text) and text[-1] in marks


def _pause_chunks(words: list[_Word], regions: list[tuple[float, float]], pause_split: float) -> list[list[_Word]]:
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
    chunks: list[list[_Word]] = []
    cur: list[_Word] = []
    for word, end_here in zip(words, cut, strict=True):
        cur.append(word)
        if end_here:
            chunks.append(cur)
            cur = []
    if cur:
        chunks.append(cur)
    return chunks


def _split_chunk(words: list[_Word], opt: CueOptions) -> list[list[_Word]]:
    """Cut a pause-free run of words into cues by dynamic programming.

    Every cue must wrap into max_lines lines and last at most max_duration (a single word is
    always allowed). Among valid cuts, prefer few cues, cuts at sentence ends then clause
    marks then silences, no sentence end inside a cue, and evenly filled cues.
    """
    n = len(words)
    capacity = opt.max_line_width * opt.max_lines
    # Per-word values, computed once: the search below visits each word many times.
    widths = [w.width for w in words]
    spaced = [w.space_before for w in words]
    starts = [w.start for w in words]
    ends = [w.end for w in words]
    strong = [_ends_with(w, STRONG_PUNCT) for w in words]
    boundary_cost = []
    for i in range(n - 1):
        if strong[i]:
            boundary_cost.append(0.0)
        elif _ends_with(words[i], WEAK_PUNCT):
            boundary_cost.append(0.4)
        else:
            gap = max(starts[i + 1] - ends[i], 0.0)
            boundary_cost.append(1.5 - min(gap / max(opt.pause_split, 1e-6), 1.0))
    boundary_cost.append(0.0)

    best = [math.inf] * (n + 1)
    back = [0] * (n + 1)
    best[0] = 0.0
    for i in range(n):
        if best[i] == math.inf:
            continue
        lines, line_w, total, inner = 1, widths[i], widths[i], 0.0
        latest_end = starts[i] + opt.max_duration
        for j in range(i, n):
            if j > i:
                w_j = widths[j]
                gap = 0.5 if spaced[j] else 0.0
                if line_w + gap + w_j <= opt.max_line_width:
                    line_w += gap + w_j
                else:
                    lines += 1
                    line_w = w_j
                total += w_j + gap
                if lines > opt.max_lines or ends[j] > latest_end:
                    break  # greedy wrapping is optimal for the line count, so longer runs cannot fit either
            underfill = 1.0 - total / capacity if total < capacity else 0.0
            cost = best[i] + 1.0 + underfill * underfill + boundary_cost[j] + inner
            if total < 3.0:
                cost += 1.0  # one- or two-character cues flash by
            if cost < best[j + 1]:
                best[j + 1] = cost
                back[j + 1] = i
            if strong[j]:
                inner += 2.5
    pieces: list[list[_Word]] = []
    j = n
    while j > 0:
        i = back[j]
        pieces.append(words[i:j])
        j = i
    pieces.reverse()
    return pieces


def split_wide_text(text: str, max_width: float) -> list[str]:
    """Pieces of `text` no wider than max_width: the last resort for a run with no break point
    (digits or letters glued together, a long CJK run inside one token).

    Each piece ends after the last punctuation mark or hyphen in its second half when there is
    one, else exactly at the width.
    """
    pieces: list[str] = []
    cur, cur_w, last_mark = "", 0.0, -1
    for ch in text:
        w = char_width(ch)
        if cur and cur_w + w > max_width:
            cut = last_mark + 1 if last_mark >= 0 and text_width(cur[: last_mark + 1]) >= max_width / 2 else len(cur)
            pieces.append(cur[:cut])
            cur = cur[cut:]
            cur_w = text_width(cur)
            last_mark = max((k for k, c in enumerate(cur) if _is_punct(c) or c == "-"), default=-1)
        cur += ch
        cur_w += w
        if _is_punct(ch) or ch == "-":
            last_mark = len(cur) - 1
    if cur:
        pieces.append(cur)
    return pieces


def _split_wide_words(words: list[str], spaces: list[bool], max_width: float) -> tuple[list[str], list[bool]]:
    out_words: list[str] = []
    out_spaces: list[bool] = []
    for word, space in zip(words, spaces, strict=True):
        pieces = split_wide_text(word, max_width) if text_width(word) > max_width else [word]
        out_words.extend(pieces)
        out_spaces.extend([space] + [False] * (len(pieces) - 1))
    return out_words, out_spaces


def _greedy_line_count(widths: list[float], spaces: list[bool], max_width: float) -> int:
    """The fewest lines the words wrap into (greedy wrapping is optimal for the count)."""
    needed, cur = 1, widths[0]
    for k in range(1, len(widths)):
        gap = 0.5 if spaces[k] else 0.0
        if cur + gap + widths[k] <= max_width:
            cur += gap + widths[k]
        else:
            needed += 1
            cur = widths[k]
    return needed


def _balanced_breaks(
    line_width, break_cost: list[float], n: int, lines_count: int, max_width: float
) -> list[int] | None:
    """Line starts for words[:n] in lines_count lines minimising the widest line, then
    preferring breaks after punctuation, then a shorter top line; None if none fits."""
    inf = (math.inf, math.inf, math.inf)
    # best[(k, j)]: score of wrapping words[:j] into k lines
    best: dict[tuple[int, int], tuple[float, float, float]] = {(0, 0): (0.0, 0.0, 0.0)}
    back: dict[tuple[int, int], int] = {}
    for k in range(1, lines_count + 1):
        for j in range(1, n + 1):
            # Lines ending at j, longest last: once one is too wide, all longer ones are too.
            for i in range(j - 1, k - 2, -1):
                w = line_width(i, j)
                if w > max_width and j - i > 1:
                    break
                prev = best.get((k - 1, i), inf)
                if prev == inf:
                    continue
                score = (max(prev[0], w), prev[1] + break_cost[j - 1], w if k == 1 else prev[2])
                if score < best.get((k, j), inf):
                    best[(k, j)] = score
                    back[(k, j)] = i
    if (lines_count, n) not in best:
        return None
    starts: list[int] = []
    j = n
    for k in range(lines_count, 0, -1):
        j = back[(k, j)]
        starts.append(j)
    return starts[::-1]


def wrap_words(words: list[str], spaces: list[bool], max_width: float, max_lines: int) -> list[str]:
    """Wrap words into the fewest lines that fit, then balance them (minimise the widest line).

    `spaces[i]` says whether word i is separated from word i-1 by a space. A word wider than
    max_width is first broken by width (split_wide_text). If the words cannot fit in
    max_lines, the fewest lines that respect max_width are used.
    """
    if not words:
        return []
    words, spaces = _split_wide_words(list(words), list(spaces), max_width)
    n = len(words)
    widths = [text_width(w) for w in words]
    # Prefix sums make any line's width O(1): words plus the half-width spaces between them.
    cum_w = [0.0, *itertools.accumulate(widths)]
    cum_s = [0.0, *itertools.accumulate(0.5 if spaces[k] and k > 0 else 0.0 for k in range(n))]

    def line_width(i: int, j: int) -> float:
        return cum_w[j] - cum_w[i] + cum_s[j] - cum_s[i + 1]

    def render(i: int, j: int) -> str:
        return words[i] + "".join((" " if spaces[k] else "") + words[k] for k in range(i + 1, j))

    break_cost = [0.0 if _is_punct(w[-1]) else 1.0 for w in words]
    break_cost[-1] = 0.0
    starts = _balanced_breaks(line_width, break_cost, n, _greedy_line_count(widths, spaces, max_width), max_width)
    if starts is None:
        return [render(0, n)]
    return [render(i, j) for i, j in zip(starts, [*starts[1:], n], strict=True)]


def _break_wide_words(words: list[_Word], max_width: float) -> list[_Word]:
    """Words wider than a line broken by width, their time shared out by width."""
    out: list[_Word] = []
    for word in words:
        if word.width <= max_width:
            out.append(word)
            continue
        pieces = split_wide_text(word.text, max_width)
        total = sum(text_width(p) for p in pieces) or 1.0
        t, step = word.start, (word.end - word.start) / total
        for k, piece in enumerate(pieces):
            end = t + step * text_width(piece)
            out.append(_Word(piece, word.space_before if k == 0 else False, t, end, list(word.token_indices)))
            t = end
    return out


# ---------------------------------------------------------------------------- building


def _spaces_from_text(tokens: list[str], text: str) -> list[bool] | None:
    """For each token, whether the segment text has whitespace before it; None if they do not line up.

    Some engines hand over bare words ("It", "was") and keep the spacing only in the text, so
    the text decides where words start.
    """
    out: list[bool] = []
    pos, n = 0, len(text)
    for tok in tokens:
        letters = [ch.casefold() for ch in tok if not ch.isspace() and ch != SP_SPACE and not _is_punct(ch)]
        space = False
        for k, letter in enumerate(letters):
            while pos < n and (text[pos].isspace() or _is_punct(text[pos])):
                space = space or (k == 0 and text[pos].isspace())
                pos += 1
            if pos >= n or text[pos].casefold() != letter:
                return None
            pos += 1
        out.append(space)
    return out


def _segment_words(seg: Segment) -> tuple[list[_Word], bool]:
    """The segment's words, and whether they carry engine token times."""
    tokens = list(seg.tokens)
    if tokens and "".join(tokens).strip(" " + SP_SPACE):
        sentencepiece = any(SP_SPACE in t for t in tokens)
        if not sentencepiece and not any(t[:1].isspace() for t in tokens):
            # Bare tokens: take word starts from the text's spaces when the text matches.
            spaces = _spaces_from_text(tokens, seg.text)
            if spaces is not None:
                tokens = [(" " + t if space else t) for t, space in zip(tokens, spaces, strict=True)]
        spaced = not sentencepiece and any(t[:1].isspace() for t in tokens)
        words = _group_tokens(tokens, spaced)
        _adopt_text(words, seg.text)
        times = seg.token_times if seg.token_times is not None and len(seg.token_times) == len(tokens) else None
    else:
        words = _group_tokens(_tokens_from_text(seg.text), spaced=True)
        times = None
    if times is not None:
        for w in words:
            w.start = min(float(times[t][0]) for t in w.token_indices)
            w.end = max(float(max(times[t])) for t in w.token_indices)
        # Engines may emit tokens slightly out of order; cue cutting needs time order.
        for prev, w in itertools.pairwise(words):
            w.start = max(w.start, prev.start)
            w.end = max(w.end, w.start)
    return words, times is not None


def _cue_confidences(seg: Segment, piece: list[_Word]) -> tuple[float | None, list[float] | None]:
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
) -> list[Cue]:
    """Cues for a whole file: each segment split and wrapped, then the times tidied across the file."""
    opt = options or CueOptions()
    cues: list[Cue] = []
    for seg in sorted(segments, key=lambda s: s.start):
        if not seg.text.strip():
            continue
        words, has_times = _segment_words(seg)
        if not words:
            continue
        regions = clip_regions(speech, seg.start, seg.end)
        if not has_times:
            _spread_times(words, regions or [(seg.start, max(seg.end, seg.start))])
        words = _break_wide_words(words, opt.max_line_width)
        for chunk in _pause_chunks(words, regions, opt.pause_split):
            for piece in _split_chunk(chunk, opt):
                lines = wrap_words(
                    [w.text for w in piece],
                    [w.space_before for w in piece],
                    opt.max_line_width,
                    opt.max_lines,
                )
                end = max(w.end for w in piece)
                mean, own = _cue_confidences(seg, piece)
                cues.append(Cue(piece[0].start, end, lines, mean, list(seg.flags), own))
    if opt.snap_to_speech > 0:
        snap_to_speech_onsets(cues, speech, opt.snap_to_speech)
    return tidy_cues(cues, duration, opt)


def snap_to_speech_onsets(cues: list[Cue], speech: list[tuple[float, float]], max_shift: float) -> None:
    """Move each cue's start to the nearest VAD speech onset within `max_shift` seconds.

    Token times from attention or word alignment are often a tenth of a second or two off at
    the start of a sentence (Whisper's tend to be late); the VAD's onset is where the voice
    really begins. Never moves a start before the previous cue's end or past its own end.
    """
    onsets = sorted(start for start, _ in speech)
    previous_end = 0.0
    for cue in cues:
        near = [o for o in onsets if abs(o - cue.start) <= max_shift and previous_end <= o < cue.end]
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
    _hold_min_duration(out, hi, opt)
    _hold_reading_speed(out, hi, opt)
    for c in out:
        c.start, c.end = round(c.start, 3), round(c.end, 3)
    return out


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
