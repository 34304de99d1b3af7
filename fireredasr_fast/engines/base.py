"""The engine boundary: the one interface every recognition engine implements.

The pipeline (media -> segments -> batches -> hypotheses -> cues -> files) only ever sees
`Engine` and `Hypothesis`; it never knows whether FireRedASR or Whisper runs underneath.
Engines are built inside worker processes from an `EngineSpec`, which is small and
picklable, so a process pool can create its own engines without shipping model objects.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fireredasr_fast.glossary import Glossary
from fireredasr_fast.results import Hypothesis


class Engine(abc.ABC):
    """A speech recogniser that turns a batch of 16 kHz mono float32 waveforms into text."""

    #: Short engine name written to outputs ("firered", "whisper").
    name: str = ""

    @abc.abstractmethod
    def transcribe(self, waveforms: Sequence[np.ndarray], hotwords: Glossary | None = None) -> list[Hypothesis]:
        """One hypothesis per waveform, in order. Waveforms are float32 in [-1, 1]. `hotwords`:
        a glossary the recognition should prefer (glossary.py); the pipeline passes it only
        when it has terms."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """What produced the results: model path, options. Recorded in the JSON output and
        used as part of the resume fingerprint, so it must be deterministic."""

    def max_segment_seconds(self) -> float:
        """The longest input the model handles well (FireRedASR-AED: 60 s)."""
        return 60.0


@dataclass(frozen=True)
class EngineSpec:
    """Everything needed to build an engine in another process: which engine, which model,
    which device, and the engine's own options object (FireRedOptions, WhisperOptions).

    `options` may also be given as plain (name, value) pairs or a dict, or None for the
    defaults; it is turned into the engine's options object, and so validated, here.
    """

    engine: str = "firered"
    model_dir: str | None = None
    model_name: str | None = None
    device: str = "cpu"
    options: Any = None

    def __post_init__(self) -> None:
        from fireredasr_fast.engines import options_class

        cls = options_class(self.engine)
        if not isinstance(self.options, cls):
            values = dict(self.options or ())
            object.__setattr__(self, "options", cls.from_mapping(values))

    def for_gpu(self, precision: str | None = None) -> EngineSpec:
        """This spec as GPU workers run it (options.for_gpu says what changes); the runner
        sets each worker's device."""
        return dataclasses.replace(self, options=self.options.for_gpu(precision))

    def build(self) -> Engine:
        from fireredasr_fast.engines import engine_class

        return engine_class(self.engine).from_spec(self)
