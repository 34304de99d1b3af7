"""`python -m benchmarks kernels`: the numba decoder kernels against torch's.

Where each kernel (fireredasr_fast/kernels.py) takes over is a measured choice; this prints
the measurements behind it, on the shapes of a decoder step of the chosen preset (random
weights, this process, alternating rounds):

  linear     every Linear of one decoder step (AED-L: 1.5 GB of fp32 weights) for 1 to 192
             rows: oneDNN on the weights as stored (`shared`, the default above
             MAX_KERNEL_ROWS), the kernel (`kernel`; run past that limit here too, to show
             why it stops there) and oneDNN on packed weights (`packed`, a private copy,
             opt-in), as milliseconds per step, the weight bytes read per second and the
             arithmetic rate;
  attention  both attentions of a beam-3 step (cross: 3 beams over one utterance's K/V; self:
             3 rows over their own histories) for several lengths:
             torch's scaled_dot_product_attention against the kernel, K/V bytes per
             second (where they cross sets kernels.MIN_K_BYTES_*).

    python -m benchmarks kernels --preset aed-l --threads 2 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
from typing import Any

import torch
from torch import nn

from fireredasr_fast.engines.firered import kernels, onednn
from fireredasr_fast.engines.firered.checkpoint import PRESETS
from fireredasr_fast.engines.firered.model import sdpa_attention

from .common import alternate, memory_bandwidth_gbs

ROWS = (1, 2, 3, 4, 6, 12, 15, 24, 48, 96, 144, 192)
CROSS_FRAMES = (25, 50, 100, 200, 400, 800, 1500)
SELF_LENGTHS = (2, 4, 8, 16, 32, 64, 128, 270)


def _decoder_linears(preset: str, odim: int = 7832) -> list[nn.Linear]:
    shape = PRESETS[preset]
    d, ff = shape["d_model"], shape["d_inner"]
    per_layer = [(d, d)] * 6 + [(d, ff), (ff, d)]  # self q k v fc, cross q fc, mlp
    sizes = per_layer * shape["n_layers_dec"] + [(d, odim)]
    gen = torch.Generator().manual_seed(0)
    layers = []
    for fan_in, fan_out in sizes:
        layer = nn.Linear(fan_in, fan_out).requires_grad_(False)
        layer.weight.normal_(0.0, fan_in**-0.5, generator=gen)
        layers.append(layer)
    return layers


def _linear_rows(preset: str, rounds: int) -> list[dict[str, Any]]:
    linears = _decoder_linears(preset)
    weight_bytes = sum(layer.weight.numel() * 4 for layer in linears)
    variants = {
        "shared": [onednn.SharedLinear(layer) for layer in linears],
        "kernel": [kernels.FewRowsLinear(layer) for layer in linears],
        "packed": [onednn.PackedLinear(layer, onednn.DECODER_ROWS_HINT) for layer in linears],
    }
    rows = []
    with torch.inference_mode():
        for count in ROWS:
            inputs = {n: torch.randn(count, 1, n) for n in {layer.in_features for layer in linears}}

            def run(modules: list[nn.Module], inputs: dict = inputs) -> None:
                for module in modules:
                    module(inputs[module.in_features])

            impls = {name: (lambda mods=mods: run(mods)) for name, mods in variants.items()}
            for fn in impls.values():
                fn()  # warm-up (compiles the kernel once)
            saved_limit = kernels.MAX_KERNEL_ROWS
            kernels.MAX_KERNEL_ROWS = max(ROWS)  # time the kernel past the engine's limit too
            try:
                times = alternate(impls, rounds)
            finally:
                kernels.MAX_KERNEL_ROWS = saved_limit
            best = {k: min(v) for k, v in times.items()}
            rows.append(
                {
                    "part": "linear",
                    "rows": count,
                    "best_ms": {k: v * 1e3 for k, v in best.items()},
                    "median_ms": {k: statistics.median(v) * 1e3 for k, v in times.items()},
                    "gb_per_s": {k: weight_bytes / v / 1e9 for k, v in best.items()},
                    "gflop_per_s": {k: 2 * count * weight_bytes / 4 / v / 1e9 for k, v in best.items()},
                    "weight_gb": weight_bytes / 1e9,
                }
            )
            print(f"  linear x{count:<3d} " + "  ".join(f"{k} {v * 1e3:7.1f} ms" for k, v in best.items()), flush=True)
    return rows


def _attention_rows(preset: str, rounds: int, beams: int = 3) -> list[dict[str, Any]]:
    """Both attentions of a beam-3 step: `cross`, the beams of one utterance against its
    encoder K/V (frames = encoder frames, 25 per second), and `self`, each of the 3 rows against
    its own history in the cache's buffer (frames = tokens so far)."""
    shape = PRESETS[preset]
    heads, d_k = shape["n_head"], shape["d_model"] // shape["n_head"]
    gen = torch.Generator().manual_seed(1)
    rows = []
    saved = kernels.MIN_K_BYTES_ONE_QUERY, kernels.MIN_K_BYTES_SHARED
    kernels.MIN_K_BYTES_ONE_QUERY = kernels.MIN_K_BYTES_SHARED = 0  # time the kernel at every size
    try:
        for kind, lengths in (("cross", CROSS_FRAMES), ("self", SELF_LENGTHS)):
            for frames in lengths:
                layers = []  # one K/V per decoder layer, so a step reads them from memory as it does
                for _ in range(shape["n_layers_dec"]):
                    if kind == "cross":
                        q = torch.randn(1, beams, heads, d_k, generator=gen).transpose(1, 2)
                        k = torch.randn(1, heads, frames, d_k, generator=gen)
                        v = torch.randn(1, heads, frames, d_k, generator=gen)
                    else:  # prefix views of a history buffer, as Decoder.step passes them
                        q = torch.randn(beams, 1, heads, d_k, generator=gen).transpose(1, 2)
                        k = torch.randn(beams, heads, 2 * frames, d_k, generator=gen)[:, :, :frames]
                        v = torch.randn(beams, heads, 2 * frames, d_k, generator=gen)[:, :, :frames]
                    layers.append((q, k, v, torch.zeros(q.size(0), 1, 1, frames)))

                def step(attend, layers: list = layers) -> None:
                    for q, k, v, bias in layers:
                        attend(q, k, v, bias)

                impls = {
                    "torch": lambda s=step: s(sdpa_attention),
                    "kernel": lambda s=step: s(kernels.attention),
                }
                for fn in impls.values():
                    fn()
                k_bytes = k.numel() * 4  # per layer
                repeats = max(1, min(100, round(1e7 / (k_bytes * len(layers)))))
                times = alternate(impls, rounds, repeats=repeats)
                best = {name: min(t) for name, t in times.items()}
                rows.append(
                    {
                        "part": f"attention-{kind}",
                        "frames": frames,
                        "k_bytes": k_bytes,
                        "best_us": {name: t * 1e6 for name, t in best.items()},
                        "gb_per_s": {name: 2 * k_bytes * len(layers) / t / 1e9 for name, t in best.items()},
                        "kernel_over_torch": best["kernel"] / best["torch"],
                    }
                )
                torch_us, kernel_us = best["torch"] * 1e6, best["kernel"] * 1e6
                print(f"  {kind:5s} {frames:5d}  torch {torch_us:8.1f} us  kernel {kernel_us:8.1f} us", flush=True)
    finally:
        kernels.MIN_K_BYTES_ONE_QUERY, kernels.MIN_K_BYTES_SHARED = saved
    return rows


def _table(linear: list[dict[str, Any]], attention: list[dict[str, Any]], bandwidth: float) -> str:
    lines = [f"read bandwidth (plain read, same threads): {bandwidth:.1f} GB/s", ""]
    if linear:
        names = list(linear[0]["best_ms"])
        head = " ".join(f"{n + ' ms':>10s} {n + ' GB/s':>12s} {n + ' GF/s':>12s}" for n in names)
        lines.append(f"{'rows':>4s} {head}  kernel/shared")
        for r in linear:
            cells = " ".join(
                f"{r['best_ms'][n]:10.1f} {r['gb_per_s'][n]:12.1f} {r['gflop_per_s'][n]:12.1f}" for n in names
            )
            lines.append(f"{r['rows']:4d} {cells}  {r['best_ms']['kernel'] / r['best_ms']['shared']:13.2f}")
        lines.append(
            f"(one decoder step's Linears, {linear[0]['weight_gb']:.2f} GB of weights; the engine sends up to"
            f" {kernels.MAX_KERNEL_ROWS} rows to the kernel, more to oneDNN)"
        )
        lines.append("")
    lines.append(
        f"{'attention':9s} {'frames':>6s} {'K MB':>6s} {'torch us':>9s} {'kernel us':>10s} {'torch GB/s':>10s}"
        f" {'kernel GB/s':>11s} {'kernel/torch':>12s}"
    )
    for r in attention:
        us, rate = r["best_us"], r["gb_per_s"]
        cells = f"{us['torch']:9.1f} {us['kernel']:10.1f} {rate['torch']:10.1f} {rate['kernel']:11.1f}"
        lines.append(
            f"{r['part'][10:]:9s} {r['frames']:6d} {r['k_bytes'] / 1e6:6.2f} {cells} {r['kernel_over_torch']:12.2f}"
        )
    lines.append(
        f"(cross: 3 beams against one utterance's K/V; self: 3 rows against their own histories;"
        f" frames = K/V length; the engine takes the kernel from"
        f" {kernels.MIN_K_BYTES_ONE_QUERY >> 10} KiB of K for self, {kernels.MIN_K_BYTES_SHARED >> 10} KiB for cross)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks kernels", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="aed-l", choices=sorted(PRESETS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-linear", action="store_true")
    parser.add_argument("--json", help="write the rows here")
    opts = parser.parse_args(argv)
    if not kernels.available():
        print(f"kernels unavailable here: {kernels.unavailable_reason()}")
        return 1
    torch.set_num_threads(opts.threads)
    bandwidth = memory_bandwidth_gbs(opts.threads)
    linear = [] if opts.skip_linear else _linear_rows(opts.preset, opts.rounds)
    attention = _attention_rows(opts.preset, opts.rounds)
    print()
    print(_table(linear, attention, bandwidth))
    if opts.json:
        with open(opts.json, "w", encoding="utf-8") as f:
            json.dump(
                {
                    "preset": opts.preset,
                    "threads": opts.threads,
                    "bandwidth_gb_s": bandwidth,
                    "rows": linear + attention,
                },
                f,
                indent=2,
            )
    return 0
