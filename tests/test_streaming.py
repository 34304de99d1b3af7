"""A long file recognised a stretch at a time (issue 32): the front end sends each stretch of
a file's segments as soon as the VAD's first blocks fix them (vad.StretchFeed), and the
runner cuts and submits their batches before the file's VAD is done. The segments are the
whole file's, and the outputs those of a run that waits for the whole file (transcribe_file),
fresh or resumed. Real ffmpeg, real silero VAD, the trained tiny fixture, real CLI runs with
small VAD blocks (~33 s, through the environment) so that a two-minute file has four."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES, ROOT
from runs import run

from fireredasr_fast.engines import EngineSpec
from fireredasr_fast.runner.store import STORE_DIR
from fireredasr_fast.transcribe import TranscribeOptions, transcribe_file
from fireredasr_fast.vad import (
    VAD_BLOCK_ENV,
    WINDOW_SECONDS,
    SileroVad,
    SpeechSegmenter,
    StretchFeed,
    VadOptions,
    segment_speech,
    stretch_cuts,
    stretch_sizes,
)
from fireredasr_fast.writers import write_result

BLOCK_FRAMES = 1024
MAX_SEGMENT = 8.0  # many segments, so each stretch holds several batches' worth


def _random_probs(rng: np.random.Generator) -> np.ndarray:
    """Runs of speech and of silence, short and long, as a VAD's frame probabilities."""
    size = int(rng.integers(200, 3000))
    probs = np.zeros(size, dtype=np.float32)
    position, speech = 0, bool(rng.integers(2))
    while position < size:
        length = int(rng.integers(1, 20) if rng.integers(2) else rng.integers(20, 400))
        low, high = (0.55, 1.0) if speech else (0.0, 0.4)
        probs[position : position + length] = rng.uniform(low, high, size=len(probs[position : position + length]))
        position, speech = position + length, not speech
    return probs


def test_stretches_sent_early_are_the_whole_files_segments():
    """Random probabilities, options and blocks: what StretchFeed sends, block by block, is a
    prefix of segment_speech over the whole file, stretch by stretch as stretch_sizes cuts the
    whole file's segments. (A narrower pause than stretch_gap breaks this on these cases.)"""
    rng = np.random.default_rng(32)
    sent_any = 0
    for _ in range(100):
        probs = _random_probs(rng)
        options = VadOptions(
            min_segment=float(rng.choice([0.5, 2.0, 4.0])),
            max_segment=float(rng.choice([5.0, 20.0, 60.0])),
            short_merge_gap=float(rng.choice([0.0, 3.0, 6.0])),
            merge_gap=float(rng.choice([0.2, 1.0, 3.0])),
        )
        block = int(rng.integers(30, 600))
        duration = (probs.size - float(rng.uniform(0.0, 0.99))) * WINDOW_SECONDS
        whole = segment_speech(probs, duration, options)
        sent: list[tuple[int, int, list]] = []
        feed = StretchFeed(options, block, lambda *piece, sent=sent: sent.append(piece))
        for start in range(0, probs.size, block):
            feed.add(probs[start : start + block])
        sizes = stretch_sizes(whole, stretch_cuts(probs, block, options))
        assert sum(sizes) == len(whole)
        assert [s for _, _, segments in sent for s in segments] == whole[: sum(len(p[2]) for p in sent)]
        for stretch, first, segments in sent:
            assert (sizes[stretch], sum(sizes[:stretch])) == (len(segments), first)
        assert feed.stretches(probs, whole) == sizes
        sent_any += bool(sent)
    assert sent_any > 30  # the cases do have stretches sent early


def _cli(out: Path, source: Path, *extra: str) -> dict:
    command = [
        sys.executable, str(ROOT / "long_video_transcribe.py"), "--model-dir", str(FIXTURES / "tiny_model"),
        "--max-segment", str(MAX_SEGMENT), "--batch-seconds", "20", "--workers", "2", "--threads-per-worker", "1",
        "--formats", "srt,json", "--no-progress", "-o", str(out), *extra, "--", str(source),
    ]  # fmt: skip
    done = run(command, **{VAD_BLOCK_ENV: str(BLOCK_FRAMES)})
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads((out / "run-report.json").read_text(encoding="utf-8"))["summary"]


@pytest.fixture(scope="module")
def whole(long_file: Path, tmp_path_factory) -> tuple[bytes, int]:
    """The subtitles of a run that waits for the whole file (no stretch sent early), and its
    segment count."""
    options = TranscribeOptions(vad=VadOptions(max_segment=MAX_SEGMENT), batch_seconds=20.0)
    segmenter = SpeechSegmenter(options.vad, SileroVad(BLOCK_FRAMES))
    result = transcribe_file(long_file, EngineSpec("firered", str(FIXTURES / "tiny_model")).build(), options, segmenter)
    out = tmp_path_factory.mktemp("whole")
    (srt,) = write_result(result, out, long_file.name, ("srt",))
    return srt.read_bytes(), len(result.segments)


def test_a_long_file_is_recognised_a_stretch_at_a_time(long_file: Path, whole, tmp_path: Path):
    """The runner takes the first stretches before the file's VAD ends (the summary counts
    them), and writes what the whole-file run writes; a rerun after an interruption, with a
    partial store of the first stretch's segments, reuses them and writes the same."""
    srt, total = whole
    out = tmp_path / "out"
    summary = _cli(out, long_file)
    assert summary["segments_recognised"] == total
    assert 0 < summary["segments_streamed"] < total
    assert (out / "long talk.srt").read_bytes() == srt

    # Interrupted after a few segments: the partial store holds them (as the run stored them).
    stored = json.loads(gzip.decompress((out / STORE_DIR / "long talk.mkv.recognition.json.gz").read_bytes()))
    keep = 3
    lines = [json.dumps({k: stored[k] for k in ("version", "recognition", "source")})]
    pairs = zip(stored["file"]["segments"][:keep], stored["file"]["hypotheses"][:keep], strict=True)
    for i, ((start, end, _), hyp) in enumerate(pairs):
        lines.append(json.dumps({"i": i, "start": round(start * 16000), "end": round(end * 16000), "hyp": hyp}))
    resumed = tmp_path / "resumed"
    (resumed / STORE_DIR).mkdir(parents=True)
    (resumed / STORE_DIR / "long talk.mkv.partial.jsonl").write_text("".join(line + "\n" for line in lines))
    summary = _cli(resumed, long_file, "--frontend-processes", "0")  # the VAD in the front-end thread
    assert (summary["segments_reused"], summary["segments_recognised"]) == (keep, total - keep)
    assert 0 < summary["segments_streamed"] < total
    assert (resumed / "long talk.srt").read_bytes() == srt
