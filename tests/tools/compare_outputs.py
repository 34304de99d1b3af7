"""Run the CLI of two checkouts on the same media and compare what they write.

Used to show that a refactor changes no output: SRT/VTT/ASS/TXT/TSV must be byte-identical,
JSON equal once the wall-clock timings are dropped.

    python tests/tools/compare_outputs.py --base 6adf75f [--head REV] [--media samples] [--keep DIR]

The base revision (and --head, else this checkout) is checked out into a temporary git
worktree; both runs use this
interpreter (the base's package first on PYTHONPATH), the Whisper demo engine and the trained
tiny FireRedASR fixture (tests/fixtures/tiny_model), one in-process worker, one thread, one
media file per run: the Whisper engine packs short pieces of a batch into shared 30 s windows,
so its text depends on which segments share a batch, and with several files that depends on
how far the preload has got.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from fireredasr_fast.audio import is_media_file

ROOT = Path(__file__).resolve().parents[2]
FORMATS = "srt,vtt,ass,txt,json,tsv"
ENGINES = {
    "whisper": ["--engine", "whisper"],
    "firered": ["--engine", "firered", "--model-dir", str(ROOT / "tests" / "fixtures" / "tiny_model")],
}


def run_cli(checkout: Path, media: Path, out: Path, engine_args: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    files = sorted(p for p in media.rglob("*") if is_media_file(p)) if media.is_dir() else [media]
    for path in files:
        command = [sys.executable, str(checkout / "long_video_transcribe.py"), *engine_args, "--formats", FORMATS]
        command += ["--workers", "0", "--threads-per-worker", "1", "--no-progress", "-o", str(out), str(path)]
        subprocess.run(command, env=env, check=True, capture_output=True, text=True)


def without_timings(value: object) -> object:
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k != "timings"}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def output_files(folder: Path) -> list[Path]:
    """The outputs under `folder`, relative to it: not the run report, the journal or the
    recognition stores (.fireredasr-fast/), which are the tool's own."""
    found = (p.relative_to(folder) for p in folder.rglob("*") if p.is_file() and p.name != "run-report.json")
    return sorted(p for p in found if not any(part.startswith(".") for part in p.parts))


def compare(base: Path, head: Path) -> list[str]:
    """Differences between two output folders (empty when they match)."""
    problems = []
    base_files, head_files = output_files(base), output_files(head)
    if base_files != head_files:
        problems.append(f"different files: {sorted(set(base_files) ^ set(head_files))}")
    for rel in sorted(set(base_files) & set(head_files)):
        a, b = (base / rel).read_bytes(), (head / rel).read_bytes()
        if rel.suffix == ".json":
            if without_timings(json.loads(a)) != without_timings(json.loads(b)):
                problems.append(f"{rel}: JSON differs beyond timings")
        elif a != b:
            problems.append(f"{rel}: bytes differ")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="git revision to compare against (e.g. the previous main)")
    parser.add_argument("--head", help="git revision to compare (default: this checkout as it is)")
    parser.add_argument("--media", type=Path, default=ROOT / "samples", help="media file or folder (default: samples/)")
    parser.add_argument("--keep", type=Path, help="write both output folders here instead of a temporary folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        base_tree = Path(tmp) / "base-tree"
        trees = {"base": (base_tree, args.base)}
        head_tree = ROOT
        if args.head:
            head_tree = Path(tmp) / "head-tree"
            trees["head"] = (head_tree, args.head)
        for tree, revision in trees.values():
            add = ["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(tree), revision]
            subprocess.run(add, check=True)
        try:
            failures = 0
            for name, engine_args in ENGINES.items():
                outs = {}
                for label, checkout in (("base", base_tree), ("head", head_tree)):
                    outs[label] = work / name / label
                    run_cli(checkout, args.media.resolve(), outs[label], engine_args)
                problems = compare(outs["base"], outs["head"])
                count = len(output_files(outs["head"]))
                print(f"{name}: {count} files compared, {'identical' if not problems else 'DIFFERENT'}")
                for problem in problems:
                    print(f"  {problem}")
                failures += bool(problems)
        finally:
            for tree, _ in trees.values():
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
