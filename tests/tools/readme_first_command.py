"""Run the README's first command on samples/ and write what it printed, and its figures, into
the README, so they come from a real run and cannot drift.

    python tests/tools/readme_first_command.py            # run, then rewrite the README's block
    python tests/tools/readme_first_command.py --check    # run, then compare (exit 1 if it differs)

The command is the fenced block after `<!-- first-command -->` (the part after the pip install),
run as `python -m fireredasr_fast.cli ...` with this interpreter in a temporary folder that holds
`samples/` (a link), exactly as tests/test_first_command.py runs it. The block between
`<!-- first-command-output -->` and `<!-- /first-command-output -->` is then written from that
run: the plan line, the table and summary it printed, the text of each sample with its CER
(Mandarin, in characters) or WER (English, in words) against samples/transcripts.json, and the
run's wall and CPU time with the machine and its load. --check compares everything but the
times (wall, RTF, the timing sentence) and the plan line, which differ between runs and machines.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shlex
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SAMPLES = ROOT / "samples"
COMMAND_MARK = "<!-- first-command -->"
BEGIN, END = "<!-- first-command-output -->", "<!-- /first-command-output -->"
# What tests/test_first_command.py holds the samples to.
MAX_CER_ZH = 0.10
MAX_WER_EN = 0.05
ZH, EN = "aishell_zh", "two_cities"


def first_command(readme: str) -> list[str]:
    """The tool's part of the fenced block after the first-command mark (after the pip
    install), as arguments without the program name."""
    block = readme.split(COMMAND_MARK, 1)[1].split("```", 2)[1]
    command = block.strip().split("&&")[-1].strip()
    args = shlex.split(command)
    if args[0] != "fireredasr-fast":
        raise ValueError(f"the first command does not run fireredasr-fast: {command}")
    return args[1:]


def chinese_chars(text: str) -> str:
    return "".join(re.findall(r"[\u3400-\u9fff]", text))


def english_words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


def error_rates(out: Path) -> tuple[float, float]:
    """(CER of the Mandarin sample, WER of the English one) in `out`, against the transcripts."""
    import jiwer

    references = json.loads((SAMPLES / "transcripts.json").read_text(encoding="utf-8"))
    zh = (out / f"{ZH}.txt").read_text(encoding="utf-8")
    en = (out / f"{EN}.txt").read_text(encoding="utf-8")
    cer = jiwer.cer(chinese_chars(references[f"{ZH}.mkv"]), chinese_chars(zh))
    wer = jiwer.wer(english_words(references[f"{EN}.mp4"]), english_words(en))
    return cer, wer


@dataclass
class Run:
    printed: list[str]  # the plan line, then what the command wrote to stdout
    zh_text: str
    cer: float
    wer: float
    en_words: int
    wall: float
    cpu: float
    load: float


def run_first_command(readme: str, work: Path, env: dict[str, str] | None = None) -> Run:
    """Run the first command in `work` (which gets a link to samples/); it writes `work/out`."""
    (work / "samples").symlink_to(SAMPLES)
    env = dict(os.environ if env is None else env, PYTHONPATH=str(ROOT))
    load = os.getloadavg()[0]
    before, start = _children_cpu(), time.monotonic()
    command = [sys.executable, "-m", "fireredasr_fast.cli", *first_command(readme)]
    result = subprocess.run(command, cwd=work, capture_output=True, text=True, env=env, timeout=1800)
    wall, cpu = time.monotonic() - start, _children_cpu() - before
    if result.returncode != 0:
        raise RuntimeError(f"the first command failed ({result.returncode}): {result.stderr[-2000:]}")
    out = work / "out"
    cer, wer = error_rates(out)
    zh = (out / f"{ZH}.txt").read_text(encoding="utf-8")
    references = json.loads((SAMPLES / "transcripts.json").read_text(encoding="utf-8"))
    return Run(
        printed=[line for line in result.stderr.splitlines() if line.startswith("plan:")]
        + result.stdout.rstrip("\n").splitlines(),
        zh_text=" / ".join(line.strip() for line in zh.splitlines() if line.strip()),
        cer=cer,
        wer=wer,
        en_words=len(english_words(references[f"{EN}.mp4"]).split()),
        wall=wall,
        cpu=cpu,
        load=load,
    )


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _machine() -> str:
    model = platform.processor() or platform.machine()
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        names = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
    return f"{names[0] if names else model}, {os.cpu_count()} logical cores"


def render(run: Run) -> str:
    """The README block between the marks (the marks excluded)."""
    wrong = round(run.wer * run.en_words)
    english = "without a word wrong" if wrong == 0 else f"with {wrong} of {run.en_words} words wrong"
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    texts = (
        f"and writes `out/{ZH}.{{srt,vtt,txt,json,review.tsv}}` and `out/{EN}.*`: {run.zh_text} "
        f"(CER {100 * run.cer:.1f} %) and Dickens' opening paragraph {english} (WER {100 * run.wer:.1f} %); "
        f"the suite holds them to CER <= {100 * MAX_CER_ZH:.0f} % and WER <= {100 * MAX_WER_EN:.0f} %."
    )
    timing = (
        f"This run: {run.wall:.0f} s wall, {run.cpu:.0f} s CPU on {_machine()}, load average "
        f"{run.load:.1f} at the start, {date} (written by `python tests/tools/readme_first_command.py`)."
    )
    return "\n".join(["```", *run.printed, "```", "", _wrap(texts), _wrap(timing)])


def _wrap(text: str) -> str:
    return textwrap.fill(text, width=100, break_long_words=False, break_on_hyphens=False)


def comparable(block: str) -> str:
    """`block` without what differs from run to run or machine to machine: the times, and the
    plan (workers, threads, memory); the rest is what the command wrote."""
    block = block.split("\nThis run: ", 1)[0]
    lines = []
    for line in block.splitlines():
        if line.startswith("plan:"):
            line = "plan: _"  # workers, threads and memory are the machine's
        line = re.sub(r"in \d+(\.\d+)? s wall \(realtime factor \d+(\.\d+)?\)", "in _ s wall (realtime factor _)", line)
        fields = line.split()  # column widths follow the widest entry
        if fields[:1] in (["done"], ["failed"], ["skipped"]) and len(fields) >= 6:
            fields[2:4] = ["_", "_"]  # wall and RTF
        lines.append(" ".join(fields))
    return "\n".join(lines)


def matches_readme(readme: str, run: Run) -> bool:
    """Whether the README's block says what `run` printed and measured (times aside)."""
    return comparable(current_block(readme)) == comparable(render(run))


def current_block(readme: str) -> str:
    if BEGIN not in readme or END not in readme:
        raise ValueError(f"README.md lacks the {BEGIN} ... {END} marks")
    return readme.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n")


def replace_block(readme: str, block: str) -> str:
    head, rest = readme.split(BEGIN, 1)
    return f"{head}{BEGIN}\n{block}\n{END}{rest.split(END, 1)[1]}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of rewriting; exit 1 if it differs")
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args()
    readme = args.readme.read_text(encoding="utf-8")
    old = current_block(readme)
    with tempfile.TemporaryDirectory() as tmp:
        new = render(run_first_command(readme, Path(tmp)))
    if args.check:
        if comparable(old) != comparable(new):
            print(f"{args.readme} differs from this run:\n--- README\n{old}\n--- this run\n{new}", file=sys.stderr)
            return 1
        print(f"{args.readme}: the first command's block matches this run")
        return 0
    args.readme.write_text(replace_block(readme, new), encoding="utf-8")
    print(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
