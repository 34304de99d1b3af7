"""The FireRedASR engine's options in one typed object, built once and carried whole.

`FireRedOptions` is built from the CLI or the API, validated once here, pickled into the
`EngineSpec` that worker processes and Ray actors build their engine from, and asked for what
the GPU variant (`for_gpu`), the plan (`weights_shared`) and the resume fingerprint
(`fingerprint`) need. Nothing here imports torch, so the CLI can check options before any
model is loaded.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from fireredasr_fast.errors import OptionError, check_number
from fireredasr_fast.flags import DECODING, ENGINE, section
from fireredasr_fast.results import SAMPLE_RATE

from .cpuflags import cpu_unit

PRECISIONS = ("fp32", "int8", "fp16", "bf16")
# bf16 and int8 on CPU only where the CPU has a unit for them (cpuflags.py); bf16 also on GPU.
CPU_PRECISIONS = ("fp32", "int8", "bf16")
GPU_PRECISIONS = ("fp16", "bf16")
IMPLEMENTATIONS = ("fast",)  # the parity reference is test support (testsupport/reference.py)
# For the encoder and the decoder step (docs/engine.md#backends-torchcompile-onnx-runtime-onednn).
BACKENDS = ("torch", "mkl", "onnx", "onednn")
# mkl (torch's own Linear) is an engine option only for the benchmarks' side-by-side runs; the
# command line offers the others.
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
        if self.lm_dir:  # resolved: the fingerprint follows the directory, not its spelling
            object.__setattr__(self, "lm_dir", str(Path(self.lm_dir).resolve()))

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """The decoding flags (flags.py), defaults the class's own."""
        d = section(parser, DECODING)
        d.add_argument(
            "--beam-size",
            type=int,
            default=cls.beam_size,
            help="hypotheses kept per search step (default: %(default)s)",
        )
        d.add_argument(
            "--nbest",
            type=int,
            default=cls.nbest,
            help="hypotheses the search returns, 1 to --beam-size (default: %(default)s)",
        )
        d.add_argument(
            "--decode-max-len",
            type=int,
            default=cls.decode_max_len,
            help="most tokens per segment; 0 = up to the segment's number of encoder frames (default: %(default)s)",
        )
        d.add_argument(
            "--softmax-smoothing",
            type=float,
            default=cls.softmax_smoothing,
            help="logits are divided by this (default: %(default)s)",
        )
        d.add_argument(
            "--length-penalty",
            type=float,
            default=cls.length_penalty,
            help="GNMT length penalty on final scores; 0 = off (default: %(default)s)",
        )
        d.add_argument(
            "--eos-penalty",
            type=float,
            default=cls.eos_penalty,
            help="end-of-sentence log-probabilities are multiplied by this, > 0; above 1 (a stronger penalty) needs a "
            "FireRedASR2 model (default: %(default)s)",
        )
        d.add_argument(
            "--max-tokens-per-second",
            type=float,
            default=cls.max_tokens_per_second,
            help="firered: at most this many tokens per second of segment (0 = off, upstream's limit only); "
            "stops a decoder that loops on noise, e.g. 12",
        )
        d.add_argument(
            "--lm-dir",
            default=cls.lm_dir,
            help="firered: a FireRedASR2 LSTM language model directory (model.pth.tar) fused in the beam search; "
            "needs --lm-weight",
        )
        d.add_argument(
            "--lm-weight", type=float, default=cls.lm_weight, help="firered: the LM's weight in the fusion (0 = off)"
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> DecodingOptions:
        """The options add_arguments' flags give (every field is a flag of the same name)."""
        return cls(**{name: getattr(args, name) for name in _DECODING_FIELDS})


_DECODING_FIELDS = frozenset(f.name for f in fields(DecodingOptions))


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
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """--precision (Whisper's compute type too: WhisperOptions.from_args) and the backends."""
        e = section(parser, ENGINE)
        e.add_argument(
            "--precision",
            choices=PRECISIONS,
            default=None,
            help="firered: fp32 (default, exact), int8 (CPU), bf16 (CUDA, and CPU workers where the CPU has AMX-BF16 "
            "or AVX512_BF16), fp16 (CUDA); whisper: compute type (docs/tuning.md)",
        )
        e.add_argument(
            "--encoder-backend",
            choices=CLI_BACKENDS,
            default=cls.encoder_backend,
            help="firered, CPU fp32: torch (default: Linears through oneDNN on the shared weights), onnx (ONNX "
            "Runtime, exported once into ~/.cache/fireredasr-fast, needs the onnx package) or onednn (oneDNN with "
            "pre-packed weights); onnx and onednn are opt-in: a private copy of the weights per worker, results may "
            "differ at near-ties (docs/engine.md)",
        )
        e.add_argument(
            "--decoder-backend",
            choices=CLI_BACKENDS,
            default=cls.decoder_backend,
            help="firered, CPU fp32: the same choices for each decoder step (torch also runs the step's attention and "
            "few-row Linears through numba kernels; onednn: pre-packed weights, a private copy of the decoder weights "
            "per worker, which pays only for batches with many rows a step: see docs/engine.md)",
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> FireRedOptions:
        """The options CPU workers run (GPU workers: for_gpu(args.precision)): fp16 is GPU-only,
        and so is bf16 on a CPU without a bf16 unit (cpuflags.py): CPU workers then run fp32
        (cli._check_devices says so)."""
        cpu_precision = args.precision in CPU_PRECISIONS and cpu_unit(args.precision) is not None
        return cls(
            decoding=DecodingOptions.from_args(args),
            precision=args.precision if cpu_precision else "fp32",
            encoder_backend=args.encoder_backend,
            decoder_backend=args.decoder_backend,
        )

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
