"""The README's first command on both samples with the default (demo) model: the Mandarin
sample within 10 % CER in simplified characters, the English one within 5 % WER, each file's
language detected, in the JSON and the run report, and the README's block of what it prints
and its figures the same as this run's (tests/tools/readme_first_command.py writes it)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from fireredasr_fast.engines.whisper import bundled

sys.path.insert(0, str(ROOT / "tests" / "tools"))
from readme_first_command import MAX_CER_ZH, MAX_WER_EN, matches_readme, render, run_first_command

pytest.importorskip("jiwer")
pytest.importorskip("faster_whisper")


@pytest.mark.slow
def test_first_command_gets_both_samples_right(tmp_path: Path):
    if not bundled.bundled_installed("base"):
        pytest.skip(f"the demo model is not installed ({bundled.INSTALL_HINT})")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    run = run_first_command(readme, tmp_path, env=dict(os.environ, OMP_NUM_THREADS="1"))
    out = tmp_path / "out"
    print(f"aishell_zh: CER {run.cer:.3f}: {run.zh_text!r}; two_cities: WER {run.wer:.3f}")
    assert run.cer <= MAX_CER_ZH
    assert run.wer <= MAX_WER_EN

    assert json.loads((out / "aishell_zh.json").read_text(encoding="utf-8"))["language"] == "zh"
    assert json.loads((out / "two_cities.json").read_text(encoding="utf-8"))["language"] == "en"
    report = json.loads((out / "run-report.json").read_text(encoding="utf-8"))
    assert {f["relative"]: f["language"] for f in report["files"]} == {"aishell_zh.mkv": "zh", "two_cities.mp4": "en"}
    # The README shows this run's table, texts and error rates (its times aside): rewrite it
    # with `python tests/tools/readme_first_command.py` when they change.
    assert matches_readme(readme, run), f"README.md's first-command block is out of date; this run:\n{render(run)}"
