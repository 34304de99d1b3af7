"""One media file -> FileResult, in this process: the pipeline without the scheduler.

`prepare_file` does media -> segments (decode + VAD); `assemble_result` turns the
segments' hypotheses into a FileResult with cues. The parallel runner calls the same two
functions around its worker pool; `transcribe_file` chains them with an engine in this
process for library users.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .audio import decode_audio, to_float32
from .batching import SegmentJob, make_batches
from .cues import CueOptions, build_cues, plausible_token_times, refine_token_times
from .engines import Engine
from .guard import REVIEW_THRESHOLD, GuardOptions, guard_hypothesis, mark_for_review
from .results import SAMPLE_RATE, FileResult, Hypothesis, Segment
from .script import ZH_SCRIPTS, convert_hypothesis
from .vad import SpeechSegment, SpeechSegmenter, VadOptions, clip_regions


@dataclass(frozen=True)
class TranscribeOptions:
    vad: VadOptions = VadOptions()
    cues: CueOptions = CueOptions()
    guard: GuardOptions = GuardOptions()
    # Cues whose confidence is below this go to the review list (docs/benchmarks.md,
    # "Review threshold"); 0 lists only what the guard flagged.
    review_threshold: float = REVIEW_THRESHOLD
    audio_stream: int | None = None
    # Chinese text in this script (script.ZH_SCRIPTS: simplified, traditional, keep).
    zh_script: str = ZH_SCRIPTS[0]
    # Upper bound on a batch's padded audio (longest segment x count).
    batch_seconds: float = 240.0
    max_batch_size: int = 32


@dataclass
class PreparedFile:
    """A decoded and segmented file waiting for recognition."""

    source: str
    samples: np.ndarray  # int16, 16 kHz mono
    segments: list[SpeechSegment]
    speech: list[tuple[float, float]]
    timings: dict[str, float] = field(default_factory=dict)
    # Music or singing without speech (VadOptions.music "flag"); cues over it are flagged.
    music: list[tuple[float, float]] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return self.samples.size / SAMPLE_RATE

    def jobs(self, file_index: int) -> list[SegmentJob]:
        return [
            SegmentJob(
                file_index, i, seg.start, self.samples[round(seg.start * SAMPLE_RATE) : round(seg.end * SAMPLE_RATE)]
            )
            for i, seg in enumerate(self.segments)
        ]


def prepare_file(path: str | os.PathLike, segmenter: SpeechSegmenter, audio_stream: int | None = None) -> PreparedFile:
    """Decode and segment; raises MediaError for unreadable media."""
    t0 = time.perf_counter()
    samples = decode_audio(path, audio_stream)
    t1 = time.perf_counter()
    segments, speech, music = segmenter.segment(samples)
    t2 = time.perf_counter()
    return PreparedFile(str(path), samples, segments, speech, {"decode": t1 - t0, "vad": t2 - t1}, music)


def assemble_result(
    prepared: PreparedFile,
    hypotheses: Sequence[Hypothesis],
    options: TranscribeOptions,
    info: dict[str, Any] | None = None,
) -> FileResult:
    """Hypotheses (one per segment, in order) -> guarded -> segments with absolute times -> cues,
    the doubtful ones flagged for review."""
    t0 = time.perf_counter()
    segments: list[Segment] = []
    guard_seconds = 0.0
    for seg, hyp in zip(prepared.segments, hypotheses, strict=True):
        hyp = convert_hypothesis(hyp, options.zh_script)
        inside = clip_regions(prepared.speech, seg.start, seg.end)
        g0 = time.perf_counter()
        hyp = guard_hypothesis(hyp, sum(b - a for a, b in inside) or seg.end - seg.start, options.guard)
        guard_seconds += time.perf_counter() - g0
        times = None
        if hyp.token_times is not None:
            # Engine times are relative to the segment; clamp into it.
            times = [
                (min(seg.end, seg.start + max(0.0, a)), min(seg.end, seg.start + max(0.0, b)))
                for a, b in hyp.token_times
            ]
            # Alignments smear tokens over pauses; keep each inside the VAD's speech.
            times = refine_token_times(times, inside) if plausible_token_times(times, inside) else None
        segments.append(
            Segment(
                seg.start,
                seg.end,
                hyp.text,
                list(hyp.tokens),
                times,
                hyp.token_confidences,
                hyp.confidence,
                list(hyp.flags),
                language=hyp.language,
            )
        )
    cues = build_cues([s for s in segments if s.text.strip()], prepared.speech, prepared.duration, options.cues)
    mark_for_review(cues, options.review_threshold, prepared.music)
    timings = dict(prepared.timings)
    timings["cues"] = time.perf_counter() - t0
    timings["guard"] = guard_seconds
    result_info: dict[str, Any] = {"timings": timings}
    language = file_language(segments)
    if language is not None:
        result_info["language"] = language
    result_info.update(info or {})
    return FileResult(prepared.source, prepared.duration, segments, cues, prepared.speech, result_info)


def file_language(segments: Sequence[Segment]) -> str | None:
    """The language of most of the speech: the one whose segments with text last longest
    (None when the engine gave none). Segments keep their own where it differs."""
    seconds: dict[str, float] = {}
    for segment in segments:
        if segment.language is not None and segment.text.strip():
            seconds[segment.language] = seconds.get(segment.language, 0.0) + segment.end - segment.start
    return max(seconds, key=seconds.__getitem__) if seconds else None


def recognise(engine: Engine, jobs: Sequence[SegmentJob]) -> list[Hypothesis]:
    """Run the engine on segment jobs (one batch) and return hypotheses in job order."""
    return engine.transcribe([to_float32(job.samples) for job in jobs])


def transcribe_file(
    path: str | os.PathLike,
    engine: Engine,
    options: TranscribeOptions = TranscribeOptions(),
    segmenter: SpeechSegmenter | None = None,
) -> FileResult:
    """Transcribe one media file in this process: decode, segment, batch, recognise, cue."""
    segmenter = segmenter or SpeechSegmenter(options.vad)
    prepared = prepare_file(path, segmenter, options.audio_stream)
    t0 = time.perf_counter()
    hypotheses: list[Hypothesis | None] = [None] * len(prepared.segments)
    for batch in make_batches(prepared.jobs(0), options.batch_seconds, options.max_batch_size):
        for job, hyp in zip(batch.jobs, recognise(engine, batch.jobs), strict=True):
            hypotheses[job.segment_index] = hyp
    prepared.timings["asr"] = time.perf_counter() - t0
    info = {"engine": engine.describe(), "source_name": Path(path).name}
    return assemble_result(prepared, [h for h in hypotheses if h is not None], options, info)
