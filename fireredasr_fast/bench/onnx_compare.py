"""Eager torch against ONNX Runtime on the encoder and on one cached decoder step
(`python -m fireredasr_fast.bench engine --onnx`).

Both run in this process on the same inputs, in alternating rounds (the order flips every
round), with the same thread count (torch.set_num_threads and ORT's intra-op threads); we
report the best and the median of the rounds and the max abs difference of the outputs.

The decoder step is exported here only for the measurement: `StepGraph` is `Decoder.step`
with the self-attention cache passed in and the new K/V returned (the ONNX graph cannot
write into a caller's buffer), cross-attention K/V precomputed as inputs, one step at the
given cache length. The engine itself does not use it (see docs/engine.md for why).
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..model import AedModel, Decoder, DecoderCache
from ..onnx_encoder import OnnxEncoder, export_encoder
from .engine import encoder_frames


def feature_frames(seconds: float) -> int:
    """10 ms fbank frames of `seconds` of 16 kHz audio (25 ms windows)."""
    return 1 + (int(seconds * 16000) - 400) // 160


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


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


class StepGraph(nn.Module):
    """Decoder.step as a pure function of its inputs (for export and for checking it)."""

    def __init__(self, decoder: Decoder) -> None:
        super().__init__()
        self.dec = decoder

    def forward(
        self,
        tokens: Tensor,  # (rows,)
        pe_row: Tensor,  # (d,) positional encoding of this step
        past_k: Tensor,  # (layers, rows, heads, t, d_k)
        past_v: Tensor,
        self_mask: Tensor,  # (rows, t + 1) bool
        cross_k: Tensor,  # (layers, utterances, heads, frames, d_k)
        cross_v: Tensor,
        cross_mask: Tensor,  # (utterances, 1, 1, frames) bool
    ) -> tuple[Tensor, Tensor, Tensor]:
        dec = self.dec
        rows, n = tokens.shape[0], cross_k.shape[1]
        beam = rows // n
        h, d = dec.n_head, dec.d_model
        x = (dec.tgt_word_emb(tokens) * dec.scale + pe_row).unsqueeze(1)
        mask = self_mask[:, None, None, :]
        new_k, new_v = [], []
        for i, layer in enumerate(dec.layer_stack):
            sa, ca = layer.self_attn, layer.cross_attn
            y = layer.self_attn_norm(x)
            k, v = sa.heads(sa.w_ks(y)), sa.heads(sa.w_vs(y))
            new_k.append(k)
            new_v.append(v)
            keys, values = torch.cat([past_k[i], k], 2), torch.cat([past_v[i], v], 2)
            att = F.scaled_dot_product_attention(sa.heads(sa.w_qs(y)), keys, values, attn_mask=mask)
            x = x + sa.fc(att.reshape(rows, 1, d))
            q = ca.w_qs(layer.cross_attn_norm(x)).view(n, beam, h, d // h).transpose(1, 2)
            att = F.scaled_dot_product_attention(q, cross_k[i], cross_v[i], attn_mask=cross_mask)
            x = x + ca.fc(att.transpose(1, 2).reshape(rows, 1, d))
            x = x + layer.mlp(layer.mlp_norm(x))
        logits = dec.tgt_word_prj(dec.layer_norm_out(x[:, 0]))
        return logits, torch.stack(new_k), torch.stack(new_v)


_STEP_INPUTS = ("tokens", "pe_row", "past_k", "past_v", "self_mask", "cross_k", "cross_v", "cross_mask")


def export_step(decoder: Decoder, path: Path) -> None:
    graph = StepGraph(decoder).eval()
    for param in graph.parameters():
        param.requires_grad_(False)
    layers, h, d = len(decoder.layer_stack), decoder.n_head, decoder.d_model
    rows, n, t, frames = 3, 1, 5, 40
    example = (
        torch.zeros(rows, dtype=torch.long),
        torch.zeros(d),
        torch.randn(layers, rows, h, t, d // h),
        torch.randn(layers, rows, h, t, d // h),
        torch.ones(rows, t + 1, dtype=torch.bool),
        torch.randn(layers, n, h, frames, d // h),
        torch.randn(layers, n, h, frames, d // h),
        torch.ones(n, 1, 1, frames, dtype=torch.bool),
    )
    dynamic = {
        "tokens": {0: "rows"},
        "past_k": {1: "rows", 3: "t"},
        "past_v": {1: "rows", 3: "t"},
        "self_mask": {0: "rows", 1: "t1"},
        "cross_k": {1: "n", 3: "frames"},
        "cross_v": {1: "n", 3: "frames"},
        "cross_mask": {0: "n", 3: "frames"},
        "logits": {0: "rows"},
        "new_k": {1: "rows"},
        "new_v": {1: "rows"},
    }
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            example,
            str(path),
            input_names=list(_STEP_INPUTS),
            output_names=["logits", "new_k", "new_v"],
            dynamic_axes=dynamic,
            opset_version=17,
            dynamo=False,
        )


def compare_decoder_step(
    model: AedModel, label: str, seconds: list[float], rounds: int, threads: int, workdir: Path, beam: int = 3
) -> list[dict[str, Any]]:
    """One step at cache length 4.5 tokens/s x seconds, over that many encoder frames."""
    import onnxruntime as ort

    torch.set_num_threads(threads)
    dec = model.decoder
    path = workdir / "step" / "step.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    export_step(dec, path)
    session = _session(path, threads)
    rows = []
    gen = torch.Generator().manual_seed(0)
    for sec in seconds:
        frames = encoder_frames(sec)
        enc = torch.randn(1, frames, dec.d_model, generator=gen)
        with torch.inference_mode():
            cache = dec.init_cache(enc, torch.ones(1, frames, dtype=torch.bool), beam)
            tokens = torch.randint(5, 100, (beam,), generator=gen)
            for _ in range(round(4.5 * sec)):
                dec.step(tokens, cache)
            t = cache.length
            inputs = {
                "tokens": tokens,
                "pe_row": dec.positional_encoding.pe[0, t],
                "past_k": torch.stack([b[:, :, :t] for b in cache.self_k]),
                "past_v": torch.stack([b[:, :, :t] for b in cache.self_v]),
                "self_mask": torch.ones(beam, t + 1, dtype=torch.bool),
                "cross_k": torch.stack(cache.cross_k),
                "cross_v": torch.stack(cache.cross_v),
                "cross_mask": cache.cross_mask,
            }
            feeds = {k: v.contiguous().numpy() for k, v in inputs.items()}
            # Inputs handed to ORT once (OrtValues), outputs left in ORT's memory: the step
            # alone, without any per-call conversion.
            binding = session.io_binding()
            for name, value in feeds.items():
                binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value))
            for name in ("logits", "new_k", "new_v"):
                binding.bind_output(name)

            def eager(cache: DecoderCache = cache, t: int = t, tokens: Tensor = tokens) -> Tensor:
                cache.length = t  # overwrite the same slot every call
                return dec.step(tokens, cache)

            start = time.perf_counter()
            ref = eager()
            # Enough calls per round to time ~0.25 s: small models step in a millisecond.
            repeats = max(1, min(10, round(0.25 / (time.perf_counter() - start))))
            diff = float(np.abs(session.run(None, feeds)[0] - ref.numpy()).max())
            impls = {"torch": eager, "onnx": lambda b=binding: session.run_with_iobinding(b)}
            times = alternate(impls, rounds, repeats=repeats)
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
