"""How long the first Ctrl-C takes to stop a run: seconds from SIGINT (to the whole process
group, as a terminal sends it) to the CLI's exit, on a few multi-minute files.

`--compare-with ROOT` runs the same command from another checkout of the package (e.g. the
main branch before a change) in alternating rounds, side by side in one run.

    python -m benchmarks interrupt --preset small --compare-with /work/main
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import DEFAULT_CACHE, SAMPLES, ffmpeg, report_header, resolve_model

JOURNAL = ".fireredasr-fast-journal.json"


def make_files(folder: Path, minutes: float, count: int) -> list[Path]:
    """`count` audio files of `minutes` each: the English sample looped (speech throughout)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"talk_{i + 1}.m4a"
        if not path.is_file():
            source = str(SAMPLES / "two_cities.mp4")
            ffmpeg("-stream_loop", "-1", "-i", source, "-t", str(minutes * 60), "-vn", "-c:a", "aac", str(path))
        paths.append(path)
    return paths


def stop_once(root: Path, model: Path, folder: Path, out: Path, after: float, workers: int) -> dict[str, Any]:
    """One run from `root`'s package, interrupted `after` seconds from its start (the workers
    then busy in their batches)."""
    cmd = [
        sys.executable, "-m", "fireredasr_fast.cli", "--model-dir", str(model), "--workers", str(workers),
        "--threads-per-worker", "1", "--no-progress", "-o", str(out), "--", str(folder),
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS="1")
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(
            cmd, env=env, cwd=root, start_new_session=True, stdout=subprocess.DEVNULL, stderr=stderr
        )
        time.sleep(after)
        sent = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        try:
            code = proc.wait(timeout=1800)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            code = proc.wait()
        seconds = time.monotonic() - sent
        stderr.seek(0)
        text = stderr.read().decode("utf-8", "replace")
    journal = out / JOURNAL
    statuses = [r["status"] for r in json.loads(journal.read_text())["files"]] if journal.is_file() else []
    return {
        "stop_seconds": round(seconds, 2),
        "exit_code": code,
        "traceback": "Traceback" in text,
        "statuses": {s: statuses.count(s) for s in sorted(set(statuses))},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks interrupt", description=__doc__)
    parser.add_argument("--minutes", type=float, default=5.0, help="length of each file (default: %(default)s)")
    parser.add_argument("--files", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--after", type=float, default=40.0, help="seconds from start to the Ctrl-C")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--model-dir", type=Path)
    parser.add_argument("--preset", choices=["tiny", "small", "aed-l"], help="a random checkpoint of this shape")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--compare-with", type=Path, help="another checkout of the package to time the same way")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    model, described = resolve_model(args.model_dir, args.preset, args.cache_dir)
    roots = {"this": Path(__file__).resolve().parents[1]}
    if args.compare_with:
        roots["compare"] = args.compare_with.resolve()
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in roots}
    with tempfile.TemporaryDirectory(prefix="bench-interrupt-") as tmp:
        folder = Path(tmp) / "media"
        make_files(folder, args.minutes, args.files)
        for round_ in range(args.rounds):
            for name, root in roots.items():
                out = Path(tmp) / f"out-{name}-{round_}"
                results[name].append(stop_once(root, model, folder, out, args.after, args.workers))

    print(f"Ctrl-C to exit, {args.files} x {args.minutes:g} min, {args.workers} workers, model: {described}")
    print(f"{'code':8s} {'root':40s} {'stop s (median)':>16s}  exit  traceback  statuses")
    for name, root in roots.items():
        runs = results[name]
        median = statistics.median(r["stop_seconds"] for r in runs)
        last = runs[-1]
        code, traceback = last["exit_code"], last["traceback"]
        print(f"{name:8s} {root!s:40s} {median:16.2f}  {code:4d}  {traceback!s:9s}  {last['statuses']}")
    if len(roots) == 2:
        this, other = (statistics.median(r["stop_seconds"] for r in results[n]) for n in roots)
        print(f"ratio compare / this: {other / this:.1f}x")
    if args.json:
        header = report_header("interrupt", args.workers, described)
        data = {**header, "roots": {k: str(v) for k, v in roots.items()}, "runs": results}
        args.json.write_text(json.dumps(data, indent=1))
    return 0
