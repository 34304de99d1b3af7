"""Words from an engine's tokens: unbreakable display units (one CJK character or one Latin
word, punctuation attached) spelled as the segment text spells them, with times from the
tokens or, without them, spread over the speech regions."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

from .results import Segment, SpokenWord, Turn
from .textlines import SP_SPACE, char_width, is_cjk, is_opening, is_punct, no_space_after, split_wide_text, text_width


@dataclass
class Word:
    """An unbreakable display unit: one CJK character or one Latin word, with punctuation attached."""

    text: str
    space_before: bool  # whether a space separates it from the previous word on the same line
    start: float = 0.0
    end: float = 0.0
    token_indices: list[int] = field(default_factory=list)
    speaker: str | None = None  # with speaker labels (label_words)

    @property
    def width(self) -> float:
        return text_width(self.text)


def tokens_from_text(text: str) -> list[str]:
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
        elif is_cjk(ch) or (is_punct(ch) and char_width(ch) == 1.0):
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


def group_tokens(tokens: list[str], spaced: bool) -> list[Word]:
    """Group tokens into words.

    `spaced` means the tokens carry their own spacing (Whisper words, or text split here),
    so no space is invented between CJK and Latin; SentencePiece and bare character tokens
    get a space at every CJK/Latin boundary.
    """
    grouping = _Grouping(spaced)
    for idx, tok in enumerate(tokens):
        grouping.add(idx, tok)
    return grouping.finish()


def _starts_word(prev: Word | None, core: str, lead: bool, spaced: bool, prefixed: bool) -> tuple[bool, bool]:
    """Whether a token starts a new word, and whether a space separates that word from `prev`."""
    if prev is None:
        return True, False
    if lead:
        return True, True
    if is_cjk(core[0]) or no_space_after(prev.text[-1]):
        # A word boundary at every CJK character. Tokens without their own spacing
        # (SentencePiece, bare characters) get a space where a Latin word meets CJK.
        return True, not spaced and _latin_meets_cjk(prev.text[-1], core[0])
    return prefixed, False  # else a SentencePiece continuation piece, or punctuation inside a word


def _latin_meets_cjk(last: str, first: str) -> bool:
    latin_next = first.isalnum() and not is_cjk(first)
    latin_prev = last.isalnum() and not is_cjk(last)
    return (latin_next and is_cjk(last)) or (latin_prev and is_cjk(first))


@dataclass
class _Grouping:
    """Tokens being grouped into words, one at a time (group_tokens)."""

    spaced: bool
    words: list[Word] = field(default_factory=list)
    prefix: str = ""  # opening punctuation waiting for the next word
    prefix_indices: list[int] = field(default_factory=list)
    pending_space: bool = False

    def add(self, idx: int, tok: str) -> None:
        lead = tok[:1] in (" ", SP_SPACE) or tok[:1].isspace()
        core = tok.replace(SP_SPACE, " ").strip()
        if not core:
            self.pending_space = self.pending_space or lead
            return
        lead = lead or self.pending_space
        self.pending_space = False
        if all(is_punct(ch) for ch in core) and self._add_punct(idx, core, lead):
            return
        self._add_word(idx, core, lead)

    def _add_punct(self, idx: int, core: str, lead: bool) -> bool:
        """Punctuation joins the word before it or waits for the word it opens; False when it
        stands as a word of its own."""
        words = self.words
        if words and not is_opening(core[0]) and not (lead and self.spaced):
            words[-1].text += core
            words[-1].token_indices.append(idx)
            return True
        if is_opening(core[0]) or not words:
            self.prefix += core
            self.prefix_indices.append(idx)
            self.pending_space = lead  # the space before "(" separates the word it opens
            return True
        return False

    def _add_word(self, idx: int, core: str, lead: bool) -> None:
        prev = self.words[-1] if self.words else None
        new, space = _starts_word(prev, core, lead, self.spaced, bool(self.prefix))
        if new or prev is None:
            self.words.append(Word(self.prefix + core, space, token_indices=[*self.prefix_indices, idx]))
        else:
            prev.text += self.prefix + core
            prev.token_indices.extend([*self.prefix_indices, idx])
        self.prefix, self.prefix_indices = "", []

    def finish(self) -> list[Word]:
        if self.prefix:
            if self.words:
                self.words[-1].text += self.prefix
                self.words[-1].token_indices.extend(self.prefix_indices)
            else:
                self.words.append(Word(self.prefix, False, token_indices=self.prefix_indices))
        return self.words


def adopt_text(words: list[Word], text: str) -> None:
    """Take each word's spelling and punctuation from the segment text when the two agree.

    The text is the authority (a punctuation model or case fix may have rewritten it while
    the tokens stayed raw). If the letters do not line up, the token spelling is kept.
    """
    spans = _word_spans(words, text)
    if spans is None:
        return
    n = len(text)
    # Extend each span over the punctuation that follows it (but not over an opening mark).
    for i, (begin, end) in enumerate(spans):
        limit = spans[i + 1][0] if i + 1 < len(spans) else n
        while end < limit and is_punct(text[end]) and not (is_opening(text[end]) and i + 1 < len(spans)):
            end += 1
        piece = text[begin:end].strip()
        if piece:
            words[i].text = piece


def _word_spans(words: list[Word], text: str) -> list[tuple[int, int]] | None:
    """Where each word's letters are in the text, punctuation between them skipped; None if
    the letters do not line up or the text has letters left over."""
    spans: list[tuple[int, int]] = []
    pos = 0
    n = len(text)
    for word in words:
        while pos < n and (text[pos].isspace() or (is_punct(text[pos]) and not is_opening(text[pos]))):
            pos += 1
        begin = pos
        end = _match_letters(word, text, pos)
        if end is None:
            return None
        pos = end
        spans.append((begin, pos))
    if any(not ch.isspace() and not is_punct(ch) for ch in text[pos:]):
        return None
    return spans


def _match_letters(word: Word, text: str, pos: int) -> int | None:
    """The position after the word's letters in the text from `pos` (punctuation skipped), or None."""
    n = len(text)
    for letter in [ch.casefold() for ch in word.text if not is_punct(ch) and not ch.isspace()]:
        while pos < n and is_punct(text[pos]):
            pos += 1
        if pos >= n or text[pos].casefold() != letter:
            return None
        pos += 1
    return pos


def spaces_from_text(tokens: list[str], text: str) -> list[bool] | None:
    """For each token, whether the segment text has whitespace before it; None if they do not line up.

    Some engines hand over bare words ("It", "was") and keep the spacing only in the text, so
    the text decides where words start.
    """
    out: list[bool] = []
    pos, n = 0, len(text)
    for tok in tokens:
        letters = [ch.casefold() for ch in tok if not ch.isspace() and ch != SP_SPACE and not is_punct(ch)]
        space = False
        for k, letter in enumerate(letters):
            while pos < n and (text[pos].isspace() or is_punct(text[pos])):
                space = space or (k == 0 and text[pos].isspace())
                pos += 1
            if pos >= n or text[pos].casefold() != letter:
                return None
            pos += 1
        out.append(space)
    return out


def segment_words(seg: Segment) -> tuple[list[Word], bool]:
    """The segment's words, and whether they carry engine token times."""
    tokens = list(seg.tokens)
    if tokens and "".join(tokens).strip(" " + SP_SPACE):
        words, times = _token_words(seg, tokens)
    else:
        words = group_tokens(tokens_from_text(seg.text), spaced=True)
        times = None
    if times is not None:
        _time_words(words, times)
    return words, times is not None


def _token_words(seg: Segment, tokens: list[str]) -> tuple[list[Word], list[tuple[float, float]] | None]:
    """Words from the segment's tokens, and their times when there is one per token."""
    sentencepiece = any(SP_SPACE in t for t in tokens)
    if not sentencepiece and not any(t[:1].isspace() for t in tokens):
        # Bare tokens: take word starts from the text's spaces when the text matches.
        spaces = spaces_from_text(tokens, seg.text)
        if spaces is not None:
            tokens = [(" " + t if space else t) for t, space in zip(tokens, spaces, strict=True)]
    spaced = not sentencepiece and any(t[:1].isspace() for t in tokens)
    words = group_tokens(tokens, spaced)
    adopt_text(words, seg.text)
    times = seg.token_times if seg.token_times is not None and len(seg.token_times) == len(tokens) else None
    return words, times


def _time_words(words: list[Word], times: list[tuple[float, float]]) -> None:
    """Each word from its first token's start to its last token's end, in time order."""
    for w in words:
        w.start = min(float(times[t][0]) for t in w.token_indices)
        w.end = max(float(max(times[t])) for t in w.token_indices)
    # Engines may emit tokens slightly out of order; cue cutting needs time order.
    for prev, w in itertools.pairwise(words):
        w.start = max(w.start, prev.start)
        w.end = max(w.end, w.start)


def spread_times(words: list[Word], regions: list[tuple[float, float]]) -> None:
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


def break_wide_words(words: list[Word], max_width: float) -> list[Word]:
    """Words wider than a line broken by width, their time shared out by width."""
    out: list[Word] = []
    for word in words:
        if word.width <= max_width:
            out.append(word)
            continue
        pieces = split_wide_text(word.text, max_width)
        total = sum(text_width(p) for p in pieces) or 1.0
        t, step = word.start, (word.end - word.start) / total
        for k, piece in enumerate(pieces):
            end = t + step * text_width(piece)
            space = word.space_before if k == 0 else False
            out.append(Word(piece, space, t, end, list(word.token_indices), word.speaker))
            t = end
    return out


# ---------------------------------------------------------------------------- speakers
# Speaker turns: results.Turn, as FileResult.turns holds them.


def speaker_at(turns: Sequence[Turn], t: float, starts: Sequence[float] | None = None) -> str | None:
    """The speaker of the turn covering `t`, else of the nearest turn (a word's edge may lie in
    a gap the diarization left); None when there are no turns. `starts`: the turns' starts,
    when the caller looks up many times."""
    if not turns:
        return None
    i = bisect.bisect_right(starts if starts is not None else [start for start, _, _ in turns], t) - 1
    if i >= 0 and turns[i][1] >= t:
        return turns[i][2]
    near = [k for k in (i, i + 1) if 0 <= k < len(turns)]
    return turns[min(near, key=lambda k: max(turns[k][0] - t, t - turns[k][1]))][2] if near else None


def label_words(words: list[Word], turns: Sequence[Turn]) -> None:
    """Each word's speaker: the turn covering its midpoint (speaker_at)."""
    starts = [start for start, _, _ in turns]
    for word in words:
        word.speaker = speaker_at(turns, (word.start + word.end) / 2, starts)


def speaker_runs(words: list[Word]) -> list[list[Word]]:
    """`words` cut where the speaker changes."""
    return [list(run) for _, run in itertools.groupby(words, key=lambda w: w.speaker)]


def majority_speaker(words: Sequence[Word]) -> str | None:
    """The speaker of most of the words' time (ties: the one heard first); None for no words."""
    seconds: dict[str | None, float] = {}
    for word in words:
        # Words without duration (collapsed times) still count, a little.
        seconds[word.speaker] = seconds.get(word.speaker, 0.0) + max(word.end - word.start, 0.0) + 1e-3
    return max(seconds, key=seconds.__getitem__) if seconds else None


def timed_words(seg: Segment, regions: list[tuple[float, float]]) -> list[Word]:
    """The segment's words with times: the engine's, else spread over its speech `regions`."""
    words, has_times = segment_words(seg)
    if words and not has_times:
        spread_times(words, regions or [(seg.start, max(seg.end, seg.start))])
    return words


def label_segment(seg: Segment, regions: list[tuple[float, float]], turns: Sequence[Turn]) -> None:
    """Give the segment its words with their speakers, and the speaker of most of it."""
    words = timed_words(seg, regions) if seg.text.strip() else []
    label_words(words, turns)
    seg.words = [SpokenWord((" " if w.space_before else "") + w.text, w.start, w.end, w.speaker) for w in words]
    seg.speaker = majority_speaker(words)
    if seg.speaker is None and turns:  # no words: the speaker at its middle
        seg.speaker = speaker_at(turns, (seg.start + seg.end) / 2)
