"""Plain data handed from stage to stage after recognition: segments, cues, file results.

Times are absolute seconds from the start of the media file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Segment:
    """One recognised stretch of speech (one ASR input, at most ~60 s)."""

    start: float
    end: float
    text: str
    tokens: list[str] = field(default_factory=list)
    # One (start, end) per token in absolute seconds, when the engine gives timings.
    token_times: list[tuple[float, float]] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"start": round(self.start, 3), "end": round(self.end, 3), "text": self.text}
        if self.tokens:
            out["tokens"] = self.tokens
        if self.token_times is not None:
            out["token_times"] = [[round(a, 3), round(b, 3)] for a, b in self.token_times]
        return out


@dataclass
class Cue:
    """One subtitle event: a few seconds, one or two lines."""

    start: float
    end: float
    lines: list[str]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@dataclass
class FileResult:
    """Everything written for one media file."""

    source: str
    duration: float
    segments: list[Segment]
    cues: list[Cue]
    speech: list[tuple[float, float]] = field(default_factory=list)  # VAD speech regions
    info: dict[str, Any] = field(default_factory=dict)  # engine, model, options, timings
