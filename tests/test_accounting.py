"""Speech accounting (issue 28): every stretch of VAD speech either reaches a cue or the review
list (reason no-text), and the JSON, the run report and the closing table say how much of the
speech the cues cover."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fireredasr_fast.guard import NO_TEXT, review_counts
from fireredasr_fast.results import SAMPLE_RATE, Hypothesis
from fireredasr_fast.runner.journal import FileRecord, format_table
from fireredasr_fast.transcribe import PreparedFile, TranscribeOptions, assemble_result
from fireredasr_fast.vad import SpeechSegment
from fireredasr_fast.writers import get_writer
from testsupport.validate import validate_review_file

WORDS = "it was the best of times it was the worst of times".split()


def _hypothesis(start: float, step: float) -> Hypothesis:
    """WORDS, one every `step` seconds from `start` (relative to the segment)."""
    times = [(round(start + i * step, 3), round(start + i * step + 0.8 * step, 3)) for i in range(len(WORDS))]
    return Hypothesis(" ".join(WORDS), [f" {w}" for w in WORDS], token_times=times)


def _result():
    # Three VAD segments: the first fully heard; the second heard only in its first 3 s of
    # 9 s of speech (an utterance lost inside a segment with text); the third left empty.
    segments = [SpeechSegment(0.0, 4.0, [(0.2, 3.8)]), SpeechSegment(5.0, 15.0, [(5.5, 14.5)])]
    segments.append(SpeechSegment(16.0, 19.0, [(16.2, 18.6)]))
    speech = [region for seg in segments for region in seg.speech]
    prepared = PreparedFile("news.wav", np.zeros(20 * SAMPLE_RATE, dtype=np.int16), segments, speech)
    hyps = [_hypothesis(0.3, 0.3), _hypothesis(0.6, 0.3), Hypothesis("", [], token_times=[])]
    return assemble_result(prepared, hyps, TranscribeOptions(review_threshold=0.0))


def test_speech_without_text_is_on_the_review_list(tmp_path: Path) -> None:
    result = _result()
    assert NO_TEXT in result.segments[2].flags and not result.segments[2].text
    # The stretch of the second segment after its last cue, at least a second long.
    assert len(result.lost) == 1
    lost_start, lost_end = result.lost[0]
    assert 9.0 < lost_start < 10.0 and lost_end == 14.5
    path = tmp_path / "news.review.tsv"
    get_writer("review").write(result, path)
    assert validate_review_file(path, result.duration, result.cues) == []
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()[1:]]
    assert [(row[0], row[3], row[4]) for row in rows] == [
        (rows[0][0], NO_TEXT, ""),
        ("0:00:16.000", NO_TEXT, ""),
    ]
    assert rows[0][1] == "0:00:14.500"
    listed, guarded = review_counts(result)
    assert (listed, guarded) == (2, 0)


def test_covered_seconds_reach_the_json_report_and_table(tmp_path: Path) -> None:
    result = _result()
    speech = 3.6 + 9.0 + 2.4
    assert abs(result.speech_seconds - speech) < 1e-9
    # Everything but the lost stretch and the empty segment's speech is under a cue.
    lost = sum(b - a for a, b in result.lost)
    assert abs(result.covered_seconds - (speech - lost - 2.4)) < 0.3
    path = tmp_path / "news.json"
    get_writer("json").write(result, path)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["speech_seconds"] == round(result.speech_seconds, 3)
    assert data["covered_seconds"] == round(result.covered_seconds, 3)
    record = FileRecord("news.wav", "news.wav", "done", duration=20.0, wall=1.0)
    record.speech_seconds, record.covered_seconds = data["speech_seconds"], data["covered_seconds"]
    table = format_table([record])
    assert "covered" in table.splitlines()[0]
    assert f"{100 * result.covered_seconds / result.speech_seconds:.0f}%" in table.splitlines()[1]
