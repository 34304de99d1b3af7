"""The FireRedASR-AED engine: waveforms in, hypotheses out, fast.

`load_model` returns a `FireRedModel` (our implementation, model.py); the PyPI reference
wrapped to the same interface is test support (testsupport/reference.py, a checkout's parity
tests and benchmarks). `FireRedEngine` adapts a model to the pipeline's `Engine` boundary.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from fireredasr_fast.batching import group_by_length
from fireredasr_fast.engines import Engine, EngineSpec
from fireredasr_fast.fsutil import file_identity
from fireredasr_fast.glossary import Glossary
from fireredasr_fast.results import SAMPLE_RATE, Hypothesis

from . import kernels, onednn, stepkernel
from .alignment import ctc_token_times, token_times_from_attention
from .checkpoint import CMVN_FILE, DICT_FILE, MODEL_FILE, SPM_FILE, check_model_dir, load_package
from .context import ContextGraph
from .cpuflags import REDUCED_CPU_PRECISIONS, cpu_unit, missing_unit_message
from .features import FbankExtractor, prepare_fast_fbank
from .lm import LstmLm, load_lm
from .model import AedModel, DecoderCache
from .options import DecodingOptions, FireRedOptions, check_backends, step_limit
from .search import LogitsHook, SearchResult, beam_search, prepare_step_kernels
from .tokenizer import Tokenizer

MODEL_DIR_ENV = "FIREREDASR_MODEL_DIR"
# What one more group (an encoder batch and its beam search) costs, in padded copies of its
# longest segment: a beam search reads the decoder's weights once per step for all its rows,
# and its step count follows the longest output. The value is a search's fixed cost per second
# of its longest segment over the encoder's cost per padded second, both from the engine benchmark (AED-L; measured:
# docs/engine.md#grouping-segments-of-mixed-lengths). Without this, a 42 s segment and three
# of 3 s shared one batch padded to 4 x 42 s (more than three times the encoder work of encoding them apart).
GROUP_OVERHEAD = 1.5
# Attention probabilities (utterances x heads x tokens x frames) one alignment pass may hold
# per layer: 128 MB in fp32.
ALIGNMENT_CHUNK_ELEMENTS = 1 << 25


class AsrModel(Protocol):
    """What both implementations offer."""

    model_dir: Path
    precision: str
    implementation: str
    timings: dict[str, float]

    def transcribe(
        self, waveforms: Sequence[np.ndarray], options: DecodingOptions | None = None, **extra: Any
    ) -> list[Hypothesis]: ...


def prepare_fork_server() -> None:
    """Called in the workers' fork server (runner/prefork.py): what every worker would set up
    for itself and that starts no thread, numba's compiler (kernels.prepare_compiler), the
    search step's compiled halves (single-threaded, search.prepare_step_kernels) and the
    fbank kernel, loaded and checked against knf (features.prepare_fast_fbank)."""
    kernels.prepare_compiler()
    prepare_step_kernels()
    prepare_fast_fbank()


def resolve_model_dir(model_dir: str | os.PathLike | None) -> Path:
    """The model directory, from the argument or $FIREREDASR_MODEL_DIR, checked."""
    if not model_dir:
        model_dir = os.environ.get(MODEL_DIR_ENV) or None
    return check_model_dir(model_dir).resolve()


def load_model(
    model_dir: str | os.PathLike | None,
    options: FireRedOptions | None = None,
    *,
    device: str = "cpu",
    **settings: Any,
) -> AsrModel:
    """Load a FireRedASR-AED model directory, to run with `options` (FireRedOptions; or its
    fields as keywords, precision="int8", ..., which build it once).

    precision: fp32 (default, exact parity with the reference), int8 (CPU: dynamic int8
    Linear layers), bf16 (CUDA, or a CPU with AMX-BF16 / AVX512_BF16: cpuflags.py), fp16
    (CUDA only). A CPU without the unit a precision needs is refused (ValueError).
    encoder_backend, decoder_backend: torch (default: our modules in eager torch; on CPU in
    fp32 every Linear runs through oneDNN's matmul on the shared, memory-mapped weights,
    onednn.py, and a decoder step's attention and few-row Linears through numba kernels,
    kernels.py), mkl (the same with torch's own Linear, MKL on CPU, for the benchmarks'
    comparisons), onnx (the encoder, or one decoder step, exported once into the
    user cache and run by ONNX Runtime; see onnx_encoder.py and onnx_decoder.py) or onednn
    (Linear weights pre-packed for oneDNN: level with the default's kernels from ~48 rows a
    step, ahead above 96). mkl, onnx and onednn are CPU fp32 only; onnx and onednn hold a
    private copy of the weights they run in every process, which is why they are opt-in.
    """
    options = _options(options, settings)
    check_device(torch.device(device), options)
    return FireRedModel(resolve_model_dir(model_dir), options, device=device)


def _options(options: FireRedOptions | None, settings: dict[str, Any]) -> FireRedOptions:
    """`options`, or FireRedOptions built from its fields given as keywords (not both)."""
    if options is None:
        return FireRedOptions.from_mapping(settings)
    if not isinstance(options, FireRedOptions) or settings:
        raise TypeError("give a FireRedOptions, or its fields as keywords (device= is a keyword)")
    return options


def check_device(device: torch.device, options: FireRedOptions) -> None:
    """Raise ValueError unless `device` is there and suits the precision of `options` (which
    checked themselves; FireRedModel checks the backends against the device)."""
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} requested but CUDA is not available")
    if options.precision == "int8" and device.type != "cpu":
        raise ValueError("precision int8 is for CPU; use fp16 or bf16 on CUDA")
    if options.precision == "fp16" and device.type != "cuda":
        raise ValueError("precision fp16 needs a CUDA device; on CPU use fp32, bf16 or int8")
    if device.type == "cpu" and options.precision in REDUCED_CPU_PRECISIONS and cpu_unit(options.precision) is None:
        raise ValueError(f"precision {missing_unit_message(options.precision)}")


def _to_int8(model: AedModel) -> torch.nn.Module:
    """Dynamic int8 quantisation of every Linear (weights int8, activations per batch)."""
    from torch import nn
    from torch.ao.quantization import quantize_dynamic

    from .model import PointwiseConv

    # quantize_dynamic matches exact types: turn our conv-shaped Linears into plain ones.
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, PointwiseConv):
                plain = nn.Linear(child.in_features, child.out_features, bias=False)
                plain.weight = child.weight
                setattr(module, name, plain)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch deprecates quantized tensor creation
        return quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=True)


_INPUT_DTYPES = {"fp32": torch.float32, "int8": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _to_cpu_bf16(model: AedModel) -> AedModel:
    """bf16 on CPU: the encoder whole in bf16 (oneDNN's bf16 GEMMs, on AMX or AVX512_BF16),
    the decoder's Linears with bf16 weights on fp32 activations (kernels.Bf16WeightLinear: a
    step is bound by reading its weights, so half the bytes); the rest of the decoder, the
    search and the CTC head stay fp32 (docs/engine.md#precision-modes)."""
    model.encoder.to(torch.bfloat16)
    kernels.use_bf16_linears(model.decoder)
    return model


class _Fp32Output:
    """An encoder (bf16 on CPU) whose output the fp32 decoder and CTC head read in fp32."""

    def __init__(self, encoder: Any) -> None:
        self.encoder = encoder

    def __call__(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        enc, valid = self.encoder(x, lengths)
        return enc.float(), valid


def _with_precision(model: AedModel, precision: str, device_type: str) -> AedModel:
    if precision == "int8":
        return _to_int8(model)
    if precision == "bf16" and device_type == "cpu":
        return _to_cpu_bf16(model)
    if precision in ("fp16", "bf16"):
        return model.to(torch.float16 if precision == "fp16" else torch.bfloat16)
    return model


class FireRedModel:
    """Our implementation: features, padding-aware encoder batches, cached beam search."""

    implementation = "fast"

    def __init__(
        self,
        model_dir: str | os.PathLike,
        options: FireRedOptions | None = None,
        *,
        device: str = "cpu",
        package: dict | None = None,
        decoder_kernels: bool = True,
        **settings: Any,
    ) -> None:
        """options: FireRedOptions (or its fields as keywords); package: the checkpoint already
        unpickled; decoder_kernels=False keeps torch's decoder-step kernels (for comparison)."""
        self.options = _options(options, settings)
        self.model_dir = Path(model_dir)
        self.device = torch.device(device)
        precision, encoder_backend, decoder_backend = self.precision, self.encoder_backend, self.decoder_backend
        # The one rule the options cannot check alone: which backends this device runs. (The
        # precision's device is load_model's check: this class also takes fp16/bf16 on CPU.)
        check_backends(encoder_backend, decoder_backend, self.device.type, precision)
        if package is None:
            package = load_package(self.model_dir / MODEL_FILE)
        model = _with_precision(AedModel.from_package(package), precision, self.device.type)
        self.model: AedModel = model.to(self.device).eval()
        self.dtype = _INPUT_DTYPES[precision]  # the encoder's input
        self.features = FbankExtractor(self.model_dir / CMVN_FILE)
        self.tokenizer = Tokenizer(self.model_dir / DICT_FILE, self.model_dir / SPM_FILE)
        self.timings: dict[str, float] = {}
        self._lms: dict[Path, LstmLm] = {}
        self._graphs: dict[Glossary, ContextGraph] = {}
        self._encoder: Any = self.model.encoder
        self._decoder: Any = self.model.decoder
        self._use_backends(encoder_backend, decoder_backend)
        # numba kernels for the memory-bound parts of a decoder step (kernels.py): the
        # attention for the default and the packed decoders, the few-row Linears for the
        # default one. decoder_kernels=False keeps torch's (for the benchmarks' comparisons).
        self.decoder_kernels = (
            decoder_kernels
            and self.device.type == "cpu"
            and precision in ("fp32", "bf16")
            and decoder_backend in ("torch", "onednn")
            and kernels.available()
        )
        if self.decoder_kernels:
            fp32_torch = decoder_backend == "torch" and precision == "fp32"
            kernels.install(self.model.decoder, few_rows_linear=fp32_torch)
            if fp32_torch:  # the whole step as one call per layer
                stepkernel.install(self.model.decoder)

    @property
    def precision(self) -> str:
        return self.options.precision

    @property
    def encoder_backend(self) -> str:
        return self.options.encoder_backend

    @property
    def decoder_backend(self) -> str:
        return self.options.decoder_backend

    @property
    def batch_frames(self) -> int:
        """Padded fbank frames one encoder batch may hold (FireRedOptions.batch_frames)."""
        return self.options.batch_frames

    @batch_frames.setter
    def batch_frames(self, frames: int) -> None:
        self.options = dataclasses.replace(self.options, batch_frames=frames)  # checked again

    def _use_backends(self, encoder_backend: str, decoder_backend: str) -> None:
        """The encoder's and the decoder's backends (check_backends has accepted them)."""
        model_file = self.model_dir / MODEL_FILE
        if encoder_backend == "onnx":
            from .onnx_encoder import OnnxEncoder, cached_encoder_export

            self._encoder = OnnxEncoder(cached_encoder_export(self.model.encoder, self.model.args.idim, model_file))
        if decoder_backend == "onnx":
            from .onnx_decoder import OnnxDecoder, cached_step_export

            self._decoder = OnnxDecoder(self.model.decoder, cached_step_export(self.model.decoder, model_file))
        if self.device.type == "cpu" and self.precision == "bf16":
            self._encoder = _Fp32Output(self.model.encoder)
            if onednn.available():  # bf16 weights are a private copy anyway: packed once
                onednn.pack_linears(self.model.encoder, onednn.ENCODER_ROWS_HINT)
        if self.device.type == "cpu" and self.precision == "fp32":  # check_backends keeps onednn here
            for part, backend, rows_hint in (
                (self.model.encoder, encoder_backend, onednn.ENCODER_ROWS_HINT),
                (self.model.decoder, decoder_backend, onednn.DECODER_ROWS_HINT),
            ):
                if backend == "onednn":
                    onednn.pack_linears(part, rows_hint)  # raises without oneDNN
                elif backend == "torch" and onednn.available():
                    onednn.share_linears(part)

    def lm(self, lm_dir: str | os.PathLike) -> LstmLm:
        """The external LM of `lm_dir`, loaded once (fp32 on the model's device)."""
        path = Path(lm_dir).resolve()
        if path not in self._lms:
            self._lms[path] = load_lm(path, self.device, vocab_size=self.model.args.odim)
        return self._lms[path]

    def context_graph(self, glossary: Glossary) -> ContextGraph:
        """The glossary's terms in this model's tokens as a context graph (context.py), built
        once per glossary. Terms with a character outside the vocabulary are left out (the
        model can never write them)."""
        if glossary not in self._graphs:
            terms = []
            for term, bonus in glossary.bonuses():
                ids = self.tokenizer.encode(term)
                if ids and self.tokenizer.unk_id not in ids:
                    terms.append((ids, bonus))
            if len(self._graphs) > 16:  # a run's folders: keep the cache bounded
                self._graphs.clear()
            self._graphs[glossary] = ContextGraph(terms, self.model.args.odim, self.device)
        return self._graphs[glossary]

    @property
    def has_ctc(self) -> bool:
        return getattr(self.model, "ctc", None) is not None

    def encoder_batches(self, lengths: Sequence[int]) -> list[list[int]]:
        """Indices grouped longest first, each group one padded encoder batch and one beam
        search, split where padding would cost more than another search (batching.py);
        each group's padded size (count x longest) fits the frame budget (a single long one
        always gets through)."""
        return group_by_length(lengths, self.batch_frames, GROUP_OVERHEAD)

    @torch.inference_mode()
    def transcribe_nbest(
        self,
        waveforms: Sequence[np.ndarray],
        options: DecodingOptions | None = None,
        *,
        logits_hook: LogitsHook | None = None,
        return_alignment: bool = False,
        hotwords: Glossary | None = None,
        **decoding: Any,
    ) -> list[list[Hypothesis]] | tuple[list[list[Hypothesis]], list[np.ndarray | None]]:
        """n-best hypotheses per waveform, best first, decoded with `options` (or with
        DecodingOptions(**decoding): beam_size=..., as keywords).

        With return_alignment, also one array per waveform (None for empty input): for a v1
        checkpoint the best hypothesis's cross-attention over encoder frames (40 ms), averaged
        over heads, shape (decoder layers, tokens + 1 for <eos>, frames); for a v2 checkpoint
        with a CTC head, the CTC log-probabilities, shape (frames, vocabulary).
        Every hypothesis carries per-token confidences and their mean (search.py).
        `hotwords` biases the search towards a glossary's terms (context.py).
        """
        opts = options if options is not None else DecodingOptions(**decoding)
        lm = self.lm(opts.lm_dir) if opts.lm_dir else None
        context = self.context_graph(hotwords) if hotwords else None
        timings = {"features": 0.0, "encoder": 0.0, "decoder": 0.0}
        start = time.perf_counter()
        feats = self.features.batch(waveforms)
        timings["features"] = time.perf_counter() - start
        results: list[list[Hypothesis]] = [[Hypothesis(text="")] for _ in waveforms]
        alignments: list[np.ndarray | None] = [None] * len(waveforms)
        for group in self.encoder_batches([f.shape[0] for f in feats]):
            samples = [len(waveforms[i]) for i in group]
            found, group_alignments = self._decode_group(
                [feats[i] for i in group], samples, opts, (lm, context), logits_hook, return_alignment, timings
            )
            for j, att in enumerate(group_alignments):
                alignments[group[j]] = att
            for j, i in enumerate(group):
                results[i] = [
                    self._hypothesis(seq, conf)
                    for seq, conf in zip(found[j].sequences, found[j].confidences, strict=True)
                ]
        self.timings = timings
        return (results, alignments) if return_alignment else results

    def _decode_group(
        self,
        feats: list[np.ndarray],
        samples: list[int],
        opts: DecodingOptions,
        fusion: tuple[LstmLm | None, ContextGraph | None],
        logits_hook: LogitsHook | None,
        return_alignment: bool,
        timings: dict[str, float],
    ) -> tuple[list[SearchResult], list[np.ndarray | None]]:
        """One encoder batch (`samples`: each waveform's length) and its beam search (with
        `fusion`: the external LM and the context graph, each when used), with the alignments
        when asked; timed into `timings` ("encoder", "decoder")."""
        start = time.perf_counter()
        enc, valid = self.encode_features(feats)
        self._sync()
        mid = time.perf_counter()
        enc_lens = valid.sum(dim=1).tolist()
        max_lens = [
            step_limit(int(n), length, opts.decode_max_len, opts.max_tokens_per_second)
            for n, length in zip(enc_lens, samples, strict=True)
        ]
        cache = self._decoder.init_cache(enc, valid, opts.beam_size)
        # The alignment pass reuses the search's cross-attention K/V (the search's
        # cache drops an utterance's K/V when it finishes, so keep the lists now).
        cross = None
        if return_alignment and isinstance(cache, DecoderCache):
            cross = (list(cache.cross_k), list(cache.cross_v))
        found = beam_search(
            self._decoder,
            enc,
            valid,
            max_lens,
            cache=cache,
            beam_size=opts.beam_size,
            nbest=opts.nbest,
            softmax_smoothing=opts.softmax_smoothing,
            length_penalty=opts.length_penalty,
            eos_penalty=opts.eos_penalty,
            logits_hook=logits_hook,
            check_every=1 if self.device.type == "cpu" else 8,
            lm=fusion[0],
            lm_weight=opts.lm_weight,
            context=fusion[1],
        )
        alignments = list(self.alignments(enc, valid, found, cross)) if return_alignment else []
        del cache, cross
        self._sync()
        timings["encoder"] += mid - start
        timings["decoder"] += time.perf_counter() - mid
        return found, alignments

    def transcribe(self, waveforms: Sequence[np.ndarray], options: DecodingOptions | None = None, **extra: Any) -> Any:
        """One best hypothesis per waveform (same order); see transcribe_nbest for options.
        With return_alignment=True, returns (hypotheses, alignments)."""
        out = self.transcribe_nbest(waveforms, options, **extra)
        if extra.get("return_alignment"):
            hyps, alignments = out
            return [h[0] for h in hyps], alignments
        return [h[0] for h in out]

    def _hypothesis(self, ids: list[int], confidences: list[float]) -> Hypothesis:
        return Hypothesis(
            text=self.tokenizer.detokenize(ids),
            tokens=self.tokenizer.tokens(ids),
            token_ids=list(ids),
            token_confidences=list(confidences),
            confidence=statistics.fmean(confidences) if confidences else None,
        )

    def encode_features(self, feats: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """One padded encoder batch of fbank features (frames, 80) each: the encoder output
        (batch, frames, d_model) and its valid-frame mask (batch, frames)."""
        lengths = [f.shape[0] for f in feats]
        padded = np.zeros((len(feats), max(lengths), feats[0].shape[1]), dtype=np.float32)
        for row, f in zip(padded, feats, strict=True):
            row[: f.shape[0]] = f
        x = torch.from_numpy(padded).to(self.device, self.dtype)
        return self._encoder(x, torch.tensor(lengths, device=self.device))

    def encode(self, waveforms: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """Encoder outputs (frames, d_model) per waveform (for CTC alignment and tools)."""
        feats = self.features.batch(waveforms)
        out: list[torch.Tensor] = [torch.zeros(0, self.model.args.d_model) for _ in waveforms]
        with torch.inference_mode():
            for group in self.encoder_batches([f.shape[0] for f in feats]):
                enc, valid = self.encode_features([feats[i] for i in group])
                for j, i in enumerate(group):
                    out[i] = enc[j, : int(valid[j].sum())].float().cpu()
        return out

    def alignments(
        self,
        enc: torch.Tensor,
        valid: torch.Tensor,
        found: list[SearchResult],
        cross: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None,
    ) -> list[np.ndarray]:
        """The token-time pass after a search: per result in `found`, the array that
        transcribe_nbest(return_alignment=True) returns; `cross`, the search's cross-attention
        K/V, saves projecting them again."""
        frames = valid.sum(dim=1).tolist()
        if self.has_ctc:
            # FireRedASR2: CTC log-probs (frames, vocabulary) for forced alignment instead.
            log_probs = self.model.ctc_log_probs(enc)
            return [log_probs[j, : int(frames[j])].float().cpu().numpy() for j in range(len(found))]
        # One teacher-forced pass for several utterances at once: each pass reads every
        # decoder weight, which for short segments cost more than their own arithmetic
        # (measured: docs/engine.md#token-times-one-alignment-pass-per-group). Chunks bound the
        # probabilities held at once (utterances x heads x tokens x frames).
        sos, pad = self.model.sos_id, self.model.decoder.pad_id
        sequences = [[sos, *result.sequences[0]] for result in found]
        heads = self.model.decoder.n_head
        out: list[np.ndarray] = []
        start = 0
        while start < len(found):
            stop = start + 1
            longest = len(sequences[start])
            while stop < len(found):
                longest_next = max(longest, len(sequences[stop]))
                if (stop + 1 - start) * heads * longest_next * enc.size(1) > ALIGNMENT_CHUNK_ELEMENTS:
                    break
                longest, stop = longest_next, stop + 1
            tokens = torch.full((stop - start, longest), pad, dtype=torch.long, device=enc.device)
            for row, seq in enumerate(sequences[start:stop]):
                tokens[row, : len(seq)] = torch.tensor(seq, device=enc.device)
            chunk = None if cross is None else tuple([kv[start:stop] for kv in part] for part in cross)
            att = self.model.decoder.cross_attention_weights(enc[start:stop], valid[start:stop], tokens, chunk)
            for row, seq in enumerate(sequences[start:stop]):
                out.append(att[row, :, : len(seq), : int(frames[start + row])].float().cpu().numpy())
            start = stop
        return out

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


class FireRedEngine(Engine):
    """The pipeline's FireRedASR engine: a loaded model plus fixed options."""

    name = "firered"

    def __init__(self, model: AsrModel, options: FireRedOptions | None = None) -> None:
        self.model = model
        self.options = options or FireRedOptions()
        # Token times from the decoder's cross-attention (an extra pass over the best
        # hypothesis only); the reference implementation cannot provide them.
        self.timestamps = self.options.timestamps and getattr(model, "implementation", "") == "fast"

    @classmethod
    def from_spec(cls, spec: EngineSpec) -> FireRedEngine:
        options: FireRedOptions = spec.options  # EngineSpec made it one
        return cls(load_model(spec.model_dir, options, device=spec.device), options)

    def transcribe(self, waveforms: Sequence[np.ndarray], hotwords: Glossary | None = None) -> list[Hypothesis]:
        # Only with a glossary: the parity references take no such argument.
        extra: dict[str, Any] = {"hotwords": hotwords} if hotwords else {}
        if not self.timestamps:
            return self.model.transcribe(waveforms, self.options.decoding, **extra)
        hyps, alignments = self.model.transcribe(waveforms, self.options.decoding, return_alignment=True, **extra)
        for hyp, attention, wave in zip(hyps, alignments, waveforms, strict=True):
            if attention is not None and hyp.tokens:
                duration = len(wave) / SAMPLE_RATE
                if attention.ndim == 2:  # CTC log-probs of a v2 checkpoint
                    hyp.token_times = ctc_token_times(attention, hyp.token_ids, duration)
                else:
                    hyp.token_times = token_times_from_attention(attention, len(hyp.tokens), duration)
        return hyps

    def describe(self) -> dict[str, Any]:
        model_file = Path(self.model.model_dir) / MODEL_FILE
        size, mtime_ns = file_identity(model_file)
        return {
            "engine": self.name,
            "implementation": self.model.implementation,
            "model_dir": str(Path(self.model.model_dir).resolve()),
            "model_file": {"size": size, "mtime": mtime_ns // 1_000_000_000},
            "decoding": asdict(self.options.decoding),
            "precision": self.model.precision,
            "encoder_backend": getattr(self.model, "encoder_backend", "torch"),
            "decoder_backend": getattr(self.model, "decoder_backend", "torch"),
            "decoder_kernels": getattr(self.model, "decoder_kernels", False),
            "timestamps": self.timestamps,
        }
