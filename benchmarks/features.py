"""`python -m benchmarks features`: the FireRedASR fbank, kaldi-native-fbank against the kernel.

Both give the same float32 bits (checked here on the input, as the tests do); this measures
what each costs per 10 ms frame, on one thread, in alternating rounds, on both samples in turn
(57 s of speech):

  knf          what the engine did before: knf's OnlineFbank, then its frames read one by
               one (FbankExtractor.knf_fbank, still the fallback);
  knf compute  knf's OnlineFbank alone (accept_waveform), without reading the frames back;
  kernel       engines/firered/fbank.py's kernel (FastFbank).

and what the kernel costs a new process before its first frame, in fresh interpreters:
`import numba`, numba's registries filled (kernels.prepare_compiler, which the workers' fork
server does for them), then the first fbank call (the kernel compiled, or loaded from numba's
cache, and the probe computed by both), with numba's cache empty (cold) and then filled (warm).

    python -m benchmarks features --rounds 7
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from fireredasr_fast.audio import decode_audio
from fireredasr_fast.engines.firered import fbank
from fireredasr_fast.engines.firered.features import SAMPLE_RATE, FbankExtractor

from .common import ROOT, SAMPLES, alternate, cpu_name, report_header

FIRST_CALL = """
import json, sys, time
import numpy as np
from fireredasr_fast.engines.firered import kernels
from fireredasr_fast.engines.firered.features import FbankExtractor
t0 = time.perf_counter()
import numba
t1 = time.perf_counter()
kernels.prepare_compiler()
t2 = time.perf_counter()
extractor, wave = FbankExtractor(), np.zeros(16000, np.float32)
extractor.fbank(wave)
t3 = time.perf_counter()
extractor.fbank(wave)
t4 = time.perf_counter()
print(json.dumps({"import_numba": t1 - t0, "registries": t2 - t1, "first_call": t3 - t2, "second_call": t4 - t3}))
"""


def _first_call(cache_dir: str) -> dict[str, float]:
    env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", FIRST_CALL], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _per_frame(rounds: int) -> tuple[dict[str, float], int]:
    import kaldi_native_fbank as knf

    speech = np.concatenate([decode_audio(SAMPLES / name) for name in ("two_cities.mp4", "aishell_zh.mkv")])
    samples = speech.astype(np.float32)  # int16 values: what the extractor hands knf
    extractor = FbankExtractor()
    kernel = fbank.FastFbank(extractor.opts)
    reference = extractor.knf_fbank(samples)
    if not np.array_equal(kernel(samples).view(np.uint32), reference.view(np.uint32)):
        raise SystemExit("the kernel's features differ from knf's on the samples")

    def knf_compute() -> None:
        knf.OnlineFbank(extractor.opts).accept_waveform(SAMPLE_RATE, samples)

    impls = {"knf": lambda: extractor.knf_fbank(samples), "knf compute": knf_compute, "kernel": lambda: kernel(samples)}
    times = alternate(impls, rounds)
    frames = reference.shape[0]
    return {name: statistics.median(t) / frames * 1e6 for name, t in times.items()}, frames


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks features", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    us, frames = _per_frame(args.rounds)
    print(f"{cpu_name()}, 1 thread, {frames} frames (both samples), median of {args.rounds} alternating rounds")
    print(f"{'':14s}{'us/frame':>10s}{'x kernel':>10s}")
    for name, value in us.items():
        print(f"{name:14s}{value:10.2f}{value / us['kernel']:10.2f}")

    first: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as cache:
        for state in ("cold", "warm"):
            first[state] = _first_call(cache)
    print("\nin a fresh process (s): import numba, its registries (the fork server's), first and second fbank call")
    for state, t in first.items():
        values = (t["import_numba"], t["registries"], t["first_call"], t["second_call"])
        print(f"{state:14s}" + "".join(f"{v:10.4f}" for v in values))

    if args.json:
        report = {**report_header("features", 1, "none"), "frames": frames, "us_per_frame": us, "first_call_s": first}
        args.json.write_text(json.dumps(report, indent=2))
    return 0
