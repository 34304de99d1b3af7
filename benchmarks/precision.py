"""`python -m benchmarks precision`: the engine's CPU precisions (fp32, bf16, int8) side by side.

A random checkpoint of the chosen shape (written once into --cache-dir) is loaded once per
precision; each decodes the same segments at beam 3 with the output length forced to 4.5
tokens per second (the same number of decoder steps everywhere), in alternating rounds in
this one process, and the fastest round of each is reported with its encoder and decoder
times, its CPU seconds (process time: on a shared machine the steadier figure) and its speed
over fp32's. A precision this CPU has no unit for (cpuflags.py) is
listed and skipped, as the engine refuses it.

Drift (token agreement with fp32, CER/WER) is measured on the trained fixture by
`tests/fixtures/precision_drift.py`; speed needs the full-size shape, drift a trained model.

--upstream instead times ours (fp32) against upstream (the PyPI reference) in CPU seconds,
the issue's engine-against-upstream ratio (docs/engine.md#this-cpus-units-issue-32-amx-avx512_bf16-vnni).

To see what an AVX2-only CPU (no AVX-512) does with the same code, run it again with the
instruction sets capped (ATen, oneDNN and MKL read these at start-up; numba's kernels
follow NUMBA_CPU_NAME):

    python -m benchmarks precision --preset aed-l --seconds 30 --threads 2 --rounds 3
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \\
        NUMBA_CPU_NAME=haswell python -m benchmarks precision --preset aed-l --seconds 30
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fireredasr_fast.engines.firered.checkpoint import MODEL_FILE, load_package
from fireredasr_fast.engines.firered.cpuflags import cpu_unit
from fireredasr_fast.engines.firered.engine import FireRedModel
from testsupport.reference import ReferenceModel

from .common import DEFAULT_CACHE, cpu_name, ensure_random_model, forced_length_hook, noise_waveform, report_header

TOKENS_PER_SECOND = 4.5
ISA_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "NUMBA_CPU_NAME")


def _decode(model: FireRedModel, waves: list[np.ndarray], tokens: int, beam: int) -> dict[str, float]:
    hook = forced_length_hook(tokens, model.model.eos_id)
    start, cpu = time.perf_counter(), time.process_time()
    model.transcribe(waves, beam_size=beam, logits_hook=hook)
    return {"total": time.perf_counter() - start, "cpu": time.process_time() - cpu, **model.timings}


def measure(opts: argparse.Namespace, model_dir: Path) -> dict[str, Any]:
    """Per precision: every round's stage times (alternating order) and its CPU unit."""
    torch.set_num_threads(opts.threads)
    package = load_package(model_dir / MODEL_FILE)
    units = {p: cpu_unit(p) for p in opts.precisions}
    models = {p: FireRedModel(model_dir, precision=p, package=package) for p, unit in units.items() if unit}
    waves = [noise_waveform(opts.seconds, 1000 + i) for i in range(opts.batch)]
    tokens = round(TOKENS_PER_SECOND * opts.seconds)
    for model in models.values():
        _decode(model, [noise_waveform(1.0, 99)], round(TOKENS_PER_SECOND), opts.beam)  # warm-up
    rounds: dict[str, list[dict[str, float]]] = {p: [] for p in models}
    items = list(models.items())
    for r in range(opts.rounds):
        for name, model in items if r % 2 == 0 else items[::-1]:
            rounds[name].append(_decode(model, waves, tokens, opts.beam))
            print(f"  round {r + 1} {name:5s} total {rounds[name][-1]['total']:7.2f} s", flush=True)
    return {"units": units, "rounds": rounds, "tokens": tokens}


def against_upstream(opts: argparse.Namespace, model_dir: Path) -> dict[str, list[float]]:
    """CPU seconds of a whole call, ours (fp32, the default path) and upstream's (the PyPI
    reference), alternating rounds: the ratio the issue measured, per instruction-set cap."""
    torch.set_num_threads(opts.threads)
    package = load_package(model_dir / MODEL_FILE)
    models = {"ours": FireRedModel(model_dir, package=package), "upstream": ReferenceModel(model_dir, package=package)}
    waves = [noise_waveform(opts.seconds, 1000 + i) for i in range(opts.batch)]
    tokens = round(TOKENS_PER_SECOND * opts.seconds)
    for model in models.values():
        _decode(model, [noise_waveform(1.0, 99)], round(TOKENS_PER_SECOND), opts.beam)  # warm-up
    cpu: dict[str, list[float]] = {name: [] for name in models}
    items = list(models.items())
    for r in range(opts.rounds):
        for name, model in items if r % 2 == 0 else items[::-1]:
            cpu[name].append(_decode(model, waves, tokens, opts.beam)["cpu"])
    return cpu


def table(result: dict[str, Any], seconds: float) -> str:
    """Fastest round of each precision and its speed over fp32's, per stage."""
    best = {p: min(rs, key=lambda r: r["total"]) for p, rs in result["rounds"].items()}
    base = best.get("fp32")
    lines = [
        f"{'precision':9s} {'unit':12s} {'encoder':>8s} {'decoder':>8s} {'total':>8s} {'RTF':>6s} {'CPU s':>8s}"
        "  fp32/this (enc/dec/total/CPU)"
    ]
    for p, unit in result["units"].items():
        if p not in best:
            lines.append(f"{p:9s} {'(none)':12s} skipped: this CPU has no unit for it")
            continue
        b = best[p]
        ratio = "/".join(f"{base[s] / b[s]:.2f}x" for s in ("encoder", "decoder", "total", "cpu")) if base else ""
        lines.append(
            f"{p:9s} {unit:12s} {b['encoder']:7.2f}s {b['decoder']:7.2f}s {b['total']:7.2f}s"
            f" {b['total'] / seconds:6.3f} {b['cpu']:7.2f}s  {ratio}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks precision", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="aed-l", choices=["aed-l", "small", "tiny"])
    parser.add_argument("--seconds", type=float, default=30.0, help="segment length (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=1, help="segments per call (default: %(default)s)")
    parser.add_argument("--beam", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default: %(default)s)")
    parser.add_argument("--precisions", default="fp32,bf16,int8", help="comma-separated (default: %(default)s)")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="random checkpoints are kept here")
    parser.add_argument(
        "--upstream", action="store_true", help="instead: ours (fp32) against upstream, CPU seconds per call"
    )
    parser.add_argument("--json", type=Path)
    opts = parser.parse_args(argv)
    opts.precisions = opts.precisions.split(",")
    isa = {k: os.environ[k] for k in ISA_VARIABLES if k in os.environ}
    print(f"CPU: {cpu_name()}; ATen capability {torch.backends.cpu.get_cpu_capability()}; caps: {isa or 'none'}")
    model_dir = ensure_random_model(opts.cache_dir / opts.preset, opts.preset)
    if opts.upstream:
        cpu = against_upstream(opts, model_dir)
        best = {name: min(v) for name, v in cpu.items()}
        print(f"{opts.preset}, {opts.seconds:.0f} s, beam {opts.beam}, {opts.threads} threads, best of {opts.rounds}:")
        ours, upstream = best["ours"], best["upstream"]
        print(f"CPU s: ours {ours:.3f}, upstream {upstream:.3f}; ours {upstream / ours:.2f}x")
        if opts.json:
            opts.json.write_text(json.dumps({**report_header("precision", opts.threads, opts.preset), "cpu": cpu}))
        return 0
    result = measure(opts, model_dir)
    print(f"\n{opts.preset}, {opts.seconds:.0f} s x {opts.batch}, beam {opts.beam}, {opts.threads} threads,")
    print(f"{result['tokens']} tokens forced, fastest of {opts.rounds} alternating rounds:")
    print(table(result, opts.seconds * opts.batch))
    if opts.json:
        report = report_header("precision", opts.threads, f"random {opts.preset}")
        report.update({"isa_caps": isa, "seconds": opts.seconds, "batch": opts.batch, "beam": opts.beam, **result})
        opts.json.write_text(json.dumps(report, indent=2))
    return 0
