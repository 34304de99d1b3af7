"""Cue building: splitting, wrapping, timing and the tidy-up rules, checked with the validator."""

from __future__ import annotations

import itertools
import random

import pytest

from fireredasr_fast.cues import CueOptions, build_cues, snap_to_speech_onsets, tidy_cues
from fireredasr_fast.results import Cue, Segment, uncovered_speech
from fireredasr_fast.textlines import join_lines, text_width, wrap_words
from fireredasr_fast.tokentimes import refine_token_times
from testsupport.validate import validate_cues

# Fifty-odd characters of news-style Mandarin, no punctuation (as FireRedASR-AED emits it).
ZH = (
    "各位观众大家好欢迎收看今天的新闻联播首先为您介绍今天的主要内容"
    "国家主席在人民大会堂会见了来访的外国领导人双方就共同关心的国际和地区问题交换了意见"
)
EN_WORDS = (
    "IT WAS THE BEST OF TIMES IT WAS THE WORST OF TIMES IT WAS THE AGE OF WISDOM IT WAS THE AGE OF "
    "FOOLISHNESS IT WAS THE EPOCH OF BELIEF IT WAS THE EPOCH OF INCREDULITY"
).split()


def timed_chars(text: str, start: float, step: float = 0.2) -> tuple[list[str], list[tuple[float, float]]]:
    tokens = list(text)
    times = [(start + i * step, start + i * step + step * 0.9) for i in range(len(tokens))]
    return tokens, times


def sentencepiece(words: list[str]) -> list[str]:
    """SentencePiece-like pieces: long words are cut into a "▁" head and a continuation."""
    pieces = []
    for w in words:
        if len(w) > 4:
            pieces += ["▁" + w[:3], w[3:]]
        else:
            pieces.append("▁" + w)
    return pieces


def cue_chars(cues: list[Cue]) -> list[str]:
    """Every cue's text with spaces removed, for matching against character tokens."""
    return ["".join("".join(c.lines).split()) for c in cues]


def assert_starts_on_first_token(cues: list[Cue], token_texts: list[str], times: list[tuple[float, float]]) -> None:
    """Walk the tokens through the cues: each cue must start on the time of its first token."""
    k = 0
    for cue, text in zip(cues, cue_chars(cues), strict=True):
        first = k
        consumed = ""
        while len(consumed) < len(text):
            consumed += token_texts[k].replace("▁", "")
            k += 1
        assert consumed == text
        assert abs(cue.start - times[first][0]) <= 0.01
    assert k == len(token_texts), "some tokens are missing from the cues"


# ------------------------------------------------------------------------- widths and joining


def test_width_counts_cjk_as_one_and_latin_as_half() -> None:
    assert text_width("你好") == 2.0
    assert text_width("ab c") == 2.0
    assert text_width("，。") == 2.0
    assert text_width("你好 AB") == 3.5


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        (["▁IT", "▁WAS", "▁THE", "▁BE", "ST"], "IT WAS THE BEST"),
        (["我", "喜", "欢", "▁PY", "THON", "和", "▁C"], "我喜欢 PYTHON 和 C"),
        (["今", "天", "▁OK", "吗"], "今天 OK 吗"),
        ([" Hello,", " world,", " I'm", " here!"], "Hello, world, I'm here!"),
        ([" see", " (", "below", ")", " now"], "see (below) now"),
        (["It", "was", "the", "best."], "It was the best."),  # bare words: spacing from the text
        (["I", "use", "Python", "每", "天"], "I use Python每天"),  # the text's own spacing is kept
        (["“", "你", "好", "”", "，", "世", "界"], "“你好”，世界"),
        (["你", "好", "，", "世", "界", "。"], "你好，世界。"),
    ],
)
def test_tokens_join_into_display_text(tokens: list[str], expected: str) -> None:
    times = [(1.0 + 0.1 * i, 1.08 + 0.1 * i) for i in range(len(tokens))]
    seg = Segment(1.0, 3.0, expected, tokens, times)
    cues = build_cues([seg], [(1.0, 3.0)], 10.0, CueOptions(max_line_width=40))
    assert [c.lines for c in cues] == [[expected]]


def test_join_lines_puts_spaces_only_between_latin_words() -> None:
    assert join_lines(["今天天气", "很好"]) == "今天天气很好"
    assert join_lines(["IT WAS THE", "BEST OF TIMES"]) == "IT WAS THE BEST OF TIMES"


def test_wrap_balances_lines_and_keeps_words_whole() -> None:
    words = "ONE TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE TEN".split()
    lines = wrap_words(words, [i > 0 for i in range(len(words))], max_width=16, max_lines=2)
    assert len(lines) == 2
    assert " ".join(lines).split() == words
    widths = [text_width(line) for line in lines]
    assert max(widths) <= 16 and abs(widths[0] - widths[1]) <= 3.0
    cjk = wrap_words(list("一二三四五六七八九十甲乙丙丁戊己庚辛"), [False] * 18, max_width=16, max_lines=2)
    assert [len(line) for line in cjk] == [9, 9]


# ------------------------------------------------------------------------- Mandarin


def test_long_mandarin_with_token_times_is_split_into_valid_cues() -> None:
    tokens, times = timed_chars(ZH, start=1.0)
    seg = Segment(0.8, times[-1][1] + 0.3, ZH, tokens, times)
    speech = [(1.0, times[-1][1])]
    opt = CueOptions()
    cues = build_cues([seg], speech, 60.0, opt)
    assert len(cues) > 1
    assert validate_cues(cues, 60.0, speech, opt) == []
    assert "".join(cue_chars(cues)) == ZH
    assert_starts_on_first_token(cues, tokens, times)
    # Consecutive cues keep the minimum gap.
    assert all(b.start - a.end >= opt.min_gap - 1e-6 for a, b in itertools.pairwise(cues))


def test_mandarin_without_token_times_starts_at_speech_not_padding() -> None:
    # Segment padded by 0.5 s on both sides, with a VAD pause in the middle.
    speech = [(10.5, 14.0), (15.0, 19.5)]
    seg = Segment(10.0, 20.0, ZH[:40])
    cues = build_cues([seg], speech, 30.0)
    assert validate_cues(cues, 30.0, speech, tolerance=0.0) == []
    assert cues[0].start == pytest.approx(10.5, abs=0.01)
    assert "".join(cue_chars(cues)) == ZH[:40]
    # No cue runs across the VAD pause: every cue lies within one speech region.
    for cue in cues:
        region_end = next(b for a, b in speech if a - 0.01 <= cue.start < b)
        assert cue.end <= max(region_end, cue.start + CueOptions().min_duration) + 0.01


def test_text_punctuation_is_used_for_splitting() -> None:
    # Tokens without punctuation, text punctuated afterwards: the text is the authority.
    text = "今天天气很好，我们去公园散步吧。然后去吃饭，好不好？"
    plain = [ch for ch in text if ch not in "，。？"]
    tokens, times = timed_chars("".join(plain), start=0.0, step=0.25)
    cues = build_cues([Segment(0.0, 6.0, text, tokens, times)], [(0.0, 6.0)], 6.0)
    assert "".join(join_lines(c.lines) for c in cues) == text
    # The sentence end is a cue boundary, and no cue starts with punctuation.
    assert any(join_lines(c.lines).endswith("。") for c in cues)
    assert all(join_lines(c.lines)[0] not in "，。？" for c in cues)


# ------------------------------------------------------------------------- English


def test_long_english_sentencepiece_keeps_words_whole() -> None:
    pieces = sentencepiece(EN_WORDS)
    times = [(2.0 + 0.15 * i, 2.13 + 0.15 * i) for i in range(len(pieces))]
    seg = Segment(2.0, times[-1][1] + 0.2, " ".join(EN_WORDS), pieces, times)
    opt = CueOptions(max_line_width=12)  # narrow, so lines and cues must break often
    cues = build_cues([seg], [(2.0, seg.end)], 60.0, opt)
    assert len(cues) > 2
    assert validate_cues(cues, 60.0, [(2.0, seg.end)], opt) == []
    # Reading every line word by word gives back the input words in order: none was split.
    assert [w for c in cues for line in c.lines for w in line.split()] == EN_WORDS
    assert_starts_on_first_token(cues, pieces, times)


def test_english_text_without_tokens_is_spread_over_speech() -> None:
    speech = [(5.3, 12.0), (12.8, 19.0)]
    seg = Segment(5.0, 19.5, " ".join(EN_WORDS))
    cues = build_cues([seg], speech, 20.0)
    assert validate_cues(cues, 20.0, speech, tolerance=0.0) == []
    assert cues[0].start == pytest.approx(5.3, abs=0.01)
    assert [w for c in cues for line in c.lines for w in line.split()] == EN_WORDS


@pytest.mark.parametrize("lead", [" ", ""], ids=["spaced words", "bare words"])
def test_whisper_words_split_at_sentence_ends(lead: str) -> None:
    sentences = ["Hello there, my old friend.", "How have you been lately?", "I missed our long talks!"]
    words = [lead + w for s in sentences for w in s.split()]
    times = [(0.5 + 0.3 * i, 0.75 + 0.3 * i) for i in range(len(words))]
    seg = Segment(0.0, 6.0, " ".join(sentences), words, times)
    cues = build_cues([seg], [(0.5, 5.5)], 6.0)
    # Too long for one cue (capacity 32 wide), so it splits, and only at sentence ends.
    assert len(cues) >= 2
    assert all(join_lines(c.lines)[-1] in ".?!" for c in cues)
    assert " ".join(join_lines(c.lines) for c in cues) == " ".join(sentences)


# ------------------------------------------------------------------------- pauses and timing rules


def test_pause_between_tokens_splits_a_short_cue() -> None:
    tokens = ["你", "好", "朋", "友"]
    times = [(1.0, 1.2), (1.2, 1.4), (1.8, 2.0), (2.0, 2.2)]  # 0.4 s silence in the middle
    cues = build_cues([Segment(1.0, 2.5, "你好朋友", tokens, times)], [(1.0, 2.5)], 5.0)
    assert [c.lines for c in cues] == [["你好"], ["朋友"]]
    assert cues[1].start == pytest.approx(1.8)
    # The first cue is extended towards min_duration (to 1.8 s), but stops min_gap before the next.
    assert cues[0].end == pytest.approx(1.8 - CueOptions().min_gap)
    # The last cue has silence after it and gets its full min_duration.
    assert cues[1].end == pytest.approx(1.8 + CueOptions().min_duration)
    # A shorter gap than pause_split keeps the words together.
    close = [(1.0, 1.2), (1.2, 1.4), (1.6, 1.8), (1.8, 2.0)]
    assert len(build_cues([Segment(1.0, 2.5, "你好朋友", tokens, close)], [(1.0, 2.5)], 5.0)) == 1


def test_vad_pause_inside_segment_splits_even_without_token_gap() -> None:
    tokens, times = timed_chars("一二三四五六七八", start=0.0, step=0.25)  # evenly timed, no token gap
    speech = [(0.0, 0.95), (1.05, 2.0)]  # VAD heard a short pause around 1.0 s
    cues = build_cues([Segment(0.0, 2.0, "一二三四五六七八", tokens, times)], speech, 2.0)
    assert [join_lines(c.lines) for c in cues] == ["一二三四", "五六七八"]


def test_empty_segments_give_no_cues() -> None:
    segs = [Segment(0.0, 2.0, ""), Segment(3.0, 4.0, "   ", ["▁"], [(3.0, 3.1)])]
    assert build_cues(segs, [(0.0, 4.0)], 5.0) == []
    assert build_cues([], [], 5.0) == []


def test_tidy_enforces_gap_min_duration_and_file_bounds() -> None:
    opt = CueOptions()
    cues = [
        Cue(-0.5, 0.2, ["a"]),  # starts before the file, too short
        Cue(0.25, 2.0, ["b"]),  # overlaps the first
        Cue(5.0, 5.1, ["c"]),  # too short, silence after it
        Cue(9.8, 12.0, ["d"]),  # runs past the end of the file
    ]
    out = tidy_cues(cues, 10.0, opt)
    assert validate_cues(out, 10.0, options=opt) == []
    assert out[0].start == 0.0
    # The first cue has no silence before or after it for its minimum duration: it keeps
    # min_duration and the second cue starts min_gap after it (before issue 28 the first was
    # left at 0.15 s).
    assert out[0].end == pytest.approx(opt.min_duration)
    assert out[1].start == pytest.approx(opt.min_duration + opt.min_gap)
    assert out[1].end == pytest.approx(2.0)
    assert out[2].end == pytest.approx(5.0 + opt.min_duration)
    assert out[3].end == 10.0
    for a, b in itertools.pairwise(out):
        assert b.start - a.end >= opt.min_gap - 1e-6
        assert a.start < a.end


def test_cue_times_never_exceed_max_duration() -> None:
    # One token claims 12 s (a broken alignment); the cue still stops at max_duration.
    cues = build_cues([Segment(0.0, 13.0, "好", ["好"], [(0.5, 12.5)])], [(0.0, 13.0)], 13.0)
    assert len(cues) == 1 and cues[0].end - cues[0].start <= CueOptions().max_duration + 1e-6


def test_refine_token_times_moves_tokens_out_of_pauses() -> None:
    speech = [(0.0, 1.0), (2.0, 3.0)]
    times = [(0.2, 0.4), (0.9, 1.6), (1.7, 2.3), (2.4, 2.2), (3.2, 3.5)]
    out = refine_token_times(times, speech)
    assert out[0] == (0.2, 0.4)  # already inside speech: untouched
    assert out[1] == (0.9, 1.0)  # straddled the pause, mostly before it: clipped to the first region
    assert out[2] == (2.0, 2.3)  # started in the pause: moved onto the next region's start
    assert out[4] == (3.0, 3.0)  # after the last region: onto its end
    for a, b in out:
        assert a <= b
        assert any(ra <= a and b <= rb for ra, rb in speech), "a token straddles a pause"
    starts = [a for a, _ in out]
    assert starts == sorted(starts)
    assert refine_token_times(times, []) == times


# ------------------------------------------------------------------------- the validator itself


def test_validator_reports_each_broken_rule() -> None:
    opt = CueOptions()
    good = [Cue(1.0, 2.0, ["你好"]), Cue(2.5, 4.0, ["世界"])]
    assert validate_cues(good, 10.0, [(1.0, 4.0)], opt) == []
    cases = {
        "overlaps": [Cue(1.0, 3.0, ["a"]), Cue(2.0, 4.0, ["b"])],
        "before the previous": [Cue(2.0, 3.0, ["a"]), Cue(1.0, 1.5, ["b"])],
        "start is not before end": [Cue(2.0, 2.0, ["a"])],
        "outside the file": [Cue(9.0, 11.0, ["a"])],
        "more than 7.0s": [Cue(1.0, 9.0, ["a"])],
        "empty text": [Cue(1.0, 2.0, [""])],
        "lines, more than": [Cue(1.0, 2.0, ["a", "b", "c"])],
        "wide": [Cue(1.0, 2.0, ["一二三四五六七八九十一二三四五六七"])],
        "no speech": [Cue(6.0, 7.0, ["a"])],
    }
    for expected, cues in cases.items():
        problems = validate_cues(cues, 10.0, [(1.0, 4.0)], opt)
        assert problems and any(expected in p for p in problems), (expected, problems)


# ------------------------------------------------------------------------- randomised files


@pytest.mark.parametrize("seed", range(6))
def test_random_files_always_give_valid_cues(seed: int) -> None:
    """Random files mixing every token style and timing mode: the rules hold, no text is lost."""
    rng = random.Random(seed)
    hanzi = "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对"
    latin = "THE OF AND TO IN IS YOU THAT IT WAS FOR ON ARE AS WITH HIS THEY BELIEF WISDOM FOOLISHNESS".split()
    duration = rng.uniform(60, 120)
    segments, speech = [], []
    t = rng.uniform(0, 2)
    while t < duration - 5:
        s0, s1 = t, min(t + rng.uniform(2, 60), duration)
        regions, u = [], s0 + rng.uniform(0, 0.4)
        while u < s1 - 0.5:
            e = min(u + rng.uniform(0.3, 8), s1 - 0.2)
            regions.append((u, e))
            u = e + rng.uniform(0.1, 1.5)
        t = s1 + rng.uniform(0.2, 3)
        if not regions:
            continue
        speech += regions
        style = rng.choice(["zh", "sentencepiece", "mixed", "whisper"])
        tokens: list[str] = []
        for _ in range(int((s1 - s0) * rng.uniform(1, 5)) + 1):
            if style == "zh" or (style == "mixed" and rng.random() < 0.6):
                tokens.append(rng.choice(hanzi))
            elif style == "whisper":
                tokens.append(" " + rng.choice(latin).lower() + rng.choice(["", "", ",", "."]))
            else:
                tokens += sentencepiece([rng.choice(latin)])
        text = "".join(tokens).replace("▁", " ").strip()
        mode = rng.choice(["times", "estimated", "text only"])
        if mode == "text only":
            segments.append(Segment(s0, s1, text))
            continue
        times = None
        if mode == "times":
            # Plausible engine times: increasing, inside the speech regions.
            times = refine_token_times(sorted((x, x + 0.15) for x in (rng.uniform(s0, s1) for _ in tokens)), regions)
        segments.append(Segment(s0, s1, text, tokens, times))
    opt = CueOptions(max_line_width=rng.choice([12.0, 16.0, 21.0]), max_lines=rng.choice([1, 2, 3]))
    cues = build_cues(segments, speech, duration, opt)
    assert cues
    assert validate_cues(cues, duration, speech, opt) == []
    assert "".join("".join(c.text.split()) for c in cues) == "".join("".join(s.text.split()) for s in segments)


# ------------------------------------------------------------------------- unbreakable runs

# What degenerate or unusual recognitions write with no space or punctuation to break at.
UNBREAKABLE = (
    "5-9-1-4-1-4-4-3-" * 25,  # glued digits, as Whisper base wrote them for robotic Mandarin
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ" * 8,  # letters with no break point at all
    "甚至出现交易几乎停滞的情况" * 6,  # one Whisper "word" holding a long CJK run
)


@pytest.mark.parametrize("run", UNBREAKABLE)
@pytest.mark.parametrize("timed", [True, False])
def test_runs_wider_than_a_line_are_broken_by_width(run: str, timed: bool) -> None:
    wrapped = wrap_words([run], [False], max_width=16, max_lines=2)
    assert "".join(wrapped) == run and all(text_width(line) <= 16 for line in wrapped)
    times = [(1.0, 1.4), (1.5, 28.0)] if timed else None
    seg = Segment(1.0, 29.0, "Wu " + run, [" Wu", " " + run], times)
    speech = [(1.0, 28.5)]
    cues = build_cues([seg], speech, 30.0)
    assert validate_cues(cues, 30.0, speech) == []
    assert "".join("".join(cue.lines) for cue in cues).replace(" ", "") == "Wu" + run


def test_width_breaks_prefer_a_hyphen_in_the_second_half_of_the_line() -> None:
    lines = wrap_words(["4-4-4-4-4-4-4-4-4-4-4-4-4-4-4-4-4-4-4-4"], [False], max_width=8, max_lines=3)
    assert all(line.endswith("-") for line in lines[:-1])
    assert all(text_width(line) <= 8 for line in lines)


def _uncovered_by_definition(speech, cues):
    """uncovered_speech by its definition: every stretch against every cue."""
    shown = sorted((c.start, c.end) for c in cues if c.end > c.start)
    out = []
    for start, end in speech:
        position = start
        for a, b in shown:
            if b > position and a < end:
                out.extend([(position, a)] if a > position else [])
                position = max(position, b)
        out.extend([(position, end)] if end > position else [])
    return out


def _snapped_by_definition(cues, speech, max_shift):
    """snap_to_speech_onsets by its definition: every cue against every onset."""
    previous_end = 0.0
    for cue in cues:
        near = [s for s, _ in sorted(speech) if abs(s - cue.start) <= max_shift and previous_end <= s < cue.end]
        cue.start = min(near, key=lambda o: abs(o - cue.start)) if near else cue.start
        previous_end = cue.end
    return [(c.start, c.end) for c in cues]


def test_speech_left_uncovered_and_onset_snapping_look_only_at_neighbours_with_the_same_result():
    """Both look at the cues or onsets near each stretch or cue only (a 2-hour file has
    thousands of each); random programmes give what a look at all of them gives."""
    rng = random.Random(7)
    for _ in range(500):
        points = sorted(rng.uniform(0, 100) for _ in range(2 * rng.randint(0, 25)))
        speech = list(zip(points[::2], points[1::2], strict=True))
        starts = [rng.choice([rng.uniform(-5, 105), *points[::2]]) for _ in range(rng.randint(0, 30))]
        cues = sorted((Cue(a, a + rng.choice([0.0, -1.0, rng.uniform(0, 20)]), ["x"]) for a in starts),
                      key=lambda c: c.start)  # fmt: skip
        assert uncovered_speech(speech, cues) == _uncovered_by_definition(speech, cues)
        shift = rng.choice([0.0, 0.3, 2.0])
        expected = _snapped_by_definition([Cue(c.start, c.end, ["x"]) for c in cues], speech, shift)
        snap_to_speech_onsets(cues, speech, shift)
        assert [(c.start, c.end) for c in cues] == expected
