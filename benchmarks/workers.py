"""`python -m benchmarks workers`: what a worker process costs to start and to keep, and
whether a second worker pays (issue 32).

Part 1, where it goes: a worker's start-up step by step, the seconds and the private memory
(USS, from smaps) after each step, in a fresh interpreter (as a spawned worker starts) and
in a process forked after the fork server's preload (runner/workerstart.py; this checkout
only): the worker module, torch, numba with its compiler's registries, the engine built on
the memory-mapped checkpoint (kernels loaded from numba's cache, thread pools started), a
first and a second batch of four 10 s segments, and glibc's heap trimmed after them.

Part 2, does a second worker pay: the CLI on a folder of four files with 1 and with 2
workers x 1 thread, this checkout and (--compare-with ROOT) another, in alternating rounds.
Wall time in runs where only the tree's CPU seconds are sampled (cheap); then
--memory-rounds more runs of each (the median kept), where the peak PSS of the CLI's whole
process tree (main process, fork server, workers, ffmpeg; PSS splits shared pages between the
processes that map them) is sampled every 0.5 s by a thread at nice 19. Reading a process's
PSS walks its page tables (~7 ms for a process with torch loaded): ~7 % of a core for five
processes, which slowed the 2-worker runs, where both cores are busy, and not the 1-worker
runs; so memory and time are measured apart. The second worker's cost is the 2-worker peak
minus the 1-worker peak of the same checkout.

    python -m benchmarks workers --preset small --compare-with /path/to/main --rounds 2

A random checkpoint never says <eos>: --tokens-per-second (default 4.5) caps the decoding as
in the runner benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from fireredasr_fast.runner.plan import lower_thread_priority

from .common import DEFAULT_CACHE, build_folder, cpu_name, report_header, resolve_model, tool_command

ROOT = Path(__file__).resolve().parents[1]
MIB = 2**20
SAMPLE_SECONDS = 0.5

# Run in a child interpreter with PYTHONPATH at the checkout measured: argv model_dir, mode
# ("fresh" or "forked"). Prints one JSON list of steps.
_PHASES = r"""
import ctypes, importlib, json, os, sys, time
import psutil

def uss():
    return psutil.Process().memory_full_info().uss / 2**20

steps = []
def step(name, fn):
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    steps.append({"step": name, "seconds": round(time.perf_counter() - start, 3),
                  "cpu_seconds": round(time.process_time() - cpu, 3), "uss_mib": round(uss(), 1)})

def numba_compiler():
    import numba
    from numba.core.registry import cpu_target
    cpu_target.typing_context.refresh()
    cpu_target.target_context.refresh()

model_dir, mode = sys.argv[1], sys.argv[2]
if mode == "forked":
    from fireredasr_fast.engines import EngineSpec
    from fireredasr_fast.runner.workerstart import preload_modules
    for name in preload_modules(EngineSpec("firered", model_dir)):
        importlib.import_module(name)
    pid = os.fork()
    if pid:
        os._exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
steps.append({"step": "process started", "seconds": 0.0, "cpu_seconds": 0.0, "uss_mib": round(uss(), 1)})
step("import the worker module", lambda: importlib.import_module("fireredasr_fast.runner.worker"))
step("import torch", lambda: importlib.import_module("torch"))
step("numba and its compiler", numba_compiler)
from fireredasr_fast.runner.plan import set_process_threads
set_process_threads(1)
from fireredasr_fast.engines import EngineSpec
engine = {}
spec = EngineSpec("firered", model_dir, options={"max_tokens_per_second": 4.5})
step("engine built", lambda: engine.setdefault("e", spec.build()))
import numpy as np
rng = np.random.default_rng(0)
audio = [(rng.standard_normal(16000 * 10) * 0.05).astype(np.float32) for _ in range(4)]
step("first batch", lambda: engine["e"].transcribe(audio))
step("second batch", lambda: engine["e"].transcribe(audio))
step("heap trimmed (malloc_trim)", lambda: ctypes.CDLL(None).malloc_trim(0))
steps.append({"step": "modules", "heavy": sorted(m for m in ("torch._dynamo", "sympy", "onnxruntime", "ctranslate2",
    "faster_whisper", "silero_vad", "numba") if m in sys.modules)})
print(json.dumps(steps))
"""


def _env(root: Path, threads: int = 1) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(root))
    env.update({name: str(threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")})
    return env


def phases(root: Path, model_dir: Path, mode: str) -> list[dict[str, Any]]:
    """A worker's start-up steps, measured in a child interpreter from `root`."""
    done = subprocess.run(
        [sys.executable, "-c", _PHASES, str(model_dir), mode],
        cwd=root,  # `-c` puts the working directory first on sys.path
        env=_env(root),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"phase script failed ({mode}, {root}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


class PeakPss(threading.Thread):
    """The peak PSS sum of a process tree, sampled every SAMPLE_SECONDS at nice 19."""

    def __init__(self, pid: int, pss: bool = True) -> None:
        super().__init__(name="pss", daemon=True)
        self.pss = pss  # False: only the CPU seconds (no page-table walks)
        self.root = psutil.Process(pid)
        self.halt = threading.Event()
        self.peak = 0.0
        self.most_processes = 0
        self.cpu: dict[int, float] = {}  # last seen user + system seconds per process

    def run(self) -> None:
        lower_thread_priority(19)
        while not self.halt.wait(SAMPLE_SECONDS):
            total, count = 0.0, 0
            try:
                tree = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                continue
            for proc in tree:
                try:
                    total += proc.memory_full_info().pss if self.pss else 0
                    times = proc.cpu_times()
                except psutil.Error:
                    continue
                self.cpu[proc.pid] = times.user + times.system
                count += 1
            self.peak = max(self.peak, total)
            self.most_processes = max(self.most_processes, count)


def cli_run(
    root: Path, model_dir: Path, folder: Path, out: Path, workers: int, tokens: float, memory: bool = False
) -> dict[str, Any]:
    cmd = [*tool_command(root), "--model-dir", str(model_dir), "-o", str(out)]
    cmd += ["--workers", str(workers), "--threads-per-worker", "1", "--no-progress", "--overwrite"]
    cmd += ["--max-tokens-per-second", str(tokens), "--", str(folder)]
    start = time.perf_counter()
    with (out.parent / f"{out.name}.log").open("w") as log:
        proc = subprocess.Popen(cmd, cwd=root, env=_env(root), stdout=log, stderr=subprocess.STDOUT)
        monitor = PeakPss(proc.pid, pss=memory)
        monitor.start()
        code = proc.wait()
        wall = time.perf_counter() - start
        monitor.halt.set()
        monitor.join()
    if code != 0:
        raise RuntimeError(f"the CLI failed ({code}); see {out}.log")
    texts = {p.name: p.read_text(encoding="utf-8") for p in sorted(out.glob("*.srt"))}
    row = {"wall": round(wall, 2), "cpu_seconds": round(sum(monitor.cpu.values()), 1),
           "processes": monitor.most_processes}  # fmt: skip
    if memory:
        row["peak_pss_mib"] = round(monitor.peak / MIB, 1)
    print(f"  {row}, load {os.getloadavg()[0]:.1f}", flush=True)
    return {**row, "outputs": texts}


def folder_part(roots: dict[str, Path], model_dir: Path, folder: Path, work: Path, args: argparse.Namespace) -> dict:
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {name: {1: [], 2: []} for name in roots}
    for round_ in range(args.rounds):
        order = list(roots.items()) if round_ % 2 == 0 else list(roots.items())[::-1]
        for workers in (1, 2):
            for name, root in order:
                print(f"round {round_ + 1}: {name}, {workers} worker(s) ...", flush=True)
                out = work / f"out-{name}-{workers}-{round_}"
                runs[name][workers].append(cli_run(root, model_dir, folder, out, workers, args.tokens_per_second))
    memory: dict[str, dict[int, list[dict[str, Any]]]] = {name: {1: [], 2: []} for name in roots}
    for round_ in range(args.memory_rounds):
        for workers in (1, 2):
            for name, root in roots.items():
                print(f"memory round {round_ + 1}: {name}, {workers} worker(s) ...", flush=True)
                out = work / f"out-{name}-{workers}-memory-{round_}"
                row = cli_run(root, model_dir, folder, out, workers, args.tokens_per_second, memory=True)
                memory[name][workers].append(row)
    summary = {}
    for name in roots:
        one, two = runs[name][1], runs[name][2]
        wall1, wall2 = (statistics.median(r["wall"] for r in rows) for rows in (one, two))
        pss1, pss2 = (statistics.median(r["peak_pss_mib"] for r in memory[name][w]) for w in (1, 2))
        same = all(r["outputs"] == one[0]["outputs"] for r in [*one, *two, *memory[name][1], *memory[name][2]])
        summary[name] = {"wall_1": wall1, "wall_2": wall2, "speedup_2_over_1": round(wall1 / wall2, 3),
                         "peak_pss_1_mib": pss1, "peak_pss_2_mib": pss2, "second_worker_mib": round(pss2 - pss1, 1),
                         "outputs_identical": same}  # fmt: skip
    for name, rows in runs.items():
        for row in (*rows[1], *rows[2], *memory[name][1], *memory[name][2]):
            row.pop("outputs")
    return {"runs": runs, "memory_runs": memory, "summary": summary}


def print_phases(results: dict[str, list[dict[str, Any]]]) -> None:
    names = list(results)
    print("\nworker start-up, step by step (CPU seconds of the step / USS MiB after it):")
    print(f"{'step':30s} " + " ".join(f"{n:>24s}" for n in names))
    steps = [s["step"] for s in results[names[0]] if "seconds" in s]
    for step in steps:
        cells = []
        for n in names:
            row = next((s for s in results[n] if s["step"] == step), None)
            cells.append(f"{row['cpu_seconds']:9.2f} s {row['uss_mib']:8.1f} MiB" if row else " " * 24)
        print(f"{step:30s} " + " ".join(f"{c:>24s}" for c in cells))
    for n in names:
        heavy = next(s for s in results[n] if s["step"] == "modules")["heavy"]
        print(f"  {n}: heavy modules loaded: {', '.join(heavy) or 'none'}")


def print_folder(summary: dict[str, dict[str, Any]]) -> None:
    print("\nthe folder, 1 and 2 workers x 1 thread (medians; wall: the timed runs, PSS: the memory runs):")
    print(f"{'checkout':10s} {'wall 1':>8s} {'wall 2':>8s} {'2 vs 1':>7s} {'PSS 1 MiB':>10s} {'PSS 2 MiB':>10s}"
          f" {'2nd worker MiB':>15s}  outputs same")  # fmt: skip
    for name, s in summary.items():
        print(f"{name:10s} {s['wall_1']:8.1f} {s['wall_2']:8.1f} {s['speedup_2_over_1']:6.2f}x"
              f" {s['peak_pss_1_mib']:10.0f} {s['peak_pss_2_mib']:10.0f} {s['second_worker_mib']:15.0f}"
              f"  {s['outputs_identical']}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks workers", description=__doc__)
    parser.add_argument("--preset", choices=["tiny", "small", "aed-l"], default="small")
    parser.add_argument("--model-dir", type=Path)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--minutes", type=float, default=4.0, help="audio in the 4-file folder")
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of the folder part")
    parser.add_argument("--memory-rounds", type=int, default=2, help="runs with the PSS sampled, apart")
    parser.add_argument("--tokens-per-second", type=float, default=4.5)
    parser.add_argument("--compare-with", type=Path, help="another checkout of the package, measured the same way")
    parser.add_argument("--skip-phases", action="store_true")
    parser.add_argument("--skip-folder", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    model_dir, described = resolve_model(args.model_dir, args.preset, args.cache_dir)
    roots = {"this": ROOT}
    if args.compare_with:
        roots["compare"] = args.compare_with.resolve()
    report: dict[str, Any] = {**report_header("workers", 1, described), "roots": {k: str(v) for k, v in roots.items()}}
    print(f"CPU: {cpu_name()}; model: {described}; load at start {os.getloadavg()[0]:.1f}", flush=True)
    if not args.skip_phases:
        results = {}
        for name, root in roots.items():
            results[f"{name}, spawned"] = phases(root, model_dir, "fresh")
        results["this, forked"] = phases(ROOT, model_dir, "forked")
        report["phases"] = results
        print_phases(results)
    if not args.skip_folder:
        with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
            folder = Path(tmp) / "videos"
            report["inputs"] = build_folder(folder, args.minutes, args.files)
            report["folder"] = folder_part(roots, model_dir, folder, Path(tmp), args)
        print_folder(report["folder"]["summary"])
    report["load_at_end"] = os.getloadavg()[0]
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0
