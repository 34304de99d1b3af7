"""The FireRedASR engine's options in one typed object, built once and carried whole.

`FireRedOptions` is built from the CLI or the API, validated once here, pickled into the
`EngineSpec` that worker processes and Ray actors build their engine from, and asked for what
the GPU variant (`for_gpu`), the plan (`weights_shared`) and the resume fingerprint
(`fingerprint`) need. Nothing here imports torch, so the CLI can check options before any
model is loaded.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from fireredasr_fast.errors import OptionError, check_number
from fireredasr_fast.results import SAMPLE_RATE

PRECISIONS = ("fp32", "int8", "fp16", "bf16")
# bf16 and int8 on CPU only where the CPU has a unit for them (cpuflags.py); bf16 also on GPU.
CPU_PRECISIONS = ("fp32", "int8", "bf16")
GPU_PRECISIONS = ("fp16", "bf16")
IMPLEMENTATIONS = ("fast",)  # the parity reference is test support (testsupport/reference.py)
# For the encoder and the decoder step (docs/engine.md#backends-torchcompile-onnx-runtime-onednn).
BACKENDS = ("torch", "mkl", "onnx", "onednn")
# mkl (torch's own Linear, the default before oneDNN) stays an engine option for the benchmarks'
# side-by-side runs; the command line offers the others.
CLI_BACKENDS = ("torch", "onnx", "onednn")
# Backends that run the memory-mapped checkpoint weights every worker shares; the others hold
# a private copy per worker (ONNX Runtime sessions, oneDNN's packed weights).
SHARED_WEIGHT_BACKENDS = ("torch", "mkl")
# Padded fbank frames (10 ms each) one encoder sub-batch may hold: 400 s of audio. Bounds
# activation memory and the per-batch cross-attention K/V (docs/engine.md).
DEFAULT_BATCH_FRAMES = 40000
# The widest beam the search accepts (DecodingOptions.beam_size).
MAX_BEAM_SIZE = 32


@dataclass(frozen=True)
class DecodingOptions:
    """Beam-search settings (upstream's recommended values by default)."""

    beam_size: int = 3
    nbest: int = 1
    decode_max_len: int = 0  # 0: each utterance's own encoder length
    softmax_smoothing: float = 1.25
    length_penalty: float = 0.6
    eos_penalty: float = 1.0
    # 0: off (upstream). Otherwise at most ceil(rate x seconds) tokens per utterance: a guard
    # against a decoder that loops on noise until the encoder length (25 tokens per second).
    max_tokens_per_second: float = 0.0
    # FireRedASR2's external LSTM LM (lm.py): its directory and fusion weight; "" / 0: off.
    lm_dir: str = ""
    lm_weight: float = 0.0

    def __post_init__(self) -> None:
        # The search holds beam_size rows of decoder cache per segment of a batch: memory grows
        # with it, while accuracy stops growing a few beams in (docs/reliability.md).
        check_number("beam_size", self.beam_size, 1, MAX_BEAM_SIZE, integer=True)
        if not 1 <= self.nbest <= self.beam_size:
            raise OptionError("nbest", f"must be between 1 and beam_size ({self.beam_size}), not {self.nbest!r}")
        check_number("decode_max_len", self.decode_max_len, 0, integer=True)
        check_number("softmax_smoothing", self.softmax_smoothing, 0.0, above=True)
        check_number("length_penalty", self.length_penalty, 0.0)  # GNMT's alpha; 0 = off
        # Multiplies <eos> log-probabilities: FireRedASR2 allows > 1 (v1 asserted <= 1, a rule
        # checked against the checkpoint: checkpoint.check_decoding).
        check_number("eos_penalty", self.eos_penalty, 0.0, above=True)
        check_number("max_tokens_per_second", self.max_tokens_per_second, 0.0)
        check_number("lm_weight", self.lm_weight, 0.0)
        if bool(self.lm_dir) != (self.lm_weight > 0.0):
            raise ValueError("an external LM needs both lm_dir and lm_weight > 0")


def token_limit(samples: int, max_tokens_per_second: float) -> int | None:
    """The step limit max_tokens_per_second gives a waveform of `samples`, or None (off)."""
    if max_tokens_per_second <= 0.0:
        return None
    return max(1, math.ceil(max_tokens_per_second * samples / SAMPLE_RATE))


def step_limit(frames: int, samples: int, decode_max_len: int, max_tokens_per_second: float) -> int:
    """An utterance's beam-search step limit: decode_max_len, or (0) its own encoder length in
    frames, capped by token_limit where max_tokens_per_second is set."""
    own = decode_max_len if decode_max_len > 0 else frames
    cap = token_limit(samples, max_tokens_per_second)
    return own if cap is None else min(own, cap)


def check_backends(
    encoder_backend: str, decoder_backend: str, device_type: str, precision: str, implementation: str = "fast"
) -> None:
    """Raise ValueError unless both backends are known and, when not torch, usable: the
    mkl/onnx/onednn backends run our implementation on CPU in fp32 only."""
    for option, backend in (("encoder_backend", encoder_backend), ("decoder_backend", decoder_backend)):
        if backend not in BACKENDS:
            raise ValueError(f"unknown {option} {backend!r} (choose {', '.join(BACKENDS)})")
        if backend != "torch" and (device_type != "cpu" or precision != "fp32" or implementation != "fast"):
            raise ValueError(f"{option} {backend} is for the fast implementation on CPU in fp32")


_DECODING_FIELDS = frozenset(f.name for f in fields(DecodingOptions))
# What journals written before DecodingOptions grew further fields fingerprinted; a later field
# enters the fingerprint only when set, so those journals keep resuming.
_FINGERPRINTED_ALWAYS = frozenset(
    ("beam_size", "nbest", "decode_max_len", "softmax_smoothing", "length_penalty", "eos_penalty")
)


@dataclass(frozen=True)
class FireRedOptions:
    """Everything that configures a FireRedASR engine besides its model directory and device.

    precision: fp32 (exact parity with the reference), int8 / bf16 (CPU, where it has the unit:
    cpuflags.py), fp16 / bf16 (CUDA).
    encoder_backend, decoder_backend: see `BACKENDS` and docs/engine.md; not torch only on
    CPU in fp32. timestamps: token times from an alignment pass over the best hypothesis.
    """

    decoding: DecodingOptions = field(default_factory=DecodingOptions)
    precision: str = "fp32"
    implementation: str = "fast"
    encoder_backend: str = "torch"
    decoder_backend: str = "torch"
    batch_frames: int = DEFAULT_BATCH_FRAMES
    timestamps: bool = True

    def __post_init__(self) -> None:
        if self.implementation not in IMPLEMENTATIONS:
            raise ValueError(f"unknown implementation {self.implementation!r} (choose {', '.join(IMPLEMENTATIONS)})")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r} (choose {', '.join(PRECISIONS)})")
        device_type = "cuda" if self.precision in GPU_PRECISIONS else "cpu"
        check_backends(self.encoder_backend, self.decoder_backend, device_type, self.precision, self.implementation)
        check_number("batch_frames", self.batch_frames, 1, integer=True)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> FireRedOptions:
        """Options from flat keys (beam_size=..., precision=...), as EngineSpec accepted them
        before this class existed; unknown keys raise ValueError."""
        own = {f.name for f in fields(cls)} - {"decoding"}
        unknown = sorted(set(values) - own - _DECODING_FIELDS)
        if unknown:
            raise ValueError(f"unknown FireRedASR option(s): {', '.join(unknown)}")
        decoding = DecodingOptions(**{k: v for k, v in values.items() if k in _DECODING_FIELDS})
        return cls(decoding=decoding, **{k: v for k, v in values.items() if k in own})

    @property
    def weights_shared(self) -> bool:
        """True when every worker runs the one memory-mapped copy of the weights (int8 and
        bf16 on CPU convert them into a private copy per worker)."""
        backends = (self.encoder_backend, self.decoder_backend)
        return self.precision not in ("int8", "bf16") and all(b in SHARED_WEIGHT_BACKENDS for b in backends)

    def for_gpu(self, precision: str | None = None) -> FireRedOptions:
        """The options a GPU worker runs: torch on CUDA for both parts (the other backends are
        CPU-only), in `precision` when it is a GPU precision (fp16, bf16), else fp32."""
        return dataclasses.replace(
            self,
            precision=precision if precision in GPU_PRECISIONS else "fp32",
            encoder_backend="torch",
            decoder_backend="torch",
        )

    def fingerprint(self) -> dict[str, Any]:
        """What changes the outputs, for the resume journal. Options at their old defaults
        are left out so that journals written before they existed keep resuming."""
        defaults = DecodingOptions()
        out: dict[str, Any] = {
            name: value
            for name, value in dataclasses.asdict(self.decoding).items()
            if name in _FINGERPRINTED_ALWAYS or value != getattr(defaults, name)
        }
        out["precision"] = self.precision
        for option in ("encoder_backend", "decoder_backend"):
            if getattr(self, option) != "torch":
                out[option] = getattr(self, option)
        return out
