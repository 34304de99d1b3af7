"""`python -m benchmarks runner`: the folder runner against the original approach.

A folder of real-speech videos (built from samples/ with ffmpeg: the two samples repeated
and cut to 1-3 minutes per file, mp4 and mkv) is transcribed with one checkpoint, side by
side in one run:

  (a) the original script: silero VAD's get_speech_timestamps (segments of 1 to 30 s),
      every segment recognised alone (batch of 1) by the reference FireRedASR
      implementation in a ThreadPoolExecutor(2), torch threads at the machine's default;
  (b) the tool: the real CLI in a subprocess on the folder with its own plan, reading
      run-report.json for the workers' compute and wait times.

Both run as child processes whose whole process tree is sampled by a thread at nice 19:
RSS sums and CPU times per process every 0.2 s, PSS sums every 10 s (the memory part: every
0.2 s). Then: throughput with 1x1, 2x1 and 1x2 workers x threads;
and the memory (peak PSS sum of the tree) of 1, 2 and 4 workers on a random checkpoint of
the full AED-L shape, written once to --cache-dir. With `--cluster N`, the tool's own plan
locally against the same plan on a local Ray cluster (`--cluster local`), N alternating rounds.

    python -m benchmarks runner --minutes 6 --json runner-bench.json
    python -m benchmarks runner --skip-original --skip-scaling --skip-memory --cluster 3

A random checkpoint (--preset) never says <eos>: --tokens-per-second 4.5 caps both sides at
the rate of real speech per second of segment, so both decode comparable token counts (the
table shows each side's tokens per second of audio). --variant adds runs of the tool with
other options after (a), each with its ratio to (a):

    python -m benchmarks runner --preset aed-l --minutes 4 --tokens-per-second 4.5 \
        --skip-scaling --skip-memory --variant "--decoder-backend onednn"

Nothing is extrapolated: a part that cannot run (too slow, not enough memory) says so.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from fireredasr_fast.audio import decode_audio, is_media_file, to_float32
from fireredasr_fast.runner.plan import lower_thread_priority

from .common import DEFAULT_CACHE, ROOT, SAMPLES, build_folder, cpu_name, ensure_random_model, ffmpeg, resolve_model

SAMPLE_INTERVAL = 0.2  # seconds between samples of the process tree (RSS, CPU times)
# PSS needs a walk of every mapping's page tables (smaps_rollup). With the 4.6 GB AED-L
# checkpoint mapped, that walk slowed the measured tool: (b) 128.5-133.3 s unmonitored;
# 171.8 s with a PSS sample every 0.2 s at normal priority; 146.3 / 152.2 s against 138.3 /
# 143.7 s unmonitored (alternating) with one every 2 s from a thread at nice 19. So the timed
# runs ((a), (b), scaling) read PSS every 10 s and the cheap RSS every 0.2 s; the memory
# part, which measures PSS, reads it at every sample.
TIMED_PSS_INTERVAL = 10.0
MONITOR_NICE = 19  # the monitor samples in the idle gaps of what it measures
# Below this much available memory the monitored run is killed: other people's processes
# share this machine and must not meet the OOM killer because of a benchmark.
MEMORY_FLOOR_BYTES = 1.5e9
GOALS = {"speedup": 10.0, "wait_share": 0.05, "memory_4_vs_1": 1.5}


# --------------------------------------------------------------------------- monitoring


def _role(proc: psutil.Process, root_pid: int) -> str:
    if proc.pid == root_pid:
        return "main"
    try:
        cmd = " ".join(proc.cmdline())
    except psutil.Error:
        return "other"
    if "resource_tracker" in cmd:
        return "tracker"
    if "spawn_main" in cmd or "multiprocessing" in cmd:
        return "worker"
    if "ffmpeg" in cmd:
        return "ffmpeg"
    return "other"


class TreeMonitor(threading.Thread):
    """Samples a process tree every SAMPLE_INTERVAL s: RSS sums (peak) and CPU seconds per
    process; PSS sums (peak) and per-process detail every `pss_interval` s."""

    def __init__(self, pid: int, pss_interval: float = SAMPLE_INTERVAL) -> None:
        super().__init__(name="monitor", daemon=True)
        self.root = psutil.Process(pid)
        self.interval = SAMPLE_INTERVAL
        self.pss_every = max(1, round(pss_interval / SAMPLE_INTERVAL))
        self.halt = threading.Event()
        self.roles: dict[int, str] = {}
        self.cpu: dict[int, float] = {}  # last seen user+system seconds per pid
        self.peak_rss = 0.0
        self.peak_pss = 0.0
        self.peak_detail: list[dict[str, Any]] = []
        self.series: list[list[dict[str, Any]]] = []  # every sample's per-process detail
        self.samples = 0
        self.killed_for_memory = False

    def run(self) -> None:
        # A sample reads every process's smaps (page tables of the 4.6 GB mapped AED-L
        # checkpoint: ~0.1 s of CPU); at equal priority that thread stalled a 2-thread worker
        # on the 2-core VM, whose threads wait for each other at every parallel step.
        lower_thread_priority(MONITOR_NICE)
        while not self.halt.is_set():
            self.sample()
            self.halt.wait(self.interval)

    def sample(self) -> None:
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return
        rss = 0.0
        alive = []
        for proc in procs:
            try:
                if proc.pid not in self.roles:
                    self.roles[proc.pid] = _role(proc, self.root.pid)
                times = proc.cpu_times()
                rss += proc.memory_info().rss  # statm: cheap
            except psutil.Error:
                continue
            self.cpu[proc.pid] = times.user + times.system
            alive.append(proc)
        # PSS on schedule, and whenever the tree's RSS reaches a new high (its peak is then
        # near): smaps_rollup walks the page tables, which costs the measured run.
        with_pss = self.samples % self.pss_every == 0 or rss > self.peak_rss * 1.01
        self.samples += 1
        self.peak_rss = max(self.peak_rss, rss)
        if with_pss:
            self._sample_pss(alive)
        if psutil.virtual_memory().available < MEMORY_FLOOR_BYTES and not self.killed_for_memory:
            self.killed_for_memory = True
            print("  available memory below the floor: stopping this run", flush=True)
            for proc in reversed(procs):
                with contextlib.suppress(psutil.Error):
                    proc.kill()

    def _sample_pss(self, procs: list[psutil.Process]) -> None:
        pss = 0.0
        detail = []
        for proc in procs:
            try:
                mem = proc.memory_full_info()  # smaps_rollup: PSS splits shared pages by sharer
            except psutil.Error:
                continue
            pss += mem.pss
            # rss - shared (file-backed and shmem pages) = anonymous memory: what a worker
            # holds privately, whatever the other workers map.
            anon = mem.rss - mem.shared
            role = self.roles[proc.pid]
            detail.append({"pid": proc.pid, "role": role, "rss": mem.rss, "pss": mem.pss, "uss": mem.uss, "anon": anon})
        self.series.append(detail)
        if pss > self.peak_pss:
            self.peak_pss = pss
            self.peak_detail = detail

    def settled(self) -> list[dict[str, Any]]:
        """The tree once every worker has loaded its model and the load transients are over.

        Loading maps the checkpoint (file pages) while building the model; if the model
        copies the weights, both exist for a while. So: among the samples where all workers
        ever seen are alive and each holds >= 90% of its own largest anonymous memory (its
        model is loaded, it is not exiting), the one with the smallest PSS sum.
        """
        top: dict[int, int] = {}
        for detail in self.series:
            for d in detail:
                if d["role"] == "worker":
                    top[d["pid"]] = max(top.get(d["pid"], 0), d["anon"])
        best: list[dict[str, Any]] = []
        for detail in self.series:
            workers = {d["pid"]: d["anon"] for d in detail if d["role"] == "worker"}
            if not top or set(workers) != set(top) or any(workers[p] < 0.9 * top[p] for p in top):
                continue
            if not best or sum(d["pss"] for d in detail) < sum(d["pss"] for d in best):
                best = detail
        return best

    def cpu_seconds(self, role: str | None = None) -> float:
        return sum(sec for pid, sec in self.cpu.items() if role is None or self.roles.get(pid) == role)

    def summary(self) -> dict[str, Any]:
        workers = [d for d in self.peak_detail if d["role"] == "worker"]
        settled = self.settled()
        return {
            "settled_pss_gb": round(sum(d["pss"] for d in settled) / 1e9, 3),
            "settled_rss_gb": round(sum(d["rss"] for d in settled) / 1e9, 3),
            "settled": [
                {"pid": d["pid"], "role": d["role"], **{k: round(d[k] / 1e9, 3) for k in ("rss", "pss", "uss", "anon")}}
                for d in settled
            ],
            "peak_rss_gb": round(self.peak_rss / 1e9, 3),
            "peak_pss_gb": round(self.peak_pss / 1e9, 3),
            "at_peak": [
                {"pid": d["pid"], "role": d["role"], **{k: round(d[k] / 1e9, 3) for k in ("rss", "pss", "uss", "anon")}}
                for d in self.peak_detail
            ],
            "workers_at_peak": len(workers),
            "cpu_seconds": round(self.cpu_seconds(), 2),
            "worker_cpu_seconds": round(self.cpu_seconds("worker"), 2),
            "samples": self.samples,
            "killed_for_memory": self.killed_for_memory,
        }


def monitored(cmd: list[str], log: Path, pss_interval: float = TIMED_PSS_INTERVAL) -> tuple[int, float, TreeMonitor]:
    """Run `cmd` from the repository root with its tree sampled; (exit code, wall, monitor)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with log.open("w") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        monitor = TreeMonitor(proc.pid, pss_interval)
        monitor.start()
        code = proc.wait()
        wall = time.perf_counter() - start
        monitor.halt.set()
        monitor.join()
    return code, wall, monitor


# --------------------------------------------------------------------------- (a) the original script


def original_script(
    folder: Path, model_dir: Path, out_dir: Path, result_file: Path, max_len: int = 0, rate: float = 0.0
) -> None:
    """The user's approach before the tool, run as its own process (see the module doc)."""
    import torch
    from silero_vad import get_speech_timestamps, load_silero_vad

    from testsupport.reference import ReferenceModel

    # What such a script gets without asking: torch's default, one thread per core.
    torch.set_num_threads(os.cpu_count() or 1)
    t0 = time.perf_counter()
    vad = load_silero_vad()
    model = ReferenceModel(model_dir)
    t_load = time.perf_counter() - t0
    out_dir.mkdir(parents=True, exist_ok=True)
    stats: dict[str, Any] = {"load": t_load, "decode_vad": 0.0, "asr": 0.0, "segments": 0, "tokens": 0}
    lengths: list[float] = []
    audio = 0.0
    pool = ThreadPoolExecutor(2)
    for path in sorted(p for p in folder.iterdir() if is_media_file(p)):
        t1 = time.perf_counter()
        wave = to_float32(decode_audio(path))
        audio += wave.size / 16000
        spans = get_speech_timestamps(
            torch.from_numpy(wave), vad, sampling_rate=16000, min_speech_duration_ms=1000, max_speech_duration_s=30
        )
        t2 = time.perf_counter()
        pieces = [np.ascontiguousarray(wave[s["start"] : s["end"]]) for s in spans]
        hyps = list(
            pool.map(lambda w: model.transcribe([w], decode_max_len=max_len, max_tokens_per_second=rate)[0], pieces)
        )
        t3 = time.perf_counter()
        stats["decode_vad"] += t2 - t1
        stats["asr"] += t3 - t2
        stats["segments"] += len(pieces)
        stats["tokens"] += sum(len(h.token_ids) for h in hyps)
        lengths += [len(w) / 16000 for w in pieces]
        srt = []
        for k, (span, hyp) in enumerate(zip(spans, hyps, strict=True), 1):
            srt.append(f"{k}\n{_srt_time(span['start'] / 16000)} --> {_srt_time(span['end'] / 16000)}\n{hyp.text}\n")
        (out_dir / (path.stem + ".srt")).write_text("\n".join(srt), encoding="utf-8")
    pool.shutdown()
    stats.update(
        audio_seconds=audio,
        wall=time.perf_counter() - t0,
        threads=torch.get_num_threads(),
        segment_seconds=_spread(lengths),
    )
    result_file.write_text(json.dumps(stats))


def _srt_time(sec: float) -> str:
    ms = round(sec * 1000)
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def _spread(values: list[float]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    ordered = sorted(values)
    return {
        "count": len(values),
        "min": round(ordered[0], 2),
        "median": round(ordered[len(ordered) // 2], 2),
        "max": round(ordered[-1], 2),
        "mean": round(sum(values) / len(values), 2),
    }


def run_original(folder: Path, model_dir: Path, work: Path, max_len: int = 0, rate: float = 0.0) -> dict[str, Any]:
    result = work / "original.json"
    cmd = [sys.executable, "-m", "benchmarks.runner", "--original", str(folder), str(model_dir)]
    cmd += [str(work / "original-out"), str(result), str(max_len), str(rate)]
    code, wall, monitor = monitored(cmd, work / "original.log")
    if code != 0:
        raise RuntimeError(f"the original script failed ({code}); see {work / 'original.log'}")
    stats = json.loads(result.read_text())
    cores = psutil.cpu_count(logical=True) or 1
    return {
        "label": "(a) original",
        "wall": round(wall, 2),
        "audio_seconds": round(stats["audio_seconds"], 1),
        "rtf": round(wall / stats["audio_seconds"], 4),
        "load_seconds": round(stats["load"], 2),
        "decode_vad_seconds": round(stats["decode_vad"], 2),
        "asr_seconds": round(stats["asr"], 2),
        "segments": stats["segment_seconds"],
        "tokens": stats["tokens"],
        "tokens_per_audio_second": round(stats["tokens"] / stats["audio_seconds"], 2),
        "torch_threads": stats["threads"],
        "cpu_utilisation": round(monitor.cpu_seconds() / (wall * cores), 3),
        "memory": monitor.summary(),
    }


# --------------------------------------------------------------------------- (b) the tool


def run_tool(
    folder: Path,
    model_dir: Path,
    work: Path,
    name: str,
    workers: int | None,
    threads: int | None,
    extra: list[str],
    pss_interval: float = TIMED_PSS_INTERVAL,
) -> dict[str, Any]:
    out = work / f"tool-{name}"
    cmd = [sys.executable, "-m", "fireredasr_fast.cli", "--model-dir", str(model_dir), "-o", str(out)]
    cmd += ["--no-progress", "--overwrite"]
    if workers is not None:
        cmd += ["--workers", str(workers)]
    if threads is not None:
        cmd += ["--threads-per-worker", str(threads)]
    cmd += [*extra, "--", str(folder)]
    code, wall, monitor = monitored(cmd, work / f"tool-{name}.log", pss_interval)
    report_file = out / "run-report.json"
    if code != 0 or not report_file.is_file():
        tail = (work / f"tool-{name}.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"the CLI failed ({code}) for {name}:\n{tail}")
    report = json.loads(report_file.read_text())
    summary = report["summary"]
    plan = summary.get("plan", {})
    audio = summary["audio_hours"] * 3600
    run_wall = summary["wall_seconds"]
    cores = psutil.cpu_count(logical=True) or 1
    tokens, lengths = _tool_tokens(out)
    workers_stats = summary.get("workers", {})
    n_workers = max(1, plan.get("workers") or 1)
    return {
        "label": name,
        "command": " ".join(cmd[1:]),
        "plan": f"{plan.get('workers')}x{plan.get('threads_per_worker')}",
        "wall": round(wall, 2),
        "runner_wall": run_wall,
        "audio_seconds": round(audio, 1),
        "rtf": round(wall / audio, 4),
        "throughput": round(audio / wall, 2),  # audio seconds per wall second, whole process
        "segments": _spread(lengths),
        "tokens": tokens,
        "tokens_per_audio_second": round(tokens / audio, 2) if audio else 0.0,
        "workers": workers_stats,
        # Measured: the workers' CPU seconds over the runner's wall on all cores.
        "worker_cpu_utilisation": round(monitor.cpu_seconds("worker") / (run_wall * cores), 3),
        # From the report: recognition time over the workers' available time.
        "worker_busy_share": round(workers_stats.get("compute_seconds", 0.0) / (run_wall * n_workers), 3),
        "cpu_utilisation": round(monitor.cpu_seconds() / (wall * cores), 3),
        "memory": monitor.summary(),
    }


def _tool_tokens(out: Path) -> tuple[int, list[float]]:
    tokens = 0
    lengths: list[float] = []
    for path in out.rglob("*.json"):
        if path.name == "run-report.json" or path.name.startswith("."):
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for seg in data.get("segments", []) if isinstance(data, dict) else []:
            tokens += len(seg.get("tokens", []))
            lengths.append(seg["end"] - seg["start"])
    return tokens, lengths


# --------------------------------------------------------------------------- memory on AED-L


def memory_part(cache: Path, work: Path, counts: list[int]) -> dict[str, Any]:
    """Peak and settled PSS sums of the CLI's tree with n workers on the AED-L shape.

    Input: four 5 s clips. The pool starts workers on demand, one per batch it cannot place
    on an idle worker; four files give up to four batches, so up to four workers start.
    """
    model = ensure_random_model(cache / "aed-l", "aed-l")
    clips = work / "memory-input"
    clips.mkdir(exist_ok=True)
    for k in range(4):
        start = f"{k * 9.0:.1f}"
        ffmpeg("-ss", start, "-i", str(SAMPLES / "two_cities.mp4"), "-t", "5", "-c", "copy", str(clips / f"c{k}.mp4"))
    size = sum(f.stat().st_size for f in model.iterdir() if f.is_file())
    rows: list[dict[str, Any]] = []
    private_one: float | None = None
    for n in counts:
        available = psutil.virtual_memory().available
        if n > 1 and private_one is None:
            # No 1-worker measurement to size the risk: do not start several AED-L workers blind.
            rows.append({"workers": n, "skipped": "not run: no 1-worker measurement to check memory against"})
            continue
        if private_one is not None and n > 1:
            # While loading, each worker holds its private memory and the mapped checkpoint
            # (page cache, shared by all): never start a run that could exhaust the machine.
            need = size + n * private_one
            if need > 0.85 * available:
                rows.append(
                    {
                        "workers": n,
                        "skipped": f"not run: checkpoint {size / 1e9:.2f} GB + {n} x {private_one / 1e9:.2f} GB "
                        f"private per worker (measured with 1) = {need / 1e9:.1f} GB > 85% of "
                        f"{available / 1e9:.1f} GB available",
                        "lower_bound_gb": round(n * private_one / 1e9, 2),
                    }
                )
                print(f"  memory {n} workers: {rows[-1]['skipped']}", flush=True)
                continue
        # A short decode cap: memory is what is measured, and it is set by the weights.
        options = ["--decode-max-len", "16", "--formats", "json"]
        result = run_tool(clips, model, work, f"mem-{n}", n, 1, options, pss_interval=SAMPLE_INTERVAL)
        mem = result["memory"]
        settled = [d for d in mem["settled"] if d["role"] == "worker"]
        at_peak = [d for d in mem["at_peak"] if d["role"] == "worker"]
        row = {
            "workers": n,
            "workers_seen": len(settled),
            "settled_pss_gb": mem["settled_pss_gb"],
            "peak_pss_gb": mem["peak_pss_gb"],
            "peak_rss_gb": mem["peak_rss_gb"],
            "worker_anon_gb": [d["anon"] for d in settled],
            "worker_pss_gb": [d["pss"] for d in settled],
            "worker_pss_at_peak_gb": [d["pss"] for d in at_peak],
            "wall": result["wall"],
            "killed_for_memory": mem["killed_for_memory"],
        }
        rows.append(row)
        if n == 1 and settled and max(d["anon"] for d in settled) > 0:
            private_one = max(d["anon"] for d in settled) * 1e9
        print(
            f"  memory {n} workers: settled PSS {row['settled_pss_gb']:.2f} GB, peak {row['peak_pss_gb']:.2f} GB,"
            f" worker anonymous {row['worker_anon_gb']} GB",
            flush=True,
        )
    # Peaks are compared: the "loaded" sample of a single worker can come before it has read
    # all its memory-mapped weight pages in (they are read on first use), which flatters it.
    base = next((r for r in rows if r["workers"] == 1 and "peak_pss_gb" in r), None)
    for r in rows:
        if base and "peak_pss_gb" in r:
            r["vs_one"] = round(r["peak_pss_gb"] / base["peak_pss_gb"], 2)
    return {"model": str(model), "model_gb": round(size / 1e9, 2), "rows": rows}


# --------------------------------------------------------------------------- tables


def _gb(x: float) -> str:
    return f"{x:.2f} GB"


def comparison_table(a: dict[str, Any], b: dict[str, Any], variants: list[dict[str, Any]] | None = None) -> str:
    lines = [
        f"{'':36s} {'wall':>9s} {'RTF':>7s} {'audio/s':>8s} {'segments (median)':>18s} {'tok/s audio':>11s}"
        f" {'CPU util':>8s} {'peak RSS':>9s} {'peak PSS':>9s} {'a / this':>8s}"
    ]
    for r in (a, b, *(variants or [])):
        name = r["label"] if r is a else f"(b) tool {r['plan']}"
        if r.get("variant"):
            name += " " + r["variant"]
        seg = r["segments"]
        lines.append(
            f"{name:36s} {r['wall']:8.1f}s {r['rtf']:7.3f} {r['audio_seconds'] / r['wall']:8.2f}"
            f" {seg.get('count', 0):>8d} ({seg.get('median', 0):5.1f} s) {r['tokens_per_audio_second']:11.2f}"
            f" {r['cpu_utilisation']:8.0%} {_gb(r['memory']['peak_rss_gb']):>9s} {_gb(r['memory']['peak_pss_gb']):>9s}"
            f" {a['wall'] / r['wall']:7.2f}x"
        )
    lines.append(f"speedup (a wall / b wall): {a['wall'] / b['wall']:.2f}x")
    w = b["workers"]
    lines.append(
        f"(b) workers: compute {w.get('compute_seconds')} s, wait {w.get('wait_seconds')} s, "
        f"wait share {w.get('wait_share', 0):.1%}; worker CPU utilisation {b['worker_cpu_utilisation']:.0%} "
        f"of all cores over the runner's {b['runner_wall']:.1f} s; busy share {b['worker_busy_share']:.0%}"
    )
    lines.append(
        f"(a) split: load {a['load_seconds']:.1f} s, decode+VAD {a['decode_vad_seconds']:.1f} s, "
        f"recognition {a['asr_seconds']:.1f} s ({a['torch_threads']} torch threads)"
    )
    return "\n".join(lines)


def scaling_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"{'workers x threads':18s} {'wall':>8s} {'runner':>8s} {'audio/s':>8s} {'vs 1x1':>7s} {'wait share':>10s}"
        f" {'worker CPU':>10s} {'peak PSS':>9s}"
    ]
    base = next((r for r in rows if r["plan"] == "1x1"), rows[0])
    for r in rows:
        lines.append(
            f"{r['plan']:18s} {r['wall']:7.1f}s {r['runner_wall']:7.1f}s {r['throughput']:8.2f}"
            f" {r['throughput'] / base['throughput']:6.2f}x {r['workers'].get('wait_share', 0):10.1%}"
            f" {r['worker_cpu_utilisation']:10.0%} {_gb(r['memory']['peak_pss_gb']):>9s}"
        )
    return "\n".join(lines)


def memory_table(mem: dict[str, Any]) -> str:
    lines = [
        f"AED-L-shaped random checkpoint, {mem['model_gb']:.2f} GB; four 5 s inputs, --threads-per-worker 1",
        f"{'workers':>7s} {'PSS sum, peak':>13s} {'vs 1':>6s} {'PSS sum, loaded':>15s} {'RSS sum, peak':>13s}"
        f" {'per-worker anonymous (private)':>30s}",
    ]
    for r in mem["rows"]:
        if "skipped" in r:
            lines.append(f"{r['workers']:7d} {r['skipped']}")
            continue
        anon = "/".join(f"{x:.2f}" for x in r["worker_anon_gb"]) + " GB"
        lines.append(
            f"{r['workers']:7d} {_gb(r['peak_pss_gb']):>13s} {r.get('vs_one', 0):5.2f}x {_gb(r['settled_pss_gb']):>15s}"
            f" {_gb(r['peak_rss_gb']):>13s} {anon:>30s}"
            + ("  (killed: memory floor)" if r["killed_for_memory"] else "")
        )
    return "\n".join(lines)


def goals(a: dict[str, Any] | None, b: dict[str, Any] | None, mem: dict[str, Any] | None) -> list[str]:
    out = []
    if a and b:
        speed = a["wall"] / b["wall"]
        out.append(f"(b) >= {GOALS['speedup']:.0f}x faster than (a): {speed:.2f}x -> {_met(speed >= GOALS['speedup'])}")
    if b:
        share = b["workers"].get("wait_share", 0.0)
        out.append(f"worker wait < {GOALS['wait_share']:.0%}: {share:.1%} -> {_met(share < GOALS['wait_share'])}")
    if mem:
        four = next((r for r in mem["rows"] if r["workers"] == 4), None)
        one = next((r for r in mem["rows"] if r["workers"] == 1 and "peak_pss_gb" in r), None)
        if four is not None and "lower_bound_gb" in four and one is not None:
            # Not run, but the private memory alone (measured with one worker) decides it.
            bound = four["lower_bound_gb"] / one["peak_pss_gb"]
            out.append(
                f"memory of 4 workers < {GOALS['memory_4_vs_1']}x one: {four['skipped']}; the 4 workers' "
                f"private memory alone is >= {bound:.2f}x one worker's whole PSS -> {_met(bound < 1.5)}"
            )
        elif four is None or "vs_one" not in four:
            out.append("memory of 4 workers < 1.5x one: not measured (" + (four or {}).get("skipped", "no row") + ")")
        else:
            ratio = four["vs_one"]
            out.append(f"memory of 4 workers < {GOALS['memory_4_vs_1']}x one: {ratio:.2f}x -> {_met(ratio < 1.5)}")
    return out


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks runner", description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=6.0, help="audio in the folder (default: %(default)s)")
    parser.add_argument("--files", type=int, help="number of files (default: from --minutes, 1-3 min each)")
    parser.add_argument("--model-dir", type=Path, help="checkpoint for both sides (default: fixture, else random)")
    parser.add_argument("--preset", choices=["tiny", "small", "aed-l"], help="write a random checkpoint of this shape")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="random checkpoints are kept here")
    parser.add_argument("--skip-original", action="store_true", help="no (a) run")
    parser.add_argument("--skip-scaling", action="store_true", help="no 1x1 / 2x1 / 1x2 runs")
    parser.add_argument("--skip-memory", action="store_true", help="no AED-L memory part")
    parser.add_argument("--only-memory", action="store_true", help="just the AED-L memory part")
    parser.add_argument("--memory-workers", default="1,2,4")
    parser.add_argument(
        "--decode-max-len",
        type=int,
        default=0,
        help="same token cap on both sides (0: upstream's rule, up to the encoder length); for random models",
    )
    parser.add_argument(
        "--tokens-per-second",
        type=float,
        default=0.0,
        help="same cap per second of segment on both sides (--max-tokens-per-second); a random model that never"
        " emits <eos> then decodes this many tokens per second of speech on both sides, like real speech (4.5)",
    )
    parser.add_argument("--tool-args", default="", help="extra CLI options for all of the tool's runs")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="ARGS",
        help="after (a), one more (b) run with these CLI options (repeatable), e.g. '--decoder-backend onednn'",
    )
    parser.add_argument(
        "--cluster",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="also run the tool on a local Ray cluster (--cluster local), alternating with local runs, N rounds",
    )
    parser.add_argument("--keep", type=Path, help="keep the work folder (inputs, outputs, logs) here")
    parser.add_argument("--json", type=Path)
    opts = parser.parse_args(argv)

    cores = psutil.cpu_count(logical=False) or 1
    logical = psutil.cpu_count(logical=True) or 1
    machine = {
        "physical_cores": cores,
        "logical_cores": logical,
        "memory_gb": round(psutil.virtual_memory().total / 1e9, 1),
        "available_gb_at_start": round(psutil.virtual_memory().available / 1e9, 1),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "processor": cpu_name(),
    }
    print(f"machine: {machine}", flush=True)
    report: dict[str, Any] = {
        "benchmark": "runner",
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine,
    }
    opts.cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="bench-runner-") if opts.keep is None else None
    work = opts.keep or Path(tmp or "")
    work.mkdir(parents=True, exist_ok=True)
    try:
        a = b = mem = None
        if not opts.only_memory:
            a, b = _speed_parts(opts, work, report)
        if opts.only_memory or not opts.skip_memory:
            print("memory on AED-L ...", flush=True)
            counts = [int(x) for x in opts.memory_workers.split(",") if x]
            mem = memory_part(opts.cache_dir, work, counts)
            report["memory"] = mem
            print("\n" + memory_table(mem) + "\n", flush=True)

        report["goals"] = goals(a, b, mem)
        for line in report["goals"]:
            print(line)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        if opts.json:
            opts.json.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    return 0


def _speed_parts(
    opts: argparse.Namespace, work: Path, report: dict[str, Any]
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(a) against (b) on the folder, then the workers x threads scaling."""
    a = None
    model_dir, model_label = resolve_model(opts.model_dir, opts.preset, opts.cache_dir)
    report["model"] = {"dir": str(model_dir), "kind": model_label}
    print(f"model: {model_label}", flush=True)
    folder = work / "videos"
    report["inputs"] = build_folder(folder, opts.minutes, opts.files)
    total = sum(f["seconds"] for f in report["inputs"])
    print(f"inputs: {len(report['inputs'])} files, {total:.0f} s of audio in {folder}", flush=True)

    print("(b) the tool, its own plan ...", flush=True)
    extra = ["--decode-max-len", str(opts.decode_max_len)] if opts.decode_max_len else []
    if opts.tokens_per_second:
        extra += ["--max-tokens-per-second", str(opts.tokens_per_second)]
    extra += opts.tool_args.split()
    b = run_tool(folder, model_dir, work, "auto", None, None, extra)
    report["tool"] = b
    print(f"  wall {b['wall']:.1f} s, plan {b['plan']}", flush=True)
    if not opts.skip_original:
        print("(a) the original script ...", flush=True)
        a = run_original(folder, model_dir, work, opts.decode_max_len, opts.tokens_per_second)
        report["original"] = a
        print(f"  wall {a['wall']:.1f} s", flush=True)
        report["speedup"] = round(a["wall"] / b["wall"], 2)
        variants = []
        for i, args in enumerate(opts.variant):
            print(f"(b) the tool with {args} ...", flush=True)
            row = run_tool(folder, model_dir, work, f"variant-{i + 1}", None, None, extra + args.split())
            variants.append({**row, "variant": args, "speedup": round(a["wall"] / row["wall"], 2)})
        report["variants"] = variants
        print("\n" + comparison_table(a, b, variants) + "\n", flush=True)

    if not opts.skip_scaling:
        rows = []
        for workers, threads in ((1, 1), (2, 1), (1, 2)):
            if f"{workers}x{threads}" == b["plan"]:
                rows.append(b)  # the (b) run already is this plan
                continue
            print(f"scaling: {workers} worker(s) x {threads} thread(s) ...", flush=True)
            rows.append(run_tool(folder, model_dir, work, f"{workers}x{threads}", workers, threads, extra))
        report["scaling"] = rows
        print("\n" + scaling_table(rows) + "\n", flush=True)

    if opts.cluster:
        report["cluster"] = cluster_part(folder, model_dir, work, opts.cluster, extra)
    return a, b


def cluster_part(folder: Path, model_dir: Path, work: Path, rounds: int, extra: list[str]) -> dict[str, Any]:
    """The local runner against the same plan on a local Ray cluster, alternating rounds."""
    runs: dict[str, list[dict[str, Any]]] = {"local": [], "ray": []}
    for i in range(rounds):
        for label, flags in (("local", []), ("ray", ["--cluster", "local"])):
            print(f"cluster round {i + 1}/{rounds}: {label} ...", flush=True)
            runs[label].append(run_tool(folder, model_dir, work, f"{label}-{i}", None, None, extra + flags))
    best = {label: min(rows, key=lambda r: r["wall"]) for label, rows in runs.items()}
    result = {
        "rounds": rounds,
        "best": best,
        "walls": {label: [r["wall"] for r in rows] for label, rows in runs.items()},
        "runner_walls": {label: [r["runner_wall"] for r in rows] for label, rows in runs.items()},
        # Whole process (Ray's start-up included) and the runner alone (joined cluster onward).
        "ray_over_local_wall": round(best["ray"]["wall"] / best["local"]["wall"], 3),
        "ray_over_local_runner_wall": round(best["ray"]["runner_wall"] / best["local"]["runner_wall"], 3),
    }
    rows = [("", "plan", "wall s (best)", "runner wall s", "audio s / s", "peak memory")]
    for label in ("local", "ray"):
        r = best[label]
        rows.append(
            (label, r["plan"], f"{r['wall']:.1f}", f"{r['runner_wall']:.1f}", f"{r['throughput']:.1f}",
             _gb(r["memory"]["peak_pss_gb"]))
        )  # fmt: skip
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    print("\n" + "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows))
    print(
        f"ray / local: {result['ray_over_local_wall']}x wall, {result['ray_over_local_runner_wall']}x runner wall "
        f"(best of {rounds} alternating rounds)\n",
        flush=True,
    )
    return result


if __name__ == "__main__":
    if len(sys.argv) == 8 and sys.argv[1] == "--original":
        original_script(*(Path(x) for x in sys.argv[2:6]), max_len=int(sys.argv[6]), rate=float(sys.argv[7]))
    else:
        sys.exit(main())
