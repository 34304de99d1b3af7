"""The engine boundary: the one interface every recognition engine implements.

The pipeline (media -> segments -> batches -> hypotheses -> cues -> files) only ever sees
`Engine` and `Hypothesis`; it never knows whether FireRedASR or Whisper runs underneath.
Engines are built inside worker processes from an `EngineSpec`, which is small and
picklable, so a process pool can create its own engines without shipping model objects.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SAMPLE_RATE = 16000


@dataclass
class Hypothesis:
    """The recognition result for one waveform.

    `token_times` holds one (start, end) pair in seconds per token, relative to the start of
    the waveform, when the engine can provide them; otherwise it is None.
    """

    text: str
    tokens: list[str] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    token_times: list[tuple[float, float]] | None = None


class Engine(abc.ABC):
    """A speech recogniser that turns a batch of 16 kHz mono float32 waveforms into text."""

    #: Short engine name written to outputs ("firered", "whisper").
    name: str = ""

    @abc.abstractmethod
    def transcribe(self, waveforms: Sequence[np.ndarray]) -> list[Hypothesis]:
        """One hypothesis per waveform, in order. Waveforms are float32 in [-1, 1]."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """What produced the results: model path, options. Recorded in the JSON output and
        used as part of the resume fingerprint, so it must be deterministic."""

    def max_segment_seconds(self) -> float:
        """The longest input the model handles well (FireRedASR-AED: 60 s)."""
        return 60.0


@dataclass(frozen=True)
class EngineSpec:
    """Everything needed to build an engine in another process.

    `options` holds the engine's own decoding options as plain values.
    """

    engine: str = "firered"
    model_dir: str | None = None
    model_name: str | None = None
    device: str = "cpu"
    options: tuple[tuple[str, Any], ...] = ()

    def build(self) -> Engine:
        opts = dict(self.options)
        if self.engine == "firered":
            from .firered import FireRedEngine

            return FireRedEngine.from_spec(self, **opts)
        if self.engine == "whisper":
            from .whisper_engine import WhisperEngine

            return WhisperEngine.from_spec(self, **opts)
        raise ValueError(f"unknown engine {self.engine!r} (choose firered or whisper)")
