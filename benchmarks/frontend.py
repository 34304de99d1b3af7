"""`python -m benchmarks frontend`: the runner's front end (decode + VAD) alone.

A folder of long videos is built once with ffmpeg and cached in --cache-dir: each file loops
a cycle of real speech (samples/: English 44 s, Mandarin 13 s), pink noise, silence and a
warbling tone, under light background noise, as H.264 (a still frame, 1 fps) + AAC 48 kHz
stereo, the usual shape of a downloaded video. The front end (runner/frontend.py) prepares
the whole folder with 0 (one thread, the original preload), then 1..N VAD processes, rounds
alternating the order; no workers run beside it, and the consumer frees each file at once.

    python -m benchmarks frontend --files 4 --minutes 20 --processes 2 --json frontend.json

Columns: wall seconds (median over rounds); realtime factor = audio seconds / wall seconds;
the speedup over 1 process; CPU seconds of everything the front end ran (this process's
threads, ffmpeg, the VAD processes; start-up excluded: the pool is warmed first); audio
seconds per CPU second, the per-core figure; 8 cores are projected as 8 x that figure; files
at once = the files' decode + VAD seconds over the wall (how many were in progress, on average).
On a machine shared with others, compare the rows of one run, not runs of different days.

With --whole-tool, the whole CLI instead, beside CPU workers (issue 32: the front end that
adapts), its old one-thread front end (--frontend-processes 0) against the default, rounds
alternating, each run's subtitles compared byte for byte:
(1) one long video (--long-minutes, default 2 hours) with the trained tiny fixture, against
    ffmpeg's own decode of the same file (the same command the tool runs, output discarded);
(2) a folder of short files (--folder-files x 1-3 min of real speech) with a random checkpoint
    of the AED-L shape (--preset), where recognition is the bottleneck: no loss expected.

    python -m benchmarks frontend --whole-tool --rounds 2 --json frontend-tool.json

With --vad-graphs, the VAD alone on the first long video's audio (--minutes), one thread:
silero's own ONNX graph against the graph rebuilt as large matrix products (vadgraph.py, the
default), rounds alternating; CPU seconds per round and per 512 windows (one ONNX call), the
CPU seconds to load each (the rebuilt graph from the cache), the largest difference between
their probabilities and whether the segments (default options) are the same:

    python -m benchmarks frontend --vad-graphs --minutes 20 --rounds 4

With --compare-with ROOT (a checkout of another commit, e.g. `git worktree add ROOT main`),
that checkout's default run against this one's instead, each child with PYTHONPATH at its
checkout; the CPU seconds column counts every process a run started (rusage of children):

    python -m benchmarks frontend --whole-tool --folder-files 0 --rounds 2 --compare-with ROOT
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import resource
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from fireredasr_fast.audio import ffmpeg_executable
from fireredasr_fast.inputs import InputFile
from fireredasr_fast.results import SAMPLE_RATE
from fireredasr_fast.runner.frontend import AudioBudget, Frontend, FrontendOptions
from fireredasr_fast.transcribe import TranscribeOptions

from .common import (
    DEFAULT_CACHE,
    TINY_MODEL,
    build_folder,
    build_long_folder,
    ensure_random_model,
    report_header,
    tool_command,
)

SAMPLE_SECONDS = 0.25  # --whole-tool: how often a run's processes are looked at (CPU seconds)
PROJECTED_CORES = 8


@dataclass
class _Item:
    index: int
    item: InputFile
    started: float = 0.0


def _cpu_seconds(pool_pids: list[int]) -> float:
    """This process (its threads), its reaped children (ffmpeg) and the live VAD processes."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + reaped.ru_utime + reaped.ru_stime
    for pid in pool_pids:
        try:
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def measure(paths: list[Path], processes: int) -> dict[str, Any]:
    """Prepare every file once with this many VAD processes; wall and CPU seconds."""
    items = [_Item(i, InputFile(path, Path(path.name))) for i, path in enumerate(paths)]
    budget = AudioBudget(1e12)  # no bound: the consumer frees each file at once anyway
    frontend = Frontend(items, TranscribeOptions(), budget, FrontendOptions(processes=processes))
    frontend.warm_up()
    pool_pids = [child.pid for child in psutil.Process().children()]
    out: queue.Queue = queue.Queue()
    cpu_before = _cpu_seconds(pool_pids)
    start = time.perf_counter()
    frontend.start(out)
    audio = 0.0
    failures = []
    try:
        while (message := out.get()) is not None:
            _, result = message
            if isinstance(result, BaseException):
                failures.append(str(result))
                continue
            audio += result.duration
            budget.release(result.duration)
        wall = time.perf_counter() - start
        cpu = _cpu_seconds(pool_pids) - cpu_before
    finally:
        frontend.close()
    if failures:
        raise RuntimeError(f"the front end failed on the folder: {failures[0]}")
    stats = frontend.stats
    return {
        "processes": processes,
        "wall_seconds": wall,
        "audio_seconds": audio,
        "cpu_seconds": cpu,
        "decode_seconds": stats["decode"],
        "vad_seconds": stats["vad"],
        "files_at_once": frontend.files_at_once,
    }


def summarise(runs: dict[int, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    rows = []
    for processes, measured in runs.items():
        wall = statistics.median(run["wall_seconds"] for run in measured)
        cpu = statistics.median(run["cpu_seconds"] for run in measured)
        # Files in progress at once, on average: each file's decode + VAD time over the wall.
        overlap = statistics.median(
            (run["decode_seconds"] + run["vad_seconds"]) / run["wall_seconds"] for run in measured
        )
        audio = measured[0]["audio_seconds"]
        rows.append(
            {
                "processes": processes,
                "wall_seconds": round(wall, 2),
                "realtime_factor": round(audio / wall, 1),
                "cpu_seconds": round(cpu, 2),
                "audio_per_cpu_second": round(audio / cpu, 1) if cpu > 0 else None,
                "files_in_progress": round(overlap, 2),
                "walls": [round(run["wall_seconds"], 2) for run in measured],
            }
        )
    one = next((row for row in rows if row["processes"] == 1), None)
    for row in rows:
        row["speedup_vs_1"] = round(one["wall_seconds"] / row["wall_seconds"], 2) if one else None
    return rows


def aligned(lines: list[tuple[str, ...]]) -> str:
    """Rows of cells as a table in columns, the first row its header."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip() for line in lines)


def format_rows(rows: list[dict[str, Any]]) -> str:
    header = (
        "VAD processes",
        "wall s",
        "x realtime",
        "vs 1 process",
        "CPU s",
        "audio s / CPU s",
        "files at once",
        "rounds (wall s)",
    )
    lines = [header]
    for row in rows:
        name = "0 (one thread)" if row["processes"] == 0 else str(row["processes"])
        lines.append(
            (
                name,
                f"{row['wall_seconds']:.1f}",
                f"{row['realtime_factor']:.0f}",
                f"{row['speedup_vs_1']:.2f}x" if row["speedup_vs_1"] else "-",
                f"{row['cpu_seconds']:.1f}",
                f"{row['audio_per_cpu_second']:.0f}" if row["audio_per_cpu_second"] else "-",
                f"{row['files_in_progress']:.2f}",
                " / ".join(f"{w:.1f}" for w in row["walls"]),
            )
        )
    return aligned(lines)


# --------------------------------------------------------------------------- the whole tool

# The tool's front end before issue 32 beside CPU workers, and the default.
# name -> (the checkout to run, None: this one; more CLI options)
TOOL_VARIANTS: dict[str, tuple[Path | None, list[str]]] = {
    "one thread (--frontend-processes 0)": (None, ["--frontend-processes", "0"]),
    "adaptive (default)": (None, []),
}


TIMING_KEYS = ("decode_seconds", "vad_seconds", "asr_compute_seconds", "cpu_seconds")


def ffmpeg_decode_seconds(path: Path) -> float:
    """ffmpeg's own decode of `path` to what the tool reads (16 kHz mono s16le, written in
    blocks as the tool has it written: audio.decode_audio), discarded."""
    command = [ffmpeg_executable(), "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(path)]
    command += ["-vn", "-sn", "-dn", "-f", "s16le", "-acodec", "pcm_s16le", "-ac", "1", "-ar", "16000"]
    command += ["-flush_packets", "0", "pipe:"]
    start = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _process_kind(process: psutil.Process, main: int) -> str:
    """Which part of the tool a process is: ffmpeg, the CLI's own process (the front end's
    threads, the scheduler, writing), the VAD processes (spawned) or the workers (the fork
    server and what it forked)."""
    if process.pid == main:
        return "main"
    command = " ".join(process.cmdline())
    if "ffmpeg" in process.name():
        return "ffmpeg"
    if "spawn_main" in command:
        return "vad"
    return "workers" if "forkserver" in command else "other"


def _run_sampled(command: list[str], env: dict[str, str] | None, cwd: Path | None) -> tuple[int, str, dict[str, float]]:
    """Run `command`; its exit code, stderr and CPU seconds by kind of process (_process_kind),
    sampled every SAMPLE_SECONDS over its process tree: each process as last seen (what a
    process spends after the last look before it ends, or a process shorter than a look, is
    missed: a few tenths of a second)."""
    last: dict[int, tuple[str, float]] = {}
    with tempfile.TemporaryFile() as err:
        # In the checkout measured: `python -m` puts the working directory first on sys.path.
        proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err)
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                for process in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        times = process.cpu_times()
                        kind = last[process.pid][0] if process.pid in last else _process_kind(process, proc.pid)
                        last[process.pid] = (kind, times.user + times.system)
            time.sleep(SAMPLE_SECONDS)
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    by_kind: dict[str, float] = {}
    for kind, seconds in last.values():
        by_kind[kind] = by_kind.get(kind, 0.0) + seconds
    return proc.returncode, stderr, by_kind


def tool_run(source: Path, model_dir: Path, out: Path, extra: list[str], root: Path | None = None) -> dict[str, Any]:
    """The CLI (of the checkout at `root`, else this one) on `source` with its own plan; wall
    and CPU seconds (every process it ran, by kind), the report's figures, the subtitles."""
    command = [*tool_command(root), "--model-dir", str(model_dir), "-o", str(out)]
    command += ["--no-progress", "--overwrite", "--formats", "srt", *extra, "--", str(source)]
    env = dict(os.environ, PYTHONPATH=str(root)) if root is not None else None
    start = time.perf_counter()
    returncode, stderr, cpu_by_kind = _run_sampled(command, env, root)
    wall = time.perf_counter() - start
    if returncode != 0:
        raise RuntimeError(f"the CLI failed ({returncode}): {stderr[-2000:]}")
    report = json.loads((out / "run-report.json").read_text())
    summary = report["summary"]
    workers = summary.get("workers", {})
    timings = [record.get("timings", {}) for record in report["files"]]
    return {
        "wall_seconds": wall,
        "cpu_seconds": sum(cpu_by_kind.values()),
        "cpu_by_kind": {kind: round(seconds, 2) for kind, seconds in sorted(cpu_by_kind.items())},
        # Segments of a file's stretches taken while the rest of it was still in the front end.
        "segments_streamed": summary.get("segments_streamed", 0),
        "audio_seconds": summary["audio_hours"] * 3600,
        "plan": f"{summary['plan']['workers']}x{summary['plan']['threads_per_worker']}",
        "worker_wait_share": workers.get("wait_share"),
        # The workers' recognition seconds, all workers together: over the worker count, the
        # least wall any front end leaves (a file's batches start once its VAD is done).
        "asr_compute_seconds": workers.get("compute_seconds", 0.0),
        # In the front-end thread: decoding (the VAD's early blocks run beside it) and the VAD after.
        "decode_seconds": sum(t.get("decode", 0.0) for t in timings),
        "vad_seconds": sum(t.get("vad", 0.0) for t in timings),
        "outputs": {p.name: p.read_bytes() for p in sorted(out.glob("*.srt"))},
    }


def compare_tool(
    source: Path,
    model_dir: Path,
    rounds: int,
    extra: list[str],
    with_ffmpeg: bool,
    variants: dict[str, tuple[Path | None, list[str]]],
) -> dict[str, Any]:
    """The variants (and ffmpeg's decode) on `source`, rounds alternating the order."""
    names = [*variants, "ffmpeg decode"] if with_ffmpeg else list(variants)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory(prefix="bench-frontend-tool-") as work:
        for round_index in range(rounds):
            for i, name in enumerate(names if round_index % 2 == 0 else names[::-1]):
                if name == "ffmpeg decode":
                    cpu = _children_cpu()
                    run = {"wall_seconds": ffmpeg_decode_seconds(source), "cpu_seconds": _children_cpu() - cpu}
                else:
                    out = Path(work) / f"r{round_index}-{i}"
                    root, options = variants[name]
                    run = tool_run(source, model_dir, out, [*options, *extra], root)
                runs[name].append(run)
                print(f"round {round_index + 1}, {name}: {run['wall_seconds']:.1f} s", flush=True)
    outputs = [run["outputs"] for name in variants for run in runs[name]]
    return {"runs": runs, "outputs_identical": all(o == outputs[0] for o in outputs) and bool(outputs[0])}


def tool_rows(measured: dict[str, Any]) -> list[dict[str, Any]]:
    runs = measured["runs"]
    medians = {name: statistics.median(run["wall_seconds"] for run in rounds) for name, rounds in runs.items()}
    old = medians[next(iter(runs))]  # the first variant: the reference
    rows = []
    for name, rounds in runs.items():
        row = {"front end": name, "wall_seconds": round(medians[name], 2)}
        row["walls"] = [round(run["wall_seconds"], 1) for run in rounds]
        row["cpu_seconds"] = round(statistics.median(run["cpu_seconds"] for run in rounds), 1)
        if "ffmpeg decode" in medians:
            row["x_ffmpeg_decode"] = round(medians[name] / medians["ffmpeg decode"], 2)
        if name != "ffmpeg decode":
            row["speedup_vs_first"] = round(old / medians[name], 2)
            row["segments_streamed"] = statistics.median(run["segments_streamed"] for run in rounds)
            row["plan"] = rounds[0]["plan"]
            kinds = sorted({kind for run in rounds for kind in run["cpu_by_kind"]})
            row["cpu_by_kind"] = {
                k: round(statistics.median(r["cpu_by_kind"].get(k, 0.0) for r in rounds), 1) for k in kinds
            }
            row["worker_wait_share"] = statistics.median(run["worker_wait_share"] or 0.0 for run in rounds)
            for key in TIMING_KEYS:
                row[key] = round(statistics.median(run[key] for run in rounds), 1)
        rows.append(row)
    return rows


CPU_KINDS = ("main", "ffmpeg", "vad", "workers", "other")


def format_cpu_rows(rows: list[dict[str, Any]]) -> str:
    """CPU seconds by kind of process (_process_kind), the runs' medians."""
    lines: list[tuple[str, ...]] = [("CPU s by process", *CPU_KINDS, "streamed segments")]
    for row in rows:
        if "cpu_by_kind" in row:
            kinds = row["cpu_by_kind"]
            cells = (f"{kinds.get(kind, 0.0):.1f}" for kind in CPU_KINDS)
            lines.append((row["front end"], *cells, f"{row['segments_streamed']:g}"))
    return aligned(lines)


def format_tool_rows(rows: list[dict[str, Any]]) -> str:
    columns = "wall s, x ffmpeg decode, vs first, workers, decode s, VAD s after, ASR s, CPU s, rounds (wall s)"
    lines: list[tuple[str, ...]] = [("", *columns.split(", "))]
    for row in rows:
        ratio = row.get("x_ffmpeg_decode")
        lines.append(
            (
                row["front end"],
                f"{row['wall_seconds']:.1f}",
                f"{ratio:.2f}x" if ratio is not None else "-",
                f"{row['speedup_vs_first']:.2f}x" if "speedup_vs_first" in row else "-",
                row.get("plan", "-"),
                *(f"{row[key]:.1f}" if key in row else "-" for key in TIMING_KEYS),
                " / ".join(f"{w:.1f}" for w in row["walls"]),
            )
        )
    return aligned(lines)


def variants(compare_with: Path | None) -> dict[str, tuple[Path | None, list[str]]]:
    """TOOL_VARIANTS; with another checkout, its default against this one's."""
    if compare_with is None:
        return TOOL_VARIANTS
    return {f"{compare_with.name} (default)": (compare_with.resolve(), []), "this checkout (default)": (None, [])}


def whole_tool(args: argparse.Namespace) -> dict[str, Any]:
    """(1) the long video with the tiny fixture against ffmpeg; (2) the AED-L folder."""
    report: dict[str, Any] = {}
    if args.long_minutes > 0:
        (video,) = build_long_folder(args.cache_dir, 1, args.long_minutes)
        print(f"(1) {video.name}: {args.long_minutes:g} min, the trained tiny fixture", flush=True)
        long = compare_tool(video, TINY_MODEL, args.rounds, [], True, variants(args.compare_with))
        report["long_video"] = {"minutes": args.long_minutes, "rows": tool_rows(long)}
        report["long_video"]["outputs_identical"] = long["outputs_identical"]
    if args.folder_files > 0:
        folder = args.cache_dir / f"frontend-tool-folder-{args.folder_files}"
        if not folder.is_dir():
            build_folder(folder, args.folder_files * 1.5, args.folder_files)
        model = ensure_random_model(args.cache_dir / args.preset, args.preset)
        print(f"(2) {args.folder_files} files, a random {args.preset} checkpoint", flush=True)
        cap = ["--max-tokens-per-second", "4.5"]  # a random model never says <eos>: speech's rate
        extra = [*cap, *args.tool_args.split()]
        measured = compare_tool(folder, model, args.rounds, extra, False, variants(args.compare_with))
        report["folder"] = {"files": args.folder_files, "preset": args.preset, "rows": tool_rows(measured)}
        report["folder"]["outputs_identical"] = measured["outputs_identical"]
    for key, title in (("long_video", "(1) long video, tiny fixture"), ("folder", f"(2) folder, {args.preset}")):
        if key in report:
            print(f"\n{title}; outputs identical: {report[key]['outputs_identical']}")
            print(format_tool_rows(report[key]["rows"]))
            print(format_cpu_rows(report[key]["rows"]))
    return report


# --------------------------------------------------------------------------- the VAD's graphs


def vad_graphs(path: Path, rounds: int) -> dict[str, Any]:
    """Silero's own graph against the rebuilt one on `path`'s audio (see the module doc)."""
    from fireredasr_fast.audio import decode_audio
    from fireredasr_fast.vad import WINDOW_SAMPLES, SileroVad, segment_speech

    samples = decode_audio(path)
    windows = -(-samples.size // WINDOW_SAMPLES)
    graphs, load = {}, {}
    SileroVad(fast=False)  # onnxruntime's own start, out of the first load timed
    for name, fast in (("silero's graph", False), ("large products", True)):
        start = time.process_time()
        graphs[name] = SileroVad(fast=fast)
        load[name] = time.process_time() - start
        if graphs[name]._model.fast != fast:
            raise RuntimeError("the rebuilt graph was refused (see the warning)")
    cpu: dict[str, list[float]] = {name: [] for name in graphs}
    probs: dict[str, Any] = {}
    for round_index in range(rounds):
        for name in list(graphs) if round_index % 2 == 0 else list(graphs)[::-1]:
            start = time.process_time()
            probs[name] = graphs[name].probabilities(samples)
            cpu[name].append(time.process_time() - start)
            print(f"round {round_index + 1}, {name}: {cpu[name][-1]:.2f} CPU s", flush=True)
    duration = samples.size / SAMPLE_RATE
    segments = [segment_speech(p, duration) for p in probs.values()]
    rows = []
    for name in graphs:
        median = statistics.median(cpu[name])
        rows.append(
            {
                "graph": name,
                "cpu_seconds": round(median, 3),
                "cpu_ms_per_512_windows": round(median / windows * 512 * 1000, 2),
                "load_cpu_seconds": round(load[name], 3),
                "rounds_cpu_seconds": [round(c, 2) for c in cpu[name]],
            }
        )
    old, new = probs.values()
    return {
        "audio_seconds": round(duration, 1),
        "windows": windows,
        "rows": rows,
        "cpu_ratio": round(rows[0]["cpu_seconds"] / rows[1]["cpu_seconds"], 2),
        "max_probability_difference": float(np.abs(old - new).max()),
        "segments": len(segments[0]),
        "segments_identical": segments[0] == segments[1],
    }


def format_vad_rows(report: dict[str, Any]) -> str:
    lines: list[tuple[str, ...]] = [("graph", "CPU s", "CPU ms / 512 windows", "load CPU s", "rounds (CPU s)")]
    for row in report["rows"]:
        rounds = " / ".join(f"{c:.2f}" for c in row["rounds_cpu_seconds"])
        cells = (f"{row['cpu_seconds']:.2f}", f"{row['cpu_ms_per_512_windows']:.1f}", f"{row['load_cpu_seconds']:.3f}")
        lines.append((row["graph"], *cells, rounds))
    return aligned(lines)


def run_vad_graphs(args: argparse.Namespace, argv: list[str] | None) -> int:
    load_before = os.getloadavg()
    (video,) = build_long_folder(args.cache_dir, 1, args.minutes)
    report = report_header("frontend --vad-graphs", 1, "silero VAD sequence model")
    report.update(vad_graphs(video, args.rounds))
    report["command"] = "python -m benchmarks frontend " + " ".join(argv or [])
    report["load_average"] = {"before": load_before, "after": os.getloadavg()}
    print(f"\n{video.name}: {report['audio_seconds']:g} s of audio, {report['windows']} windows, one thread")
    print(format_vad_rows(report))
    difference = report["max_probability_difference"]
    print(f"CPU ratio {report['cpu_ratio']:.2f}x; largest probability difference {difference:.2g}")
    print(f"segments identical: {report['segments_identical']} ({report['segments']} segments)")
    print(f"load average (1 min) before / after: {load_before[0]:.1f} / {os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks frontend", description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=4, help="long videos in the folder (default: %(default)s)")
    parser.add_argument("--minutes", type=float, default=20.0, help="length of each (default: %(default)s)")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1, help="up to this many (default: cores)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds (default: %(default)s)")
    parser.add_argument("--skip-thread", action="store_true", help="leave out the in-thread front end (0 processes)")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--whole-tool", action="store_true", help="the CLI beside CPU workers (see above)")
    parser.add_argument("--long-minutes", type=float, default=120.0, help="--whole-tool (1): 0 leaves it out")
    parser.add_argument("--folder-files", type=int, default=3, help="--whole-tool (2): 0 leaves it out")
    parser.add_argument("--preset", default="aed-l", choices=["tiny", "small", "aed-l"], help="--whole-tool (2)")
    parser.add_argument("--tool-args", default="", help="--whole-tool (2): more CLI options, e.g. '--beam-size 1'")
    parser.add_argument("--compare-with", type=Path, help="--whole-tool: another checkout's default against this one's")
    parser.add_argument("--vad-graphs", action="store_true", help="the VAD alone: silero's graph against ours")
    args = parser.parse_args(argv)
    if args.vad_graphs:
        return run_vad_graphs(args, argv)
    if args.whole_tool:
        load_before = os.getloadavg()
        report = report_header("frontend --whole-tool", os.cpu_count() or 1, "tiny fixture; random " + args.preset)
        report.update(whole_tool(args))
        report["command"] = "python -m benchmarks frontend " + " ".join(argv or [])
        report["load_average"] = {"before": load_before, "after": os.getloadavg()}
        print(f"load average (1 min) before / after: {load_before[0]:.1f} / {os.getloadavg()[0]:.1f}")
        if args.json:
            args.json.write_text(json.dumps(report, indent=1) + "\n")
        return 0

    paths = build_long_folder(args.cache_dir, args.files, args.minutes)
    counts = ([] if args.skip_thread else [0]) + list(range(1, max(1, args.processes) + 1))
    load_before = os.getloadavg()
    runs: dict[int, list[dict[str, Any]]] = {count: [] for count in counts}
    for round_index in range(args.rounds):
        order = counts if round_index % 2 == 0 else counts[::-1]
        for count in order:
            runs[count].append(measure(paths, count))
            print(f"round {round_index + 1}, {count} process(es): {runs[count][-1]['wall_seconds']:.1f} s", flush=True)
    load_after = os.getloadavg()
    rows = summarise(runs)
    audio = runs[counts[0]][0]["audio_seconds"]
    one = next((row for row in rows if row["processes"] == 1), None)
    projected = PROJECTED_CORES * one["audio_per_cpu_second"] if one and one["audio_per_cpu_second"] else None
    print(f"\n{args.files} files x {args.minutes:g} min ({audio / 3600:.2f} h of audio), {args.rounds} round(s)")
    print(format_rows(rows))
    if projected:
        print(
            f"\nprojected on {PROJECTED_CORES} cores from 1 process's audio per CPU second: {projected:.0f}x realtime"
        )
    print(f"load average (1 min) before / after: {load_before[0]:.1f} / {load_after[0]:.1f} on {os.cpu_count()} cores")
    if args.json:
        report = report_header("frontend", os.cpu_count() or 1, "silero VAD (no ASR model)")
        report.update(
            {
                "command": "python -m benchmarks frontend " + " ".join(argv or []),
                "files": args.files,
                "minutes_per_file": args.minutes,
                "audio_seconds": round(audio, 1),
                "rounds": args.rounds,
                "rows": rows,
                "runs": runs,
                f"projected_{PROJECTED_CORES}_cores_realtime_factor": round(projected, 0) if projected else None,
                "load_average": {"before": load_before, "after": load_after},
            }
        )
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0
