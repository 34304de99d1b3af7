"""One media file -> FileResult, in this process: the pipeline without the scheduler.

`prepare_file` does media -> segments (decode + VAD); `assemble_result` turns the
segments' hypotheses into a FileResult with cues. The parallel runner calls the same two
functions around its worker pool; `transcribe_file` chains them with an engine in this
process for library users.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .audio import AudioStreams, decode_audio, probe_audio_streams, to_float32
from .batching import SegmentJob, make_batches
from .cues import CueOptions, build_cues
from .engines import Engine
from .errors import MediaError, OptionError, check_number
from .flags import ENGINE, PARALLELISM, REVIEW, SEGMENTATION, section
from .glossary import Glossary, HotwordOptions
from .guard import NO_TEXT, REVIEW_THRESHOLD, WEAK_TOKEN_THRESHOLD, GuardOptions, guard_hypothesis, mark_for_review
from .results import LOST_SPEECH_SECONDS, SAMPLE_RATE, Cue, FileResult, Hypothesis, Segment, Turn, uncovered_speech
from .script import ZH_SCRIPTS, convert_hypothesis
from .speakers import SpeakerOptions, find_speakers, flag_doubtful_cues, overlap_turns
from .tokentimes import plausible_token_times, refine_token_times
from .vad import SpeechSegment, SpeechSegmenter, VadOptions, clip_regions
from .words import label_segment
from .writers import WriterOptions

log = logging.getLogger("fireredasr_fast")

# Audio streams whose speech is within this share of the most speech are tied, and among
# tied streams ffmpeg's own choice wins: a film's dubbed tracks carry about the same speech,
# and the file's default is then the better guess of the language wanted.
TRACK_TIE_SHARE = 0.05
# Decoded streams held at once while a file's streams are compared (_prepare_most_speech).
STREAMS_HELD = 3


@dataclass(frozen=True)
class TranscribeOptions:
    vad: VadOptions = VadOptions()
    cues: CueOptions = CueOptions()
    guard: GuardOptions = GuardOptions()
    # Cues whose mean confidence is below this go to the review list, and cues whose weakest
    # tokens are below weak_token_threshold (guard.review_reasons; docs/benchmarks.md, "Review
    # list that finds mistakes"); 0 turns a rule off.
    review_threshold: float = REVIEW_THRESHOLD
    weak_token_threshold: float = WEAK_TOKEN_THRESHOLD
    audio_stream: int | None = None
    # Chinese text in this script (script.ZH_SCRIPTS: simplified, traditional, keep).
    zh_script: str = ZH_SCRIPTS[0]
    # Upper bound on a batch's padded audio (longest segment x count).
    batch_seconds: float = 240.0
    max_batch_size: int = 32
    # Speaker labels (`--speakers`); None: off.
    speakers: SpeakerOptions | None = None
    writer: WriterOptions = WriterOptions()
    # The glossary (--hotwords) and the folders' own (glossary.py).
    hotwords: HotwordOptions = HotwordOptions()

    def __post_init__(self) -> None:
        check_number("review_threshold", self.review_threshold, 0.0, 1.0)  # a confidence
        check_number("weak_token_threshold", self.weak_token_threshold, 0.0, 1.0)
        if self.audio_stream is not None:
            check_number("audio_stream", self.audio_stream, 0, integer=True)
        if self.zh_script not in ZH_SCRIPTS:
            raise OptionError("zh_script", f"must be one of {', '.join(ZH_SCRIPTS)}, not {self.zh_script!r}")
        # A batch holds at least one segment whatever this says (batching.make_batches).
        check_number("batch_seconds", self.batch_seconds, 0.0, above=True)
        check_number("max_batch_size", self.max_batch_size, 1, integer=True)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Its own flags, each in its --help section (flags.py); VadOptions, CueOptions and
        GuardOptions declare theirs."""
        section(parser, ENGINE).add_argument(
            "--zh-script",
            choices=ZH_SCRIPTS,
            default=cls.zh_script,
            help="Chinese text in simplified or traditional characters (OpenCC), or as the engine wrote it "
            "(default: %(default)s)",
        )
        section(parser, SEGMENTATION).add_argument(
            "--audio-stream",
            type=audio_stream_flag,
            default=cls.audio_stream,
            help="index among the audio streams (0 = first); 'all': one set of outputs per stream, "
            "named <name>.a0.srt, <name>.a1.srt, ... (default: the stream with the most speech; "
            "ffmpeg's choice when they tie)",
        )
        review = section(parser, REVIEW)
        review.add_argument(
            "--review-threshold",
            type=float,
            default=cls.review_threshold,
            help="cues whose mean confidence is below this go to <stem>.review.tsv (0 = off; "
            "default: %(default)s, measured in docs/benchmarks.md)",
        )
        review.add_argument(
            "--review-weak-token",
            type=float,
            default=cls.weak_token_threshold,
            help="cues with a token whose confidence is below this go to <stem>.review.tsv, reason weak-token "
            "(0 = off; default: %(default)s, measured in docs/benchmarks.md)",
        )
        section(parser, PARALLELISM).add_argument(
            "--batch-seconds",
            type=float,
            default=cls.batch_seconds,
            help="padded audio seconds per batch (default: %(default)s)",
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TranscribeOptions:
        """The per-file options from the command line (--audio-stream all: each input item
        carries its own stream, inputs.expand_audio_streams)."""
        return cls(
            vad=VadOptions.from_args(args),
            cues=CueOptions.from_args(args),
            guard=GuardOptions.from_args(args),
            review_threshold=args.review_threshold,
            weak_token_threshold=args.review_weak_token,
            audio_stream=None if args.audio_stream == "all" else args.audio_stream,
            batch_seconds=args.batch_seconds,
            zh_script=args.zh_script,
            speakers=SpeakerOptions.from_args(args),
            writer=WriterOptions.from_args(args),
            hotwords=HotwordOptions.from_args(args),
        )


def audio_stream_flag(value: str) -> int | str:
    """--audio-stream's value: a stream index, or "all" (argparse.ArgumentTypeError otherwise)."""
    if value == "all":
        return value
    try:
        index = int(value)
    except ValueError:
        index = -1
    if index < 0:
        raise argparse.ArgumentTypeError(f"expected a stream index (0, 1, ...) or 'all', not {value!r}")
    return index


@dataclass(frozen=True)
class TrackChoice:
    """Which audio stream a file was transcribed from, and why (the JSON's `audio_track`)."""

    stream: int | None  # index among the file's audio streams; None: ffmpeg chose, unprobed
    streams: int | None  # audio streams in the file, when probed
    default: int | None  # the one ffmpeg picks when not told
    reason: str  # requested | only stream | most speech | tie: ffmpeg's default
    speech_seconds: tuple[float | None, ...] = ()  # per stream when compared (None: unreadable)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "stream": self.stream,
            "streams": self.streams,
            "ffmpeg_default": self.default,
            "reason": self.reason,
        }
        if self.speech_seconds:
            data["speech_seconds"] = [None if s is None else round(s, 2) for s in self.speech_seconds]
        return data

    @property
    def compared(self) -> bool:
        return len(self.speech_seconds) > 1

    def describe(self, source: str) -> str:
        speech = ", ".join(
            f"stream {i}: {'unreadable' if s is None else f'{s:.1f} s'}" for i, s in enumerate(self.speech_seconds)
        )
        default = "ffmpeg's default" if self.stream == self.default else f"not ffmpeg's default ({self.default})"
        return (
            f"{source}: {self.streams} audio streams; transcribing stream {self.stream}, {default}: "
            f"{self.reason} (speech {speech})"
        )


def choose_track(speech_seconds: Sequence[float | None], default: int | None) -> tuple[int, str]:
    """The stream with the most speech; ffmpeg's default when it is tied (TRACK_TIE_SHARE)."""
    readable = [(seconds, i) for i, seconds in enumerate(speech_seconds) if seconds is not None]
    most, best = max(readable, key=lambda item: (item[0], -item[1]))
    if default is None or default == best or speech_seconds[default] is None:
        return best, "most speech"
    if most - speech_seconds[default] <= TRACK_TIE_SHARE * most:  # type: ignore[operator]
        return default, "tie: ffmpeg's default"
    return best, "most speech"


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
    track: TrackChoice | None = None
    # Who speaks when, (start, end, speaker) in time order; None without speaker labels.
    turns: list[Turn] | None = None

    # Segments per stretch (vad.stretch_sizes), in order: a file's batches are cut per
    # stretch, so they are the same whether its stretches came early (FilePiece) or not.
    stretches: list[int] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return self.samples.size / SAMPLE_RATE

    def jobs(self, file_index: int) -> list[SegmentJob]:
        return [
            SegmentJob(file_index, i, seg.start, self.samples[segment_range(seg)])
            for i, seg in enumerate(self.segments)
        ]

    def stretch_jobs(self, file_index: int) -> list[list[SegmentJob]]:
        """jobs(), one list per stretch (one list when the stretches are not known)."""
        jobs = self.jobs(file_index)
        ends = np.cumsum(self.stretches or [len(jobs)]).tolist()
        return [jobs[a:b] for a, b in zip([0, *ends[:-1]], ends, strict=True) if b > a]


def segment_range(segment: SpeechSegment) -> slice:
    """A segment's samples in its file's."""
    return slice(round(segment.start * SAMPLE_RATE), round(segment.end * SAMPLE_RATE))


@dataclass
class FilePiece:
    """One stretch of a file's segments, with their samples, sent while the rest of the file
    is still decoded or in the VAD (vad.StretchFeed); its PreparedFile follows."""

    stretch: int
    first: int  # the index of its first segment among the file's
    segments: list[SpeechSegment]
    samples: list[np.ndarray]

    def jobs(self, file_index: int) -> list[SegmentJob]:
        return [
            SegmentJob(file_index, self.first + i, seg.start, samples)
            for i, (seg, samples) in enumerate(zip(self.segments, self.samples, strict=True))
        ]


class SegmentedFile(Protocol):
    """What `assemble_result` reads of a file: a PreparedFile, or a recognition kept without
    its samples (runner/store.py)."""

    source: str
    segments: list[SpeechSegment]
    speech: list[tuple[float, float]]
    music: list[tuple[float, float]]
    timings: dict[str, float]
    track: TrackChoice | None
    turns: list[Turn] | None

    @property
    def duration(self) -> float: ...


def prepare_file(
    path: str | os.PathLike,
    segmenter: SpeechSegmenter,
    audio_stream: int | None = None,
    streams: AudioStreams | None = None,
    speakers: SpeakerOptions | None = None,
    pieces: Callable[[FilePiece], None] | None = None,
) -> PreparedFile:
    """Decode and segment, and find who speaks when with `speakers`; raises MediaError for
    unreadable media.

    With no `audio_stream`, a file with several audio streams is transcribed from the one
    with the most speech (each is decoded and run through the VAD; ffmpeg's default wins a
    tie, see choose_track). `streams` is the file's probe when the caller already has it.
    `pieces` is given the file's stretches as soon as they are final, before this returns
    (a file of one audio stream, a VAD that runs in blocks: SpeechSegmenter.feed)."""
    prepared = _prepare_track(path, segmenter, audio_stream, streams, pieces)
    if speakers is not None:
        t0 = time.perf_counter()
        turns = find_speakers(prepared.samples, prepared.speech, speakers)
        prepared.turns = sorted((turn.start, turn.end, turn.speaker) for turn in turns)
        prepared.timings["speakers"] = time.perf_counter() - t0
    return prepared


def _prepare_track(
    path: str | os.PathLike,
    segmenter: SpeechSegmenter,
    audio_stream: int | None,
    streams: AudioStreams | None,
    pieces: Callable[[FilePiece], None] | None,
) -> PreparedFile:
    if audio_stream is not None:
        track = TrackChoice(
            audio_stream, streams.count if streams else None, streams.default if streams else None, "requested"
        )
        return _prepare_stream(path, segmenter, audio_stream, track, pieces)
    streams = streams or probe_audio_streams(path)
    if streams.count > 1:
        return _prepare_most_speech(path, segmenter, streams)  # the track is known only at the end
    track = TrackChoice(streams.default, streams.count, streams.default, "only stream")
    return _prepare_stream(path, segmenter, None, track, pieces)


def _prepare_stream(
    path: str | os.PathLike,
    segmenter: SpeechSegmenter,
    audio_stream: int | None,
    track: TrackChoice,
    pieces: Callable[[FilePiece], None] | None = None,
) -> PreparedFile:
    decoded: list[Any] = [b""]  # the int16 bytes so far, then the samples

    def emit(stretch: int, first: int, segments: list[SpeechSegment]) -> None:
        assert pieces is not None
        data = np.frombuffer(decoded[0], dtype=np.uint8)
        cut = [data[2 * part.start : 2 * part.stop].view(np.int16).copy() for part in map(segment_range, segments)]
        pieces(FilePiece(stretch, first, segments, cut))

    def listen(buffer: bytearray) -> None:
        decoded[0] = buffer
        if listener is not None:
            listener(buffer)

    feed = segmenter.feed(emit) if pieces is not None else None
    listener = segmenter.listener(feed)
    t0 = time.perf_counter()
    samples = decode_audio(path, audio_stream, listen if feed is not None else listener)
    decoded[0] = samples.view(np.uint8)
    t1 = time.perf_counter()
    segments, speech, music, stretches = segmenter.segment_stretches(samples, feed)
    t2 = time.perf_counter()
    timings = {"decode": t1 - t0, "vad": t2 - t1}
    return PreparedFile(str(path), samples, segments, speech, timings, music, track, stretches=stretches)


def _prepare_most_speech(path: str | os.PathLike, segmenter: SpeechSegmenter, streams: AudioStreams) -> PreparedFile:
    """Every audio stream through the VAD; keep the one choose_track picks. At most
    STREAMS_HELD are held at once: the leader so far, ffmpeg's default (which wins a tie) and
    the stream being read."""
    kept: dict[int, PreparedFile] = {}
    speech_seconds: list[float | None] = []
    timings = {"decode": 0.0, "vad": 0.0}
    errors: list[MediaError] = []
    for index in range(streams.count):
        try:
            prepared = _prepare_stream(path, segmenter, index, TrackChoice(index, streams.count, None, ""))
        except MediaError as exc:
            errors.append(exc)
            speech_seconds.append(None)
            continue
        for key in timings:
            timings[key] += prepared.timings[key]
        speech_seconds.append(float(sum(end - start for start, end in prepared.speech)))
        kept[index] = prepared
        leader, _ = choose_track(speech_seconds, None)
        for other in [k for k in kept if k not in (leader, streams.default)]:
            del kept[other]
    if not kept:
        raise errors[0]
    chosen, reason = choose_track(speech_seconds, streams.default)
    prepared = kept[chosen]
    prepared.timings = timings
    prepared.track = TrackChoice(chosen, streams.count, streams.default, reason, tuple(speech_seconds))
    return prepared


def log_track_choice(prepared: PreparedFile, source: str) -> None:
    """Say which stream a file with several was transcribed from: a warning when it is not
    the one ffmpeg would have decoded (the user may expect that one)."""
    track = prepared.track
    if track is None or not track.compared:
        return
    level = logging.INFO if track.stream == track.default else logging.WARNING
    log.log(level, "%s", track.describe(source))


def assemble_result(
    prepared: SegmentedFile,
    hypotheses: Sequence[Hypothesis],
    options: TranscribeOptions,
    info: dict[str, Any] | None = None,
    hotwords: Glossary | None = None,
) -> FileResult:
    """Hypotheses (one per segment, in order) -> guarded -> segments with absolute times -> cues,
    the doubtful ones flagged for review; with the file's glossary, the JSON's `hotwords` (the
    terms applied and where each was recognised)."""
    t0 = time.perf_counter()
    segments: list[Segment] = []
    guard_seconds = 0.0
    turns = prepared.turns
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
        if turns is not None:
            label_segment(segments[-1], inside, turns)
    cues = build_cues([s for s in segments if s.text.strip()], prepared.speech, prepared.duration, options.cues, turns)
    mark_for_review(cues, options.review_threshold, prepared.music, options.weak_token_threshold, options.cues)
    overlaps = _speaker_review(cues, turns, options.speakers)
    lost = account_speech(segments, cues, prepared.speech)
    timings = dict(prepared.timings)
    timings["cues"] = time.perf_counter() - t0
    timings["guard"] = guard_seconds
    result_info: dict[str, Any] = {"timings": timings}
    language = file_language(segments)
    if language is not None:
        result_info["language"] = language
    if prepared.track is not None:
        result_info["audio_track"] = prepared.track.to_dict()
    if hotwords:
        result_info["hotwords"] = hotwords.report(segments, cues)
    result_info.update(info or {})
    return FileResult(
        prepared.source, prepared.duration, segments, cues, prepared.speech, result_info, lost, turns, overlaps
    )


def _speaker_review(cues: list[Cue], turns: list[Turn] | None, options: SpeakerOptions | None) -> list[Turn] | None:
    """With speaker labels: the cues whose label is doubtful flagged for review, and where a
    second speaker is taken to speak too (FileResult.overlaps); None without labels."""
    if turns is None:
        return None
    options = options or SpeakerOptions()
    flag_doubtful_cues(cues, turns, options)
    return overlap_turns(turns, options)


def account_speech(
    segments: Sequence[Segment], cues: Sequence[Cue], speech: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    """Make every stretch of speech without text reach the review list: a segment left
    empty is flagged NO_TEXT (listed whole); returns the other stretches of speech that no
    cue covers for LOST_SPEECH_SECONDS or more (FileResult.lost)."""
    empty = [seg for seg in segments if not seg.text.strip()]
    for seg in empty:
        if NO_TEXT not in seg.flags:
            seg.flags.append(NO_TEXT)
    return [
        (a, b)
        for a, b in uncovered_speech(speech, list(cues), LOST_SPEECH_SECONDS)
        if not any(seg.start < b and a < seg.end for seg in empty)
    ]


def file_language(segments: Sequence[Segment]) -> str | None:
    """The language of most of the speech: the one whose segments with text last longest
    (None when the engine gave none). Segments keep their own where it differs."""
    seconds: dict[str, float] = {}
    for segment in segments:
        if segment.language is not None and segment.text.strip():
            seconds[segment.language] = seconds.get(segment.language, 0.0) + segment.end - segment.start
    return max(seconds, key=seconds.__getitem__) if seconds else None


def recognise(engine: Engine, jobs: Sequence[SegmentJob], hotwords: Glossary | None = None) -> list[Hypothesis]:
    """Run the engine on segment jobs (one batch) and return hypotheses in job order, biased
    towards the file's glossary when it has one."""
    waveforms = [to_float32(job.samples) for job in jobs]
    return engine.transcribe(waveforms, hotwords=hotwords) if hotwords else engine.transcribe(waveforms)


def transcribe_file(
    path: str | os.PathLike,
    engine: Engine,
    options: TranscribeOptions = TranscribeOptions(),
    segmenter: SpeechSegmenter | None = None,
) -> FileResult:
    """Transcribe one media file in this process: decode, segment, batch, recognise, cue."""
    segmenter = segmenter or SpeechSegmenter(options.vad)
    glossary = options.hotwords.for_file(path)
    prepared = prepare_file(path, segmenter, options.audio_stream, speakers=options.speakers)
    log_track_choice(prepared, str(path))
    t0 = time.perf_counter()
    hypotheses: list[Hypothesis | None] = [None] * len(prepared.segments)
    for jobs in prepared.stretch_jobs(0):  # as the runner cuts them
        for batch in make_batches(jobs, options.batch_seconds, options.max_batch_size):
            for job, hyp in zip(batch.jobs, recognise(engine, batch.jobs, glossary), strict=True):
                hypotheses[job.segment_index] = hyp
    prepared.timings["asr"] = time.perf_counter() - t0
    info = {"engine": engine.describe(), "source_name": Path(path).name}
    return assemble_result(prepared, [h for h in hypotheses if h is not None], options, info, glossary)
