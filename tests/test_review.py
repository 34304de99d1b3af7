"""The review list finds mistakes and cues too fast to read (issue 28).

A cue is judged by its weakest tokens, not only its mean: the AISHELL cue Whisper base wrote as
"12 线尝试虽然也处于调整中" (城市 misheard) has two weak tokens but a mean of 0.87, above the mean
rule's 0.75. A cue that reads faster than the reading speed limits stays up longer where
silence follows; where none does, it is listed with reason `fast`. Each case goes through
assemble_result, the writers and the validators, as a run does.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from fireredasr_fast.cues import CueOptions, reading_seconds, reads_too_fast
from fireredasr_fast.guard import FAST, LOW_CONFIDENCE, WEAK_TOKEN, review_reasons
from fireredasr_fast.results import SAMPLE_RATE, Cue, Hypothesis
from fireredasr_fast.transcribe import PreparedFile, TranscribeOptions, assemble_result
from fireredasr_fast.vad import SpeechSegment
from fireredasr_fast.writers import write_result
from testsupport.validate import validate_cues, validate_review_file, validate_subtitle_file

# Whisper base's word probabilities for the AISHELL sample's second sentence (issue 28): the
# misheard 一二 -> "12" and 城市 -> 尝试 are the weak ones.
WEAK_TOKENS = ["12", " 线", "尝", "试", "虽", "然", "也", "处", "于", "调", "整", "中"]
WEAK_CONFIDENCES = [0.26, 0.95, 0.50, 0.93, 0.98, 0.99, 0.98, 0.97, 0.99, 0.98, 0.99, 0.99]
CONFIDENT = [0.93, 0.97, 0.95, 0.96, 0.98, 0.99, 0.98, 0.97, 0.99, 0.98, 0.99, 0.99]


def _prepared(regions: list[tuple[float, float]], seconds: float) -> PreparedFile:
    samples = np.zeros(round(seconds * SAMPLE_RATE), dtype=np.int16)
    segments = [SpeechSegment(a, b, [(a, b)]) for a, b in regions]
    return PreparedFile("talk.wav", samples, segments, list(regions))


def _timed(tokens: list[str], start: float, end: float) -> list[tuple[float, float]]:
    step = (end - start) / len(tokens)
    return [(start + k * step, start + (k + 1) * step) for k in range(len(tokens))]


def _hyp(tokens: list[str], confidences: list[float] | None, seconds: float) -> Hypothesis:
    times = _timed(tokens, 0.0, seconds)
    mean = sum(confidences) / len(confidences) if confidences else None
    return Hypothesis("".join(tokens).strip(), list(tokens), [], times, confidences, mean)


def _review_rows(result, tmp_path: Path) -> list[dict[str, str]]:
    (path,) = write_result(result, tmp_path, "talk.wav", ("review",))
    assert validate_review_file(path, result.duration, result.cues) == []
    return list(csv.DictReader(path.open(encoding="utf-8"), delimiter="\t"))


def test_a_cue_with_weak_tokens_is_listed_though_its_mean_is_high(tmp_path: Path) -> None:
    prepared = _prepared([(1.0, 4.6), (6.0, 9.6)], 11.0)
    hyps = [_hyp(WEAK_TOKENS, WEAK_CONFIDENCES, 3.6), _hyp(WEAK_TOKENS, CONFIDENT, 3.6)]
    result = assemble_result(prepared, hyps, TranscribeOptions())
    weak, confident = result.cues
    assert weak.confidence == pytest.approx(sum(WEAK_CONFIDENCES) / 12) and weak.confidence > 0.85
    assert weak.flags == [WEAK_TOKEN]
    assert confident.flags == []
    rows = _review_rows(result, tmp_path)
    assert [(row["reason"], row["text"]) for row in rows] == [(WEAK_TOKEN, "12 线尝试虽然也处于调整中")]
    # The mean rule alone (the rule before issue 28) lists neither.
    old = assemble_result(_prepared([(1.0, 4.6), (6.0, 9.6)], 11.0), hyps, TranscribeOptions(weak_token_threshold=0))
    assert [c.flags for c in old.cues] == [[], []]


def test_review_reasons_name_one_rule_each() -> None:
    low = Cue(0.0, 2.0, ["好"], 0.5, [], [0.5])
    assert review_reasons(low, 0.75) == [LOW_CONFIDENCE]  # weak too, but its mean already lists it
    # One misheard word among confident ones: the mean of the two weakest is 0.4.
    tokens = [0.99] * 6 + [0.3, 0.5]
    weak = Cue(0.0, 2.0, ["今天天气很好吧"], sum(tokens) / len(tokens), [], tokens)
    assert weak.confidence > 0.8
    assert review_reasons(weak, 0.75) == [WEAK_TOKEN]
    assert review_reasons(weak, 0.75, weak_token_threshold=0.3) == []
    # A confident cue whose weakest token is only middling is not listed.
    fair = [0.99] * 6 + [0.6, 0.9]
    assert review_reasons(Cue(0.0, 2.0, ["今天天气很好吧"], sum(fair) / len(fair), [], fair), 0.75) == []
    # No token values (an engine without them): the mean rule only.
    assert review_reasons(Cue(0.0, 2.0, ["好"], 0.8), 0.75) == []
    with pytest.raises(ValueError, match="weak_token_threshold"):
        TranscribeOptions(weak_token_threshold=1.5)


def test_a_fast_cue_stays_up_into_the_silence_after_it(tmp_path: Path) -> None:
    # 38 characters said in 1.4 s (27 cps), then 1.6 s of silence before the next sentence.
    words = [" Nobody", " knew", " where", " the", " old", " map", " had", " gone."]
    text = "".join(words).strip()
    prepared = _prepared([(1.0, 2.4), (4.0, 6.0)], 8.0)
    hyps = [_hyp(words, [0.95] * len(words), 1.4), _hyp([" Good", " night."], [0.95, 0.95], 2.0)]
    result = assemble_result(prepared, hyps, TranscribeOptions())
    first = result.cues[0]
    assert first.start == pytest.approx(1.0)
    assert first.end == pytest.approx(1.0 + len(text) / CueOptions().max_cps, abs=0.002)  # 20 cps, not 2.4
    assert not reads_too_fast(first, CueOptions()) and first.flags == []
    (path,) = write_result(result, tmp_path, "talk.wav", ("srt",))
    assert validate_subtitle_file(path, result.duration, result.speech) == []


def test_a_cue_still_too_fast_is_listed_and_the_gap_kept(tmp_path: Path) -> None:
    # Mandarin at 12 characters a second with the next sentence 0.2 s after it: no room at 9.
    prepared = _prepared([(1.0, 2.0), (2.2, 5.0)], 6.0)
    fast = list("今天天气很好我们去公园")
    slow = list("好的")
    hyps = [_hyp(fast, [0.95] * len(fast), 1.0), _hyp(slow, [0.95, 0.95], 2.8)]
    result = assemble_result(prepared, hyps, TranscribeOptions())
    first, second = result.cues
    assert second.start == pytest.approx(2.2)
    assert first.end == pytest.approx(2.2 - CueOptions().min_gap)
    assert first.flags == [FAST] and second.flags == []
    rows = _review_rows(result, tmp_path)
    assert [(row["reason"], row["text"]) for row in rows] == [(FAST, "今天天气很好我们去公园")]
    # No limits: the same cue ends where its speech ends and nothing is listed.
    off = CueOptions(max_cps=0, max_cps_cjk=0)
    plain = assemble_result(_prepared([(1.0, 2.0), (2.2, 5.0)], 6.0), hyps, TranscribeOptions(cues=off))
    assert plain.cues[0].end == pytest.approx(2.0) and plain.cues[0].flags == []


def test_reading_time_counts_each_script_at_its_own_speed() -> None:
    opt = CueOptions()
    assert reading_seconds(["It was the best of times,"], opt) == pytest.approx(25 / opt.max_cps)
    assert reading_seconds(["今天天气很好。"], opt) == pytest.approx(7 / opt.max_cps_cjk)
    # A line break between Latin words reads as the space it replaces; none between CJK.
    assert reading_seconds(["It was", "the best"], opt) == pytest.approx(15 / opt.max_cps)
    assert reading_seconds(["今天", "天气"], opt) == pytest.approx(4 / opt.max_cps_cjk)
    mixed = reading_seconds(["我用 Python 写代码"], opt)
    assert mixed == pytest.approx(5 / opt.max_cps_cjk + 8 / opt.max_cps)
    assert reading_seconds(["今天 It"], CueOptions(max_cps=0, max_cps_cjk=0)) == 0.0
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="max_cps"):
            CueOptions(max_cps=bad)


def test_the_validator_finds_fast_and_short_cues_next_to_silence() -> None:
    opt = CueOptions()
    fast = [Cue(1.0, 1.5, ["It was the best of times,"]), Cue(4.0, 5.5, ["it was"])]
    assert any("its text needs" in p for p in validate_cues(fast, 10.0, options=opt))
    squeezed = [Cue(0.5, 1.5, ["It was the best of times,"]), Cue(1.6, 3.0, ["it was"])]
    assert validate_cues(squeezed, 10.0, options=opt) == []  # no room: listed, not invalid
    short = [Cue(1.0, 1.5, ["Hi."]), Cue(4.0, 5.5, ["it was"])]
    assert any("less than 0.8s" in p for p in validate_cues(short, 10.0, options=opt))


@pytest.mark.parametrize(
    ("flag", "value"), [("--max-cps", "-1"), ("--max-cps-cjk", "nan"), ("--review-weak-token", "1.5")]
)
def test_bad_review_and_reading_speed_options_exit_2(flag: str, value: str, tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "fireredasr_fast.cli", flag, value, "-o", str(tmp_path), str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert flag in done.stderr.strip().splitlines()[-1]


def test_help_names_the_new_options() -> None:
    from fireredasr_fast.cli import build_parser

    text = build_parser().format_help()
    for flag in ("--max-cps", "--max-cps-cjk", "--review-weak-token"):
        assert flag in text


def test_the_benchmark_labels_a_cue_wrong_by_its_aligned_reference() -> None:
    from benchmarks.review import label_cues

    references = [(1.0, 3.0, "今天天气很好"), (4.0, 6.0, "请把窗户关上"), (7.0, 9.0, "It was the best of times.")]
    cues = [
        Cue(1.0, 2.0, ["今天天气"]),  # right
        Cue(2.1, 3.0, ["很好"]),  # right
        Cue(4.0, 5.0, ["请把窗"]),  # 户 missing right after it: wrong
        Cue(5.1, 6.0, ["关上"]),  # right
        Cue(9.5, 10.5, ["谢谢"]),  # over no utterance: wrong
    ]
    assert label_cues(cues, references[:2], words=False) == [False, False, True, False, True]
    english = [Cue(7.0, 8.0, ["It was the"]), Cue(8.1, 9.0, ["beast of times!"])]
    assert label_cues(english, references[2:], words=True) == [False, True]


def test_the_minimum_duration_holds_next_to_close_cues() -> None:
    from fireredasr_fast.cues import tidy_cues

    opt = CueOptions()
    # Whisper base on two_cities before issue 28: "In short," lasted 0.76 s because the next cue
    # starts 0.86 s after it. It now also starts earlier, into the silence before it.
    cues = [Cue(26.56, 28.15, ["We were all going"]), Cue(29.12, 29.3, ["In short,"]), Cue(29.98, 32.35, ["the"])]
    out = tidy_cues(cues, 40.0, opt)
    assert (out[1].start, out[1].end) == pytest.approx((29.98 - opt.min_gap - opt.min_duration, 29.98 - opt.min_gap))
    # No silence on either side: the previous cue, which has time to spare, ends earlier.
    cues = [Cue(0.0, 2.0, ["It was the best of times,"]), Cue(2.1, 2.3, ["it"]), Cue(2.8, 5.0, ["was"])]
    out = tidy_cues(cues, 10.0, opt)
    assert [round(c.end - c.start, 3) for c in out] == [1.8, opt.min_duration, 2.2]
    assert out[1].end == pytest.approx(2.8 - opt.min_gap)
    assert validate_cues(out, 10.0, options=opt) == []
