"""The pipeline's shared vocabulary: the audio every stage works on, and the plain data handed
from stage to stage after recognition (hypotheses, segments, cues, file results).

Segment, Cue and FileResult times are absolute seconds from the start of the media file.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass, field
from typing import Any

# Every stage works on 16 kHz mono audio: ffmpeg resamples to it, the VAD and both engines
# expect it.
SAMPLE_RATE = 16000


@dataclass
class Hypothesis:
    """The recognition result for one waveform.

    `token_times` holds one (start, end) pair in seconds per token, relative to the start of
    the waveform, when the engine can provide them; otherwise it is None.
    `token_confidences` holds one value in [0, 1] per token and `confidence` their mean, as
    FireRedASR2 defines it (docs/engine.md), when the engine gives them; otherwise None.
    `flags` names what the degenerate-output guard found and did (guard.py), empty when the
    hypothesis passed its checks.
    """

    text: str
    tokens: list[str] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    token_times: list[tuple[float, float]] | None = None
    token_confidences: list[float] | None = None
    confidence: float | None = None
    #: The spoken language's code ("zh", "en"), when the engine knows it (given or detected).
    language: str | None = None
    flags: list[str] = field(default_factory=list)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


@dataclass
class SpokenWord:
    """One word of a segment with its speaker (`--speakers`): the text as Whisper's words
    spell it (a leading space where one separates it from the word before)."""

    text: str
    start: float
    end: float
    speaker: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "start": round(self.start, 3), "end": round(self.end, 3), "speaker": self.speaker}


@dataclass
class Segment:
    """One recognised stretch of speech (one ASR input, at most ~60 s)."""

    start: float
    end: float
    text: str
    tokens: list[str] = field(default_factory=list)
    # One (start, end) per token in absolute seconds, when the engine gives timings.
    token_times: list[tuple[float, float]] | None = None
    # As Hypothesis: per-token confidences and their mean, None when the engine gives none.
    token_confidences: list[float] | None = None
    confidence: float | None = None
    # What the degenerate-output guard found and did (guard.py).
    flags: list[str] = field(default_factory=list)
    # The spoken language's code, when the engine knows it.
    language: str | None = None
    # With speaker labels (`--speakers`): the speaker of most of the segment, and each word's
    # (a segment may span a change of speaker); None without them.
    speaker: str | None = None
    words: list[SpokenWord] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"start": round(self.start, 3), "end": round(self.end, 3), "text": self.text}
        if self.tokens:
            out["tokens"] = self.tokens
        if self.token_times is not None:
            out["token_times"] = [[round(a, 3), round(b, 3)] for a, b in self.token_times]
        if self.token_confidences is not None:
            out["token_confidences"] = [_rounded(c) for c in self.token_confidences]
        out["confidence"] = _rounded(self.confidence)
        out["flags"] = list(self.flags)
        if self.language is not None:
            out["language"] = self.language
        if self.words is not None:
            out["speaker"] = self.speaker
            out["words"] = [w.to_dict() for w in self.words]
        return out


@dataclass
class Cue:
    """One subtitle event: a few seconds, one or two lines."""

    start: float
    end: float
    lines: list[str]
    # Mean confidence of the cue's tokens, None when the engine gives none.
    confidence: float | None = None
    # Why an editor should check this cue (guard flags of its segment, "low-confidence", ...);
    # empty for a cue that needs no review.
    flags: list[str] = field(default_factory=list)
    # The confidences of the cue's own tokens (the review list judges a cue by its weakest),
    # None when the engine gives none. Not written: the JSON's segments carry them.
    token_confidences: list[float] | None = None
    # Who speaks it (`--speakers`; a cue never spans two speakers), None without labels.
    speaker: str | None = None

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "text": self.text,
            "confidence": _rounded(self.confidence),
            "flags": list(self.flags),
        }
        if self.speaker is not None:
            out["speaker"] = self.speaker
        return out


# Speech that no cue covers for at least this long is listed for review as lost (`no-text`);
# shorter stretches are the ordinary slack between a cue's edges and the VAD's.
LOST_SPEECH_SECONDS = 1.0


# A speaker turn: (start, end, speaker) in seconds; turns are kept in time order.
Turn = tuple[float, float, str]


@dataclass
class FileResult:
    """Everything written for one media file."""

    source: str
    duration: float
    segments: list[Segment]
    cues: list[Cue]
    speech: list[tuple[float, float]] = field(default_factory=list)  # VAD speech regions
    info: dict[str, Any] = field(default_factory=dict)  # engine, model, options, timings
    # Stretches of speech no cue covers, outside segments that have no text at all (those are
    # listed whole): each is a row of the review list.
    lost: list[tuple[float, float]] = field(default_factory=list)
    # With speaker labels (`--speakers`): who speaks when, (start, end, speaker) in time order,
    # speakers named S1, S2... by first appearance; None without labels.
    turns: list[Turn] | None = None
    # With speaker labels: where a second speaker is taken to speak too, (start, end, speaker)
    # in time order (speakers.overlap_turns); the labels above keep the turn's one speaker.
    overlaps: list[Turn] | None = None

    @property
    def speakers(self) -> list[str]:
        """The speakers of `turns` in order of first appearance."""
        return list(dict.fromkeys(speaker for _, _, speaker in self.turns or ()))

    @property
    def speech_seconds(self) -> float:
        return sum(b - a for a, b in self.speech)

    @property
    def covered_seconds(self) -> float:
        """Seconds of VAD speech that some cue is shown over."""
        return self.speech_seconds - sum(b - a for a, b in uncovered_speech(self.speech, self.cues))


def uncovered_speech(
    speech: list[tuple[float, float]], cues: list[Cue], min_seconds: float = 0.0
) -> list[tuple[float, float]]:
    """The stretches of `speech` (sorted, disjoint) that no cue overlaps, at least `min_seconds` long."""
    shown = sorted((c.start, c.end) for c in cues if c.end > c.start)
    # The cues before the first whose end (or an earlier cue's) passes a stretch's start
    # cannot overlap it, nor can those from the first that starts after its end: each stretch
    # looks at the cues between (the same result as a look at all of them).
    reach = list(itertools.accumulate((b for _, b in shown), max))
    out: list[tuple[float, float]] = []
    for start, end in speech:
        position = start
        for a, b in shown[bisect.bisect_right(reach, start) :]:
            if a >= end:
                break
            if b <= position:
                continue
            if a > position:
                out.append((position, a))
            position = max(position, b)
        if end > position:
            out.append((position, end))
    return [(a, b) for a, b in out if b - a >= min_seconds and b > a]
