"""The README's first command on both samples with the default (demo) model: the Mandarin
sample within 10 % CER in simplified characters, the English one within 5 % WER, each file's
language detected, in the JSON and the run report."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, SAMPLES

from fireredasr_fast.engines.whisper import bundled

jiwer = pytest.importorskip("jiwer")
pytest.importorskip("faster_whisper")

REFERENCES = json.loads((SAMPLES / "transcripts.json").read_text(encoding="utf-8"))
MAX_CER_ZH = 0.10
MAX_WER_EN = 0.05


def first_command() -> list[str]:
    """The tool's part of the fenced block after <!-- first-command --> (the part after the
    pip install), as arguments."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- first-command -->", 1)[1].split("```", 2)[1]
    command = block.strip().split("&&")[-1].strip()
    args = shlex.split(command)
    assert args[0] == "fireredasr-fast", command
    return args[1:]


def chinese_chars(text: str) -> str:
    return "".join(re.findall(r"[\u3400-\u9fff]", text))


def english_words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


@pytest.mark.slow
def test_first_command_gets_both_samples_right(tmp_path: Path):
    if not bundled.bundled_installed("base"):
        pytest.skip(f"the demo model is not installed ({bundled.INSTALL_HINT})")
    (tmp_path / "samples").symlink_to(SAMPLES)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-m", "fireredasr_fast.cli", *first_command()],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"

    zh = (out / "aishell_zh.txt").read_text(encoding="utf-8")
    cer = jiwer.cer(chinese_chars(REFERENCES["aishell_zh.mkv"]), chinese_chars(zh))
    print(f"aishell_zh: CER {cer:.3f}: {zh.strip()!r}")
    assert cer <= MAX_CER_ZH
    en = (out / "two_cities.txt").read_text(encoding="utf-8")
    wer = jiwer.wer(english_words(REFERENCES["two_cities.mp4"]), english_words(en))
    print(f"two_cities: WER {wer:.3f}")
    assert wer <= MAX_WER_EN

    assert json.loads((out / "aishell_zh.json").read_text(encoding="utf-8"))["language"] == "zh"
    assert json.loads((out / "two_cities.json").read_text(encoding="utf-8"))["language"] == "en"
    report = json.loads((out / "run-report.json").read_text(encoding="utf-8"))
    assert {f["relative"]: f["language"] for f in report["files"]} == {"aishell_zh.mkv": "zh", "two_cities.mp4": "en"}
