"""The Whisper engine's options in one typed object (see engines/firered/options.py for the
pattern): built once, validated once, carried whole to the workers."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from fireredasr_fast.errors import check_number
from fireredasr_fast.flags import ENGINE, section

# The re-decode of a degenerate window (guard.py), after plain beam search: beam search again with
# (repetition_penalty, no_repeat_ngram_size), each step stricter, stopping at the first text that
# passes. Deterministic, unlike faster-whisper's temperature fallback, whose sampling depends on
# what the worker sampled before (CTranslate2 seeds its generator once per thread). Mildest first:
# no repeated 6-token run stops a phrase loop and leaves most real speech as beam search had it;
# a CJK character can take 2-3 byte tokens, so a loop of characters may need the 3-token step.
# Measured: docs/benchmarks.md ("Deterministic Whisper re-decode").
REDECODE_STEPS = ((1.0, 6), (1.0, 3), (1.2, 3))
# --precision -> CTranslate2's compute type.
COMPUTE_TYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "int8": "int8"}


@dataclass(frozen=True)
class WhisperOptions:
    """compute_type: CTranslate2's (None: int8 on CPU, float16 on CUDA). language: None lets
    a multilingual model detect it. cpu_threads: 0 lets CTranslate2 choose. word_timestamps:
    align words (cue times); pack: short pieces share a 30 s window (needs word_timestamps).
    guard: re-decode a degenerate window with REDECODE_STEPS (guard.py)."""

    compute_type: str | None = None
    beam_size: int = 5
    language: str | None = None
    batch_size: int = 8
    cpu_threads: int = 0
    word_timestamps: bool = True
    pack: bool = True
    guard: bool = True

    def __post_init__(self) -> None:
        check_number("beam_size", self.beam_size, 1, integer=True)
        check_number("batch_size", self.batch_size, 1, integer=True)
        check_number("cpu_threads", self.cpu_threads, 0, integer=True)
        # The language is checked against the model's list at setup (engine.check_language):
        # that list is faster-whisper's, which this module does not import.

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """--language (--precision and --no-guard, which it also reads, are declared with
        FireRedOptions and GuardOptions)."""
        section(parser, ENGINE).add_argument(
            "--language",
            help="whisper only: the spoken language's code (zh, en, ...); default: detected per segment, "
            "the file's in the JSON and the run report",
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> WhisperOptions:
        return cls.from_precision(args.precision, language=args.language, guard=not args.no_guard)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> WhisperOptions:
        """Options from flat keys; unknown keys raise ValueError."""
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown Whisper option(s): {', '.join(unknown)}")
        return cls(**values)

    @classmethod
    def from_precision(cls, precision: str | None, **values: Any) -> WhisperOptions:
        """Options with the compute type --precision names (None: the engine's default)."""
        return cls(compute_type=COMPUTE_TYPES.get(precision, precision) if precision else None, **values)

    @property
    def weights_shared(self) -> bool:
        return True

    def for_gpu(self, precision: str | None = None) -> WhisperOptions:
        return self

    def fingerprint(self) -> dict[str, Any]:
        """What changes the outputs: the language always, the rest where not at its default
        (journals written before this class held only language and compute_type). `guard`
        follows --no-guard, which the run fingerprints with the pipeline's guard."""
        defaults = dataclasses.asdict(WhisperOptions())
        out: dict[str, Any] = {"language": self.language}
        for name, value in dataclasses.asdict(self).items():
            if name not in ("language", "guard") and value != defaults[name]:
                out[name] = value
        return out
