"""`python -m benchmarks engine`: our FireRedASR-AED engine against the reference.

A random-weight checkpoint of the chosen shape is written to a temporary directory (the
official format, so both implementations load it the same way). Every segment is decoded
at beam 3 with its output length forced to 4.5 tokens per second of audio (eos suppressed
until then, forced at that step, the same hook on both sides), so both do the same number
of decoder steps whatever the random weights say.

The reference at full AED-L size takes ~15 minutes per 60 s segment on a 2-core CPU; it runs
whole at full size only up to --reference-max-seconds, and beyond that both sides run whole on
the narrower --narrow-preset model. Rows say which model they used; nothing is extrapolated.

Every run also has a `fast-nokern` row: the default without the numba decoder kernels
(kernels.py), the previous default, so their gain is measured side by side.

Also measured in the run: the fp32 GEMM peak (MKL and oneDNN, the better one is "peak") and the
read bandwidth, which give the encoder's share of peak and the decoder's time over its floor.
--backends adds rows for the opt-in backends (ONNX Runtime, oneDNN) and times eager torch
against both on the encoder and one decoder step in alternating rounds (benchmarks/backends.py).
--pipeline-batch N adds rows `fast xN`: ours with N segments of each length in one call, as the
pipeline batches them (its decoder reads the weights once per step for all N), reported per
segment; the reference rows stay one segment per call, as the original script runs it.

    python -m benchmarks engine --preset aed-l --seconds 10,30,60 --threads 2 \
        --full-max-seconds 60 --reference-max-seconds 60 --no-int8 --backends --json engine.json
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fireredasr_fast.engines.firered import onednn
from fireredasr_fast.engines.firered.checkpoint import MODEL_FILE, load_package
from fireredasr_fast.engines.firered.engine import FireRedModel
from fireredasr_fast.engines.firered.features import encoder_frames
from fireredasr_fast.engines.firered.model import AedModel
from fireredasr_fast.fsutil import CACHE_ENV
from testsupport.random_model import write_random_model_dir
from testsupport.reference import ReferenceModel

from .backends import compare_decoder_step, compare_encoder, table
from .common import feature_frames, forced_length_hook, memory_bandwidth_gbs, noise_waveform

TOKENS_PER_SECOND = 4.5
ONNX_BACKENDS = {"encoder_backend": "onnx", "decoder_backend": "onnx"}
ONEDNN_BACKENDS = {"encoder_backend": "onednn", "decoder_backend": "onednn"}
MKL_BACKENDS = {"encoder_backend": "mkl", "decoder_backend": "mkl"}  # the default before oneDNN


def matmul_peak_gflops(threads: int, size: int = 2048, repeats: int = 8) -> dict[str, float]:
    """Best-of fp32 GEMM rate on this machine with `threads` threads, through torch's default
    GEMM (MKL) and through oneDNN with a pre-packed weight; "peak" is the better of the two."""
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    calls = {"mkl": lambda: a @ b}
    if onednn.available():
        packed = onednn.pack_weight(b, size)
        calls["onednn"] = lambda: onednn.linear(a, packed)
    rates = {}
    for name, call in calls.items():
        best = float("inf")
        for _ in range(3):
            call()
        for _ in range(repeats):
            start = time.perf_counter()
            call()
            best = min(best, time.perf_counter() - start)
        rates[name] = 2 * size**3 / best / 1e9
    return {**rates, "peak": max(rates.values())}


def decoder_floor_seconds(
    shape: dict[str, int],
    seconds: float,
    tokens: int,
    beam: int,
    batch: int,
    peak: float,
    bandwidth: float,
    weight_bytes: int = 4,
) -> float:
    """The least time the cached decoder can take on this machine: the cross-attention K/V
    projection at matmul peak, then per step the larger of its arithmetic at peak and its
    bytes (the step's weights, `weight_bytes` each (1 for int8), read once for all rows, plus
    the fp32 K/V it attends over) at the measured bandwidth."""
    d, t, v, layers = shape["d_model"], encoder_frames(seconds), shape["odim"], shape["n_layers_dec"]
    rows = beam * batch
    floor = 2 * layers * 2 * t * d * d * batch / (peak * 1e9)
    weights = weight_bytes * (layers * 14 * d * d + d * v)
    for step in range(tokens + 1):
        flops = 2 * rows * (layers * (14 * d * d + 2 * (step + 1 + t) * d) + d * v)
        kv = 4 * layers * 2 * d * (t * batch + (step + 1) * rows)
        floor += max(flops / (peak * 1e9), (weights + kv) / (bandwidth * 1e9))
    return floor


def useful_gflop(args: argparse.Namespace, seconds: float, tokens: int, beam: int) -> dict[str, float]:
    """Arithmetic the task needs (multiply-adds x 2), counted once: what a cached decoder
    does. Used for both implementations, so the reference's rate is an effective rate."""
    d, t, k, v = args.d_model, encoder_frames(seconds), args.kernel_size, args.odim
    fb = feature_frames(seconds)
    sub = 32 * 9 * (fb // 2) * 39 + 32 * 32 * 9 * (fb // 4) * 19 + t * 32 * 19 * d
    layer = 28 * t * d * d + 4 * t * t * d + 2 * t * d * k + (2 * t - 1) * d * d
    enc = sub + args.n_layers_enc * layer
    dec = args.n_layers_dec * 2 * t * d * d  # cross-attention K/V, once
    for step in range(tokens + 1):
        dec += beam * (args.n_layers_dec * (14 * d * d + 2 * (step + 1 + t) * d) + d * v)
    return {"encoder": 2 * enc / 1e9, "decoder": 2 * dec / 1e9}


def _run(model: Any, waves: list[np.ndarray], seconds: float, beam: int) -> dict[str, Any]:
    """One call on a batch of equally long segments (the pipeline batches segments too)."""
    tokens = round(TOKENS_PER_SECOND * seconds)
    hook = forced_length_hook(tokens, model.model.eos_id)
    start = time.perf_counter()
    hyps = model.transcribe(waves, beam_size=beam, logits_hook=hook)
    total = time.perf_counter() - start
    for hyp in hyps:
        if len(hyp.token_ids) != tokens:
            raise RuntimeError(f"forced length not honoured: {len(hyp.token_ids)} != {tokens}")
    return {"total": total, **model.timings, "tokens": tokens, "batch": len(waves)}


def _bench_model(
    label: str,
    model_dir: Path,
    seconds: list[float],
    beam: int,
    reference: bool,
    int8: bool,
    threads: int,
    fast: bool = True,
    batch: int = 1,
    backends: bool = False,
) -> list[dict[str, Any]]:
    """Time ours (and optionally int8 and the reference) on one model, one at a time so only
    one copy of the weights is in memory."""
    torch.set_num_threads(threads)
    package = load_package(model_dir / MODEL_FILE)
    args = package["args"]
    shape = {k: getattr(args, k) for k in ("d_model", "odim", "n_layers_dec", "n_layers_enc")}
    rows: list[dict[str, Any]] = []
    name = "fast" if batch == 1 else f"fast x{batch}"
    impls = [(name, lambda: FireRedModel(model_dir, package=package))] if fast else []
    if fast and batch == 1:
        # The default without the numba decoder kernels (kernels.py): the previous default.
        impls.append(("fast-nokern", lambda: FireRedModel(model_dir, package=package, decoder_kernels=False)))
    if int8:
        impls.append(("fast-int8", lambda: FireRedModel(model_dir, precision="int8", package=package)))
    if backends:
        impls.append(("fast-mkl", lambda: FireRedModel(model_dir, package=package, **MKL_BACKENDS)))
        impls.append(("fast-onnx", lambda: FireRedModel(model_dir, package=package, **ONNX_BACKENDS)))
        impls.append(("fast-onednn", lambda: FireRedModel(model_dir, package=package, **ONEDNN_BACKENDS)))
    if reference:
        impls.append(("reference", lambda: ReferenceModel(model_dir, package=package)))
    for impl, build in impls:
        model = build()
        _run(model, [noise_waveform(1.0, 99)], 1.0, beam)  # warm-up: first-call allocations
        for sec in seconds:
            waves = [noise_waveform(sec, int(sec) + 1000 * i) for i in range(batch)]
            result = _run(model, waves, sec, beam)
            flops = {k: v * batch for k, v in useful_gflop(args, sec, result["tokens"], beam).items()}
            rows.append(
                {"model": label, "impl": impl, "seconds": sec, "beam": beam, **result, "gflop": flops, "shape": shape}
            )
            print(f"  {label:8s} {impl:10s} {sec:5.0f} s x{batch}  total {result['total']:8.2f} s", flush=True)
        del model
        gc.collect()
    return rows


def _table(rows: list[dict[str, Any]], peak: float, bandwidth: float) -> str:
    """Per row: stage times, speedups over the reference, the encoder's arithmetic rate and
    its share of the matmul peak, and the decoder's time over its floor (decoder_floor_seconds)."""
    lines = [
        f"{'model':8s} {'seg':>5s} {'impl':11s} {'features':>9s} {'encoder':>9s} {'decoder':>9s} {'total':>9s}"
        f" {'RTF':>6s} {'speedup (feat/enc/dec/total)':>30s} {'enc GF/s':>8s} {'enc %pk':>7s} {'dec/floor':>9s}"
    ]
    by_key = {(r["model"], r["seconds"], r["impl"]): r for r in rows}
    for r in rows:
        ref = by_key.get((r["model"], r["seconds"], "reference"))
        speed = ""
        if ref is not None and r["impl"] != "reference":
            # Per segment on both sides (a `fast xN` row decodes N segments per call).
            parts = [
                (ref[s] / ref["batch"]) / max(r[s] / r["batch"], 1e-9)
                for s in ("features", "encoder", "decoder", "total")
            ]
            speed = "/".join(f"{p:.1f}x" for p in parts)
        enc_rate = r["gflop"]["encoder"] / max(r["encoder"], 1e-9)
        weight_bytes = 1 if r["impl"].endswith("int8") else 4
        floor = decoder_floor_seconds(
            r["shape"], r["seconds"], r["tokens"], r["beam"], r["batch"], peak, bandwidth, weight_bytes
        )
        lines.append(
            f"{r['model']:8s} {r['seconds']:4.0f}s {r['impl']:11s} {r['features']:8.2f}s {r['encoder']:8.2f}s"
            f" {r['decoder']:8.2f}s {r['total']:8.2f}s {r['total'] / (r['seconds'] * r['batch']):6.3f} {speed:>30s}"
            f" {enc_rate:8.1f} {100 * enc_rate / peak:6.0f}% {r['decoder'] / floor:8.1f}x"
        )
    return "\n".join(lines)


def _engine_rows(opts: argparse.Namespace, seconds: list[float]) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Ours (and int8, and the reference) on random checkpoints, one length at a time."""
    rates = matmul_peak_gflops(opts.threads)
    peak = rates["peak"]
    described = ", ".join(f"{k} {v:.1f}" for k, v in rates.items() if k != "peak")
    print(f"fp32 matmul peak ({opts.threads} threads): {peak:.1f} GFLOP/s ({described})", flush=True)
    rates["read_bandwidth_gbs"] = memory_bandwidth_gbs(opts.threads)
    print(f"memory read bandwidth ({opts.threads} threads): {rates['read_bandwidth_gbs']:.1f} GB/s", flush=True)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
        # ONNX exports of these throw-away checkpoints go to the temporary directory too.
        os.environ[CACHE_ENV] = str(Path(tmp) / "onnx-cache")
        start = time.perf_counter()
        main_dir = write_random_model_dir(Path(tmp) / opts.preset, preset=opts.preset, odim=7832)
        size = (main_dir / MODEL_FILE).stat().st_size
        print(f"wrote random {opts.preset} checkpoint ({size / 1e9:.2f} GB) in {time.perf_counter() - start:.0f} s")
        full = [s for s in seconds if s <= opts.full_max_seconds]
        full_ref = [s for s in full if s <= opts.reference_max_seconds]

        def bench(label: str, model_dir: Path, lengths: list[float], reference: bool, ours: bool) -> list[dict]:
            int8 = ours and not opts.no_int8
            backends = ours and opts.backends
            return _bench_model(
                label, model_dir, lengths, opts.beam, reference, int8, opts.threads, ours, opts.batch, backends
            )

        rows += bench(opts.preset, main_dir, full, reference=False, ours=True)
        if opts.pipeline_batch > 1:
            rows += _bench_model(
                opts.preset,
                main_dir,
                full,
                opts.beam,
                reference=False,
                int8=False,
                threads=opts.threads,
                batch=opts.pipeline_batch,
            )
        if full_ref:
            rows += bench(opts.preset, main_dir, full_ref, reference=True, ours=False)
        if len(full_ref) < len(seconds) and opts.narrow_preset != opts.preset:
            # Every length, both sides, on the narrower model: its ratios are measured, not
            # extrapolated from the full-size ones.
            (main_dir / MODEL_FILE).unlink()
            narrow_dir = write_random_model_dir(Path(tmp) / opts.narrow_preset, preset=opts.narrow_preset, odim=7832)
            rows += bench(opts.narrow_preset, narrow_dir, seconds, reference=True, ours=True)

    return rows, rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks engine", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="aed-l", choices=["aed-l", "small", "tiny"])
    parser.add_argument("--seconds", default="10,30,60", help="segment lengths, comma-separated")
    parser.add_argument("--beam", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--full-max-seconds", type=float, default=60.0, help="longest segment run at full size")
    parser.add_argument("--reference-max-seconds", type=float, default=10.0, help="longest full-size reference run")
    parser.add_argument("--narrow-preset", default="small", choices=["small", "tiny"])
    parser.add_argument("--no-int8", action="store_true", help="skip our int8 rows")
    parser.add_argument("--batch", type=int, default=1, help="segments per call, both sides (default: %(default)s)")
    parser.add_argument(
        "--backends",
        action="store_true",
        help="also: rows with the other backends (fast-mkl: torch's own Linear, the old default; fast-onnx: ONNX"
        " Runtime; fast-onednn: packed weights), and all of them on the encoder and one cached decoder step in"
        " alternating rounds",
    )
    parser.add_argument("--only-backends", action="store_true", help="run the alternating --backends comparison only")
    parser.add_argument("--backend-rounds", type=int, default=5, help="alternating rounds per length (--backends)")
    parser.add_argument(
        "--pipeline-batch",
        type=int,
        default=1,
        help="also: ours (default path) with this many segments per call, as the pipeline batches them,"
        " reported per segment against the reference's one per call (default: %(default)s, off)",
    )
    parser.add_argument("--json", type=Path)
    opts = parser.parse_args(argv)
    seconds = [float(s) for s in opts.seconds.split(",") if s]

    rows: list[dict[str, Any]] = []
    rates: dict[str, float] = {}
    table = ""
    if not opts.only_backends:
        rows, rates = _engine_rows(opts, seconds)
        table = _table(rows, rates["peak"], rates["read_bandwidth_gbs"])
        print()
        print(table)
    backend_rows: list[dict[str, Any]] = []
    if opts.backends or opts.only_backends:
        backend_rows = _backend_rows(opts, seconds)
        backend_table = _backend_table(backend_rows)
        print()
        print(backend_table)
        table = f"{table}\n\n{backend_table}".strip()
    if opts.json:
        report = {
            "benchmark": "engine",
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "machine": {"platform": platform.platform(), "processor": platform.processor(), "threads": opts.threads},
            "torch": torch.__version__,
            "onnxruntime": _ort_version() if backend_rows else None,
            "matmul_gflops": rates,
            "tokens_per_second": TOKENS_PER_SECOND,
            "reference_full_size_up_to_s": opts.reference_max_seconds,
            "rows": rows,
            "backend_rows": backend_rows,
            "table": table,
        }
        opts.json.write_text(json.dumps(report, indent=2))
    return 0


def _backend_rows(opts: argparse.Namespace, seconds: list[float]) -> list[dict[str, Any]]:
    """Eager torch against ONNX Runtime and oneDNN on a random checkpoint of --preset (fp32)."""
    print(f"torch {torch.__version__} against onnxruntime {_ort_version()}, {opts.threads} thread(s)", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-backends-") as tmp:
        model_dir = write_random_model_dir(Path(tmp) / opts.preset, preset=opts.preset, odim=7832)
        model = AedModel.from_package(load_package(model_dir / MODEL_FILE))
        rounds = opts.backend_rounds
        rows = compare_encoder(model, opts.preset, seconds, rounds, opts.threads, Path(tmp))
        rows += compare_decoder_step(model, opts.preset, seconds, rounds, opts.threads, Path(tmp), opts.beam)
    return rows


def _backend_table(rows: list[dict[str, Any]]) -> str:
    return table(rows)


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__
