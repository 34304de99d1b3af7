"""`python -m benchmarks overhead`: the engine's CPU per second of speech on a long file (issue 32).

The first --minutes of the frontend benchmark's long video (common.build_long_folder: real
speech, noise, silence and a tone) go through the VAD and are cut into batches as the runner
cuts them (each stretch of the file through batching.make_batches with the default
TranscribeOptions), once; the batches are cached in --cache-dir. Then each checkout (this one
and, with --compare-with ROOT, that one: a checkout of another commit, e.g. `git worktree add
ROOT main`) recognises them in a child process of its own (PYTHONPATH and working directory at
the checkout) with the default FireRedEngine, the way a worker does, on one thread (torch,
OpenMP, MKL and numba), rounds alternating the order. A child loads the model, runs one batch
to warm up, then passes over all the batches --repeats times and reports its best pass's CPU
seconds (time.process_time: user + system, this process). Columns: CPU seconds per pass
(the best round, which other jobs on a shared machine disturb least, and the median of the
rounds' best passes), CPU milliseconds per second of speech (of the best round), seconds of
speech per CPU second (x realtime per core), the ratio to the first row, and a digest of the hypotheses
(token ids, token confidences, token times); below the table, how many hypotheses have token ids
other than the first row's (confidences and times may move by ~1e-6 between two checkouts that
sum in other orders, the tokens must not: the exit status is 1 when any differ). With
--profile, this checkout's child also prints a cProfile of one more pass (top functions by
own time).

    python -m benchmarks overhead --minutes 20 --rounds 3 --compare-with ROOT
    python -m benchmarks overhead --minutes 20 --rounds 3 --compare-with ROOT --preset small
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from fireredasr_fast.batching import make_batches
from fireredasr_fast.results import SAMPLE_RATE
from fireredasr_fast.transcribe import TranscribeOptions, prepare_file
from fireredasr_fast.vad import SpeechSegmenter

from .common import DEFAULT_CACHE, ROOT, build_long_folder, report_header, resolve_model

SEGMENTS_VERSION = 1  # bump when the way the batches are cut changes: the cache is keyed by it
ONE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")}

# Run by each child with `python -c` in its own checkout: only the engine API that every
# checkout compared has (load_model, FireRedEngine, FireRedOptions), nothing of benchmarks/.
CHILD = """
import hashlib, json, sys, time
import numpy as np, torch
torch.set_num_threads(1)
from fireredasr_fast.engines.firered.engine import FireRedEngine, load_model
from fireredasr_fast.engines.firered.options import FireRedOptions
segments, model_dir, repeats, profile = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
with np.load(segments) as data:
    ends = data["batch_ends"].tolist()
    waves = [data[f"s{i}"].astype(np.float32) / 32768.0 for i in range(ends[-1])]
batches = [waves[a:b] for a, b in zip([0] + ends[:-1], ends)]
options = FireRedOptions()
engine = FireRedEngine(load_model(model_dir, options), options)
engine.transcribe(batches[-1][:1])
def one_pass():
    return [(h.token_ids, h.token_confidences, h.token_times) for b in batches for h in engine.transcribe(b)]
cpu = []
for _ in range(repeats):
    start = time.process_time()
    found = one_pass()
    cpu.append(time.process_time() - start)
digest = hashlib.sha1(repr(found).encode()).hexdigest()[:16]
print(json.dumps({"cpu_seconds": cpu, "digest": digest, "token_ids": [list(ids) for ids, _, _ in found]}))
if profile:
    import cProfile, io, pstats
    profiler = cProfile.Profile()
    profiler.runcall(one_pass)
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(25)
    print(text.getvalue(), file=sys.stderr)
"""


def cut_batches(cache_dir: Path, minutes: float) -> Path:
    """The long video's first `minutes`: its segments, batched as the runner batches them,
    saved once (int16 samples, s0, s1, ... in batch order; batch_ends)."""
    path = cache_dir / f"overhead-v{SEGMENTS_VERSION}-{minutes:g}min.npz"
    if path.is_file():
        return path
    (video,) = build_long_folder(cache_dir, 1, minutes)
    options = TranscribeOptions()
    prepared = prepare_file(video, SpeechSegmenter(options.vad))
    samples: list[np.ndarray] = []
    ends: list[int] = []
    for jobs in prepared.stretch_jobs(0):
        for batch in make_batches(jobs, options.batch_seconds, options.max_batch_size):
            samples += [job.samples for job in batch.jobs]
            ends.append(len(samples))
    partial = path.with_suffix(".partial.npz")
    np.savez(partial, batch_ends=np.array(ends), **{f"s{i}": s for i, s in enumerate(samples)})
    partial.replace(path)
    return path


def child_run(root: Path, segments: Path, model_dir: Path, repeats: int, profile: bool) -> dict[str, Any]:
    """One child in the checkout at `root`: its passes' CPU seconds and the digest (and the
    profile's text when asked)."""
    env = dict(os.environ, PYTHONPATH=str(root), **ONE_THREAD)
    command = [sys.executable, "-c", CHILD, str(segments), str(model_dir), str(repeats), "1" if profile else "0"]
    done = subprocess.run(command, env=env, cwd=root, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the child in {root} failed ({done.returncode}): {done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["profile"] = done.stderr if profile else ""
    return result


def compare(roots: dict[str, Path], segments: Path, model_dir: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every checkout's best pass per round, rounds alternating the order."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in roots}
    order = list(roots)
    for round_index in range(args.rounds):
        for name in order if round_index % 2 == 0 else order[::-1]:
            profile = args.profile and round_index == 0 and roots[name] == ROOT
            runs[name].append(child_run(roots[name], segments, model_dir, args.repeats, profile))
            print(f"  round {round_index + 1} {name}: {min(runs[name][-1]['cpu_seconds']):.2f} CPU s", flush=True)
    with np.load(segments) as data:
        speech = sum(data[f"s{i}"].size for i in range(int(data["batch_ends"][-1]))) / SAMPLE_RATE
    rows = []
    for name, results in runs.items():
        best = [min(r["cpu_seconds"]) for r in results]
        # The best round: on a shared machine other jobs only ever add to a round's CPU time.
        cpu = min(best)
        rows.append(
            {
                "checkout": name,
                "root": str(roots[name]),
                "rounds_cpu_seconds": [round(c, 3) for c in best],
                "cpu_seconds": round(cpu, 3),
                "median_cpu_seconds": round(statistics.median(best), 3),
                "speech_seconds": round(speech, 1),
                "cpu_ms_per_speech_second": round(1000 * cpu / speech, 3),
                "realtime_per_core": round(speech / cpu, 1),
                "digests": sorted({r["digest"] for r in results}),
                "token_ids": results[0]["token_ids"],
                "profile": next((r["profile"] for r in results if r["profile"]), ""),
            }
        )
    for row in rows:
        row["vs_first"] = round(rows[0]["cpu_seconds"] / row["cpu_seconds"], 3)
        row["tokens_differing"] = token_differences(rows[0]["token_ids"], row["token_ids"])
    return rows


def token_differences(first: list[list[int]], other: list[list[int]]) -> int:
    """How many hypotheses of `other` have token ids other than `first`'s (the confidences and
    times in the digest may move by ~1e-6 between two ways of summing; the tokens must not)."""
    if len(first) != len(other):
        return max(len(first), len(other))
    return sum(a != b for a, b in zip(first, other, strict=True))


def table(rows: list[dict[str, Any]]) -> str:
    head = ("checkout", "CPU s (best)", "median", "per round", "CPU ms / speech s", "x realtime", "vs 1st", "digest")
    lines = [head]
    for row in rows:
        rounds = " / ".join(f"{c:.2f}" for c in row["rounds_cpu_seconds"])
        cpu = (f"{row['cpu_seconds']:.2f}", f"{row['median_cpu_seconds']:.2f}")
        cells = (*cpu, rounds, f"{row['cpu_ms_per_speech_second']:.2f}")
        ratio = (f"{row['realtime_per_core']:.0f}", f"{row['vs_first']:.2f}x", ",".join(row["digests"]))
        lines.append((row["checkout"], *cells, *ratio))
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) for line in lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks overhead", description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="of the long video (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=2, help="passes per child, the best kept (default: %(default)s)")
    parser.add_argument("--preset", choices=["tiny", "small", "aed-l"], help="a random checkpoint, not the fixture")
    parser.add_argument("--compare-with", type=Path, help="the checkout to compare against (first row)")
    parser.add_argument("--profile", action="store_true", help="this checkout's cProfile of one more pass")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    model_dir, model = resolve_model(None, args.preset, args.cache_dir)
    segments = cut_batches(args.cache_dir, args.minutes)
    roots = {"this checkout": ROOT}
    if args.compare_with is not None:
        roots = {args.compare_with.name: args.compare_with.resolve(), **roots}
    print(f"{args.minutes:g} min of the long video, {model}, one thread, {args.rounds} round(s)", flush=True)
    rows = compare(roots, segments, model_dir, args)
    print(table(rows))
    for row in rows:
        if row["profile"]:
            print(f"\ncProfile of one pass ({row['checkout']}):\n{row['profile']}")
    same = len({digest for row in rows for digest in row["digests"]}) == 1
    print(f"hypotheses identical in every run (token ids, confidences, times): {same}")
    hypotheses = len(rows[0]["token_ids"])
    differing = {row["checkout"]: row["tokens_differing"] for row in rows[1:]}
    print(f"hypotheses: {hypotheses}; with token ids other than the first row's: {differing or 0}")
    print(f"load average (1 min) before / after: {load_before[0]:.1f} / {os.getloadavg()[0]:.1f}")
    if args.json:
        report = report_header("overhead", 1, model)
        report.update(
            {
                "command": "python -m benchmarks overhead " + " ".join(argv or sys.argv[1:]),
                "minutes": args.minutes,
                "rows": rows,
                "identical": same,
                "hypotheses": hypotheses,
                "tokens_differing": differing,
                "load_average": {"before": load_before, "after": os.getloadavg()},
            }
        )
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0 if not any(differing.values()) else 1
