"""`python -m benchmarks resume`: what resuming inside a file and re-rendering save.

One long programme (the two samples, English 44 s and Mandarin 13 s, looped to --minutes) is
transcribed by the CLI three ways, side by side in one run:

- full: a fresh output folder, every segment recognised;
- resume: the folder as a run killed at --done of the file leaves it (no outputs, the partial
  store holding the segments before that point, runner/store.py), then the CLI again;
- re-render: the full run's folder, the CLI again with other subtitle settings (formats and
  cue options): written from the stored recognition, nothing recognised.

    python -m benchmarks resume --minutes 15 --json resume.json

Columns: the CLI's wall seconds (start-up included), the run's own wall (from run-report.json),
segments recognised and reused, the seconds saved against the full run, and the file's decode,
VAD and recognition seconds (worker compute; the re-rendered file's are the stored ones, not
spent). The resumed run's subtitles are checked byte for byte against the full run's. With the
tiny model, recognition is cheap and decode + VAD (which a resumed run does again) weigh more
than with a real checkpoint: pass --model-dir for those figures.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np

from fireredasr_fast.audio import decode_audio
from fireredasr_fast.runner.store import STORE_DIR, FileStore, Recognition

from .common import TINY_MODEL, cpu_name, ffmpeg, samples_track

NAME = "programme.m4a"
TEXTS = (".srt", ".vtt", ".txt")


def build_programme(folder: Path, minutes: float) -> Path:
    """The samples in turn, looped to `minutes`, as AAC (a downloaded programme's audio)."""
    loop = decode_audio(samples_track(folder / "pair.wav"))
    count = round(minutes * 60 * 16000)
    track = np.tile(loop, count // loop.size + 1)[:count]
    wav = folder / "programme.wav"
    with wave.open(str(wav), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(track.astype("<i2").tobytes())
    path = folder / NAME
    ffmpeg("-i", str(wav), "-c:a", "aac", "-b:a", "64k", str(path))
    return path


def run_cli(args: argparse.Namespace, out: Path, media: Path, *extra: str) -> dict[str, Any]:
    command = [sys.executable, "-m", "fireredasr_fast.cli", "--model-dir", str(args.model_dir), "--no-progress"]
    command += ["--workers", str(args.workers), "--threads-per-worker", str(args.threads_per_worker)]
    command += [*extra, "-o", str(out), str(media)]
    t0 = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    wall = time.perf_counter() - t0
    report = json.loads((out / "run-report.json").read_text(encoding="utf-8"))
    summary, timings = report["summary"], report["files"][0]["timings"]
    return {
        "cli_seconds": round(wall, 2),
        "run_seconds": summary["wall_seconds"],
        "recognised": summary["segments_recognised"],
        "reused": summary["segments_reused"],
        # The file's own stages; a re-rendered file's decode, VAD and ASR are the stored ones.
        "stages": {k: timings.get(k, 0.0) for k in ("decode", "vad", "asr", "cues", "write")},
    }


def interrupt_at(full: Path, target: Path, share: float) -> int:
    """`target`: the full run's folder as a run killed after `share` of the file leaves it.
    Returns the segments kept."""
    shutil.copytree(full, target)
    stored_path = target / STORE_DIR / f"{NAME}.recognition.json.gz"
    stored = json.loads(gzip.decompress(stored_path.read_bytes()))
    recognition = Recognition.from_dict(stored["file"])
    for path in target.iterdir():
        if path.is_file() and not path.name.startswith("."):
            path.unlink()  # outputs and report: the killed run had written none of this file's
    stored_path.unlink()
    store = FileStore(target, NAME, stored["recognition"], tuple(stored["source"]))
    store.resume([])  # the header
    cut = share * recognition.duration
    pairs = enumerate(zip(recognition.segments, recognition.hypotheses, strict=True))
    kept = [(i, segment, hyp) for i, (segment, hyp) in pairs if segment.end <= cut]
    store.append(kept)
    return len(kept)


def texts(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in out.iterdir() if p.suffix in TEXTS}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks resume", description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=15.0, help="length of the programme (default: %(default)s)")
    p.add_argument("--done", type=float, default=0.9, help="share of the file done when killed (default: %(default)s)")
    p.add_argument("--model-dir", type=Path, default=TINY_MODEL, help="default: the tiny trained model")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads-per-worker", type=int, default=1)
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-resume-") as tmp:
        work = Path(tmp)
        media = build_programme(work, args.minutes)
        rows = {"full": run_cli(args, work / "full", media)}
        kept = interrupt_at(work / "full", work / "resume", args.done)
        rows["resume"] = run_cli(args, work / "resume", media)
        identical = texts(work / "resume") == texts(work / "full")
        rows["re-render"] = run_cli(args, work / "full", media, "--formats", "srt,ass,json", "--max-line-width", "12")
    full = rows["full"]["cli_seconds"]
    print(f"{args.minutes:.0f} min programme, {kept} segments stored before the kill at {args.done:.0%}; {cpu_name()}")
    print(
        f"{'run':10s} {'CLI s':>8s} {'run s':>8s} {'recognised':>10s} {'reused':>7s} {'saved s':>8s} {'of full':>8s}"
        f" {'decode':>7s} {'VAD':>7s} {'ASR':>7s}"
    )
    for name, row in rows.items():
        saved = full - row["cli_seconds"]
        stages = row["stages"]
        print(
            f"{name:10s} {row['cli_seconds']:8.1f} {row['run_seconds']:8.1f} {row['recognised']:10d} "
            f"{row['reused']:7d} {saved:8.1f} {row['cli_seconds'] / full:8.1%}"
            f" {stages['decode']:7.1f} {stages['vad']:7.1f} {stages['asr']:7.1f}"
        )
    print(f"resumed subtitles identical to the full run's: {identical}")
    if args.json:
        report = {"minutes": args.minutes, "done": args.done, "kept": kept, "identical": identical, "runs": rows}
        report["machine"] = cpu_name()
        args.json.write_text(json.dumps(report, indent=1))
    return 0 if identical else 1
