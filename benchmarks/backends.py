"""The Linear paths and the opt-in backends side by side, on the encoder and on one cached
decoder step (`python -m benchmarks engine --backends`).

`mkl` is eager torch with torch's own Linear (MKL's GEMM on CPU; the default before oneDNN
took over), and every ratio is over it. `torch` is the default CPU path: the same modules
with each Linear run by oneDNN on the same weights (`onednn.share_linears`), and in a decoder
step the numba kernels for the attention and the few-row Linears (`kernels.install`);
`nokern` is the same without the kernels (the previous default). `onednn` packs the weights
(`onednn.pack_linears`; in a decoder step with the attention kernel), `onnx` is ONNX Runtime.
All run in this process on the same inputs, in alternating rounds (the order flips every
round), with the same thread count (torch.set_num_threads and ORT's intra-op threads); we
report the best and the median of the rounds and the max abs difference of the outputs from
mkl's.

The ORT decoder step is `onnx_decoder.OnnxDecoder.step`, as `decoder_backend="onnx"` runs it
in the search: the self-attention cache and the cross-attention K/V are fed to the graph on
every call, and the step's K/V are written back into the cache.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fireredasr_fast.engines.firered import kernels, onednn, stepkernel
from fireredasr_fast.engines.firered.features import encoder_frames
from fireredasr_fast.engines.firered.model import AedModel, Decoder, DecoderCache
from fireredasr_fast.engines.firered.onnx_decoder import OnnxDecoder, OnnxDecoderCache, export_step
from fireredasr_fast.engines.firered.onnx_encoder import OnnxEncoder, export_encoder

from .common import alternate, feature_frames

BASELINE = "mkl"  # eager torch with torch's own Linear


def _row(
    kind: str, label: str, seconds: float, times: dict[str, list[float]], diff: dict[str, float], **extra: Any
) -> dict:
    best = {k: min(v) for k, v in times.items()}
    median = {k: statistics.median(v) for k, v in times.items()}
    others = [k for k in times if k != BASELINE]
    return {
        "part": kind,
        "model": label,
        "seconds": seconds,
        "rounds": len(times[BASELINE]),
        "best_s": best,
        "median_s": median,
        "over_mkl_best": {k: best[k] / best[BASELINE] for k in others},
        "over_mkl_median": {k: median[k] / median[BASELINE] for k in others},
        "max_abs_diff": diff,
        **extra,
    }


def compare_encoder(
    model: AedModel, label: str, seconds: list[float], rounds: int, threads: int, workdir: Path
) -> list[dict[str, Any]]:
    torch.set_num_threads(threads)
    path = workdir / "encoder" / "encoder.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    export_encoder(model.encoder, model.args.idim, path)
    print(f"  exported the {label} encoder in {time.perf_counter() - start:.1f} s", flush=True)
    onnx = OnnxEncoder(path, threads=threads)
    variants = _onednn_variants(model.encoder, onednn.ENCODER_ROWS_HINT)
    rows = []
    rng = np.random.default_rng(0)
    for sec in seconds:
        frames = feature_frames(sec)
        feats = torch.from_numpy(rng.standard_normal((1, frames, model.args.idim)).astype(np.float32))
        lengths = torch.tensor([frames])
        with torch.inference_mode():
            impls: dict[str, Callable[[], Any]] = {
                BASELINE: lambda f=feats, n=lengths: model.encoder(f, n),
                "onnx": lambda f=feats, n=lengths: onnx(f, n),
            }
            for name, encoder in variants.items():
                impls[name] = lambda f=feats, n=lengths, e=encoder: e(f, n)
            ref = impls[BASELINE]()[0]
            diff = {k: (fn()[0] - ref).abs().max().item() for k, fn in impls.items() if k != BASELINE}
            times = alternate(impls, rounds)
        rows.append(_row("encoder", label, sec, times, diff, frames=encoder_frames(sec)))
        print(f"  {label:6s} encoder {sec:4.0f} s  {_summary(rows[-1])}", flush=True)
    return rows


def compare_decoder_step(
    model: AedModel, label: str, seconds: list[float], rounds: int, threads: int, workdir: Path, beam: int = 3
) -> list[dict[str, Any]]:
    """One step at cache length 4.5 tokens/s x seconds, over that many encoder frames: eager
    `Decoder.step` with MKL's Linear against the same with oneDNN's (own or packed weights)
    and against `OnnxDecoder.step` as the search runs it (cache fed every call)."""
    torch.set_num_threads(threads)
    dec = model.decoder
    path = workdir / "step" / "step.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    export_step(dec, path)
    onnx = OnnxDecoder(dec, path, threads=threads)
    variants = _onednn_variants(dec, onednn.DECODER_ROWS_HINT)
    rows = []
    gen = torch.Generator().manual_seed(0)
    for sec in seconds:
        frames = encoder_frames(sec)
        enc = torch.randn(1, frames, dec.d_model, generator=gen)
        valid = torch.ones(1, frames, dtype=torch.bool)
        with torch.inference_mode():
            decoders: dict[str, Any] = {BASELINE: dec, "onnx": onnx, **variants}
            caches = {k: d.init_cache(enc, valid, beam) for k, d in decoders.items()}
            tokens = torch.randint(5, 100, (beam,), generator=gen)
            for _ in range(round(4.5 * sec)):  # fill every cache to the same length
                for k, d in decoders.items():
                    d.step(tokens, caches[k])
            t = caches[BASELINE].length

            impls = {k: _stepper(d, caches[k], tokens, t) for k, d in decoders.items()}
            start = time.perf_counter()
            ref = impls[BASELINE]()
            # Enough calls per round to time ~0.25 s: small models step in a millisecond.
            repeats = max(1, min(10, round(0.25 / (time.perf_counter() - start))))
            diff = {k: (fn() - ref).abs().max().item() for k, fn in impls.items() if k != BASELINE}
            times = alternate(impls, rounds, repeats=repeats)
        rows.append(_row("decoder step", label, sec, times, diff, frames=frames, cache_length=t, beam=beam))
        print(f"  {label:6s} step    {sec:4.0f} s  {_summary(rows[-1])}", flush=True)
    return rows


def _onednn_variants(module: torch.nn.Module, rows_hint: int) -> dict[str, torch.nn.Module]:
    """Copies of `module` (the original is untouched) with its Linears run by oneDNN: on
    their own weights (the default path) and packed, where this torch build has oneDNN."""
    if not onednn.available():
        return {}
    shared, packed = copy.deepcopy(module), copy.deepcopy(module)
    onednn.share_linears(shared)
    onednn.pack_linears(packed, rows_hint)
    variants = {"torch": shared, "onednn": packed}
    if isinstance(module, Decoder) and kernels.available():
        # As FireRedModel runs them: the default with both kernels and the fused step, packed
        # with the attention kernel; `nokern` is the default before the kernels.
        variants["nokern"] = shared
        variants["torch"] = copy.deepcopy(shared)
        kernels.install(variants["torch"])
        stepkernel.install(variants["torch"])
        kernels.install(packed, few_rows_linear=False)
    return variants


def _stepper(decoder: Any, cache: DecoderCache | OnnxDecoderCache, tokens: Tensor, t: int) -> Callable[[], Tensor]:
    """One step at cache length t, overwriting the same slot on every call."""

    def step() -> Tensor:
        cache.length = t
        return decoder.step(tokens, cache)

    return step


def _summary(row: dict[str, Any]) -> str:
    best = row["best_s"]
    parts = [f"{BASELINE} {best[BASELINE] * 1e3:.2f} ms"]
    for k, ratio in row["over_mkl_best"].items():
        parts.append(
            f"{k} {best[k] * 1e3:.2f} ms ({ratio:.2f} best, {row['over_mkl_median'][k]:.2f} median,"
            f" max|diff| {row['max_abs_diff'][k]:.1e})"
        )
    return "  ".join(parts)


def table(rows: list[dict[str, Any]]) -> str:
    """Time over mkl's (eager torch, torch's own Linear), best of the rounds / median of the
    rounds (lower is faster)."""
    others = sorted({k for r in rows for k in r["over_mkl_best"]})
    head = f"{'model':6s} {'part':12s} {'seg':>4s} {'mkl best':>11s} {'mkl med':>10s}"
    head += "".join(f" {k + ' best/med':>18s} {'max|diff|':>9s}" for k in others)
    lines = [head + f" {'rounds':>6s}"]
    for r in rows:
        line = f"{r['model']:6s} {r['part']:12s} {r['seconds']:3.0f}s"
        line += f" {r['best_s'][BASELINE] * 1e3:9.1f}ms {r['median_s'][BASELINE] * 1e3:8.1f}ms"
        for k in others:
            if k in r["over_mkl_best"]:
                ratios = f"{r['over_mkl_best'][k]:.2f} / {r['over_mkl_median'][k]:.2f}"
                line += f" {ratios:>18s} {r['max_abs_diff'][k]:9.1e}"
            else:
                line += f" {'-':>18s} {'-':>9s}"
        lines.append(line + f" {r['rounds']:6d}")
    return "\n".join(lines)
