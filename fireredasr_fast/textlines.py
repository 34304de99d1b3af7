"""Text on screen: display widths, joining wrapped lines back into running text, and wrapping
words into balanced lines.

Display width follows subtitle convention: a CJK character or full-width punctuation
mark counts 1, a Latin character or space counts 0.5.
"""

from __future__ import annotations

import functools
import itertools
import math
import unicodedata

# Sentence ends: always a good place for a cue boundary, a poor place to run on.
STRONG_PUNCT = frozenset("。！？!?.…；;")
# Clause marks: a good place for a boundary when one is needed anyway.
WEAK_PUNCT = frozenset("，,、：:")
# SentencePiece marks a word start with this character.
SP_SPACE = "▁"


@functools.cache  # a long file's cues measure the same few thousand characters again and again
def char_width(ch: str) -> float:
    if unicodedata.combining(ch):
        return 0.0
    return 1.0 if unicodedata.east_asian_width(ch) in ("W", "F") else 0.5


def text_width(text: str) -> float:
    return sum(map(char_width, text))


def is_cjk(ch: str) -> bool:
    """A wide letter (Han, kana, Hangul): text that breaks between characters, without spaces."""
    return unicodedata.east_asian_width(ch) in ("W", "F") and not is_punct(ch)


def is_punct(ch: str) -> bool:
    return unicodedata.category(ch).startswith("P")


def is_opening(ch: str) -> bool:
    # Opening brackets and quotes belong to the word after them.
    return unicodedata.category(ch) in ("Ps", "Pi")


def join_lines(lines: list[str]) -> str:
    """Join wrapped lines back into running text (no space between two CJK characters)."""
    out = ""
    for line in lines:
        line = line.strip()
        if not line:
            continue
        if out and not (no_space_after(out[-1]) and no_space_before(line[0])):
            out += " "
        out += line
    return out


def no_space_after(ch: str) -> bool:
    return is_cjk(ch) or (is_punct(ch) and char_width(ch) == 1.0)


def no_space_before(ch: str) -> bool:
    return is_cjk(ch) or is_punct(ch)


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
            last_mark = max((k for k, c in enumerate(cur) if is_punct(c) or c == "-"), default=-1)
        cur += ch
        cur_w += w
        if is_punct(ch) or ch == "-":
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

    break_cost = [0.0 if is_punct(w[-1]) else 1.0 for w in words]
    break_cost[-1] = 0.0
    starts = _balanced_breaks(line_width, break_cost, n, _greedy_line_count(widths, spaces, max_width), max_width)
    if starts is None:
        return [render(0, n)]
    return [render(i, j) for i, j in zip(starts, [*starts[1:], n], strict=True)]
