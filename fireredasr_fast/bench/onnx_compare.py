"""Eager torch against ONNX Runtime on the encoder and on one cached decoder step
(`python -m fireredasr_fast.bench engine --onnx`).

Both run in this process on the same inputs, in alternating rounds (the order flips every
round), with the same thread count (torch.set_num_threads and ORT's intra-op threads); we
report the best and the median of the rounds and the max abs difference of the outputs.

The decoder step is `onnx_decoder.OnnxDecoder.step`, as `decoder_backend="onnx"` runs it in
the search: the self-attention cache and the cross-attention K/V are fed to the graph on
every call, and the step's K/V are written back into the cache.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..model import AedModel, DecoderCache
from ..onnx_decoder import OnnxDecoder, OnnxDecoderCache, export_step
from ..onnx_encoder import OnnxEncoder, export_encoder
from .engine import encoder_frames


def feature_frames(seconds: float) -> int:
    """10 ms fbank frames of `seconds` of 16 kHz audio (25 ms windows)."""
    return 1 + (int(seconds * 16000) - 400) // 160


def alternate(impls: dict[str, Callable[[], Any]], rounds: int, repeats: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each implementation, `rounds` times, order reversed every round."""
    times: dict[str, list[float]] = {name: [] for name in impls}
    items = list(impls.items())
    for r in range(rounds):
        for name, fn in items if r % 2 == 0 else items[::-1]:
            start = time.perf_counter()
            for _ in range(repeats):
                fn()
            times[name].append((time.perf_counter() - start) / repeats)
    return times


def _row(kind: str, label: str, seconds: float, times: dict[str, list[float]], diff: float, **extra: Any) -> dict:
    best = {k: min(v) for k, v in times.items()}
    median = {k: statistics.median(v) for k, v in times.items()}
    return {
        "part": kind,
        "model": label,
        "seconds": seconds,
        "rounds": len(times["torch"]),
        "best_s": best,
        "median_s": median,
        "ort_over_torch_best": best["onnx"] / best["torch"],
        "ort_over_torch_median": median["onnx"] / median["torch"],
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
    rows = []
    rng = np.random.default_rng(0)
    for sec in seconds:
        frames = feature_frames(sec)
        feats = torch.from_numpy(rng.standard_normal((1, frames, model.args.idim)).astype(np.float32))
        lengths = torch.tensor([frames])
        with torch.inference_mode():
            ref = model.encoder(feats, lengths)[0]
            diff = (onnx(feats, lengths)[0] - ref).abs().max().item()
            times = alternate(
                {
                    "torch": lambda f=feats, n=lengths: model.encoder(f, n),
                    "onnx": lambda f=feats, n=lengths: onnx(f, n),
                },
                rounds,
            )
        rows.append(_row("encoder", label, sec, times, diff, frames=encoder_frames(sec)))
        print(f"  {label:6s} encoder {sec:4.0f} s  {_summary(rows[-1])}", flush=True)
    return rows


def compare_decoder_step(
    model: AedModel, label: str, seconds: list[float], rounds: int, threads: int, workdir: Path, beam: int = 3
) -> list[dict[str, Any]]:
    """One step at cache length 4.5 tokens/s x seconds, over that many encoder frames: eager
    `Decoder.step` against `OnnxDecoder.step` as the search runs it (cache fed every call)."""
    torch.set_num_threads(threads)
    dec = model.decoder
    path = workdir / "step" / "step.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    export_step(dec, path)
    onnx = OnnxDecoder(dec, path, threads=threads)
    rows = []
    gen = torch.Generator().manual_seed(0)
    for sec in seconds:
        frames = encoder_frames(sec)
        enc = torch.randn(1, frames, dec.d_model, generator=gen)
        valid = torch.ones(1, frames, dtype=torch.bool)
        with torch.inference_mode():
            caches = (dec.init_cache(enc, valid, beam), onnx.init_cache(enc, valid, beam))
            tokens = torch.randint(5, 100, (beam,), generator=gen)
            for _ in range(round(4.5 * sec)):  # fill both caches to the same length
                dec.step(tokens, caches[0])
                onnx.step(tokens, caches[1])
            t = caches[0].length

            def eager(cache: DecoderCache = caches[0], t: int = t, tokens: Tensor = tokens) -> Tensor:
                cache.length = t  # overwrite the same slot every call
                return dec.step(tokens, cache)

            def ort(cache: OnnxDecoderCache = caches[1], t: int = t, tokens: Tensor = tokens) -> Tensor:
                cache.length = t
                return onnx.step(tokens, cache)

            start = time.perf_counter()
            ref = eager()
            # Enough calls per round to time ~0.25 s: small models step in a millisecond.
            repeats = max(1, min(10, round(0.25 / (time.perf_counter() - start))))
            diff = (ort() - ref).abs().max().item()
            times = alternate({"torch": eager, "onnx": ort}, rounds, repeats=repeats)
        rows.append(_row("decoder step", label, sec, times, diff, frames=frames, cache_length=t, beam=beam))
        print(f"  {label:6s} step    {sec:4.0f} s  {_summary(rows[-1])}", flush=True)
    return rows


def _summary(row: dict[str, Any]) -> str:
    best, median = row["best_s"], row["median_s"]
    return (
        f"torch {best['torch'] * 1e3:9.2f} ms  onnx {best['onnx'] * 1e3:9.2f} ms  "
        f"onnx/torch best {row['ort_over_torch_best']:.2f} median {row['ort_over_torch_median']:.2f}  "
        f"(medians {median['torch'] * 1e3:.2f} / {median['onnx'] * 1e3:.2f} ms)  max|diff| {row['max_abs_diff']:.1e}"
    )


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"{'model':6s} {'part':12s} {'seg':>4s} {'torch best':>11s} {'onnx best':>10s} {'ratio':>6s}"
        f" {'torch med':>10s} {'onnx med':>9s} {'ratio':>6s} {'rounds':>6s} {'max|diff|':>9s}"
    ]
    for r in rows:
        b, m = r["best_s"], r["median_s"]
        lines.append(
            f"{r['model']:6s} {r['part']:12s} {r['seconds']:3.0f}s {b['torch'] * 1e3:9.1f}ms {b['onnx'] * 1e3:8.1f}ms"
            f" {r['ort_over_torch_best']:6.2f} {m['torch'] * 1e3:8.1f}ms {m['onnx'] * 1e3:7.1f}ms"
            f" {r['ort_over_torch_median']:6.2f} {r['rounds']:6d} {r['max_abs_diff']:9.1e}"
        )
    return "\n".join(lines)
