"""The benchmarks' command lines and their own data (they run in `python -m benchmarks`;
benchmarks are not tests, so nothing here times anything)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import BENCHMARKS
from benchmarks.__main__ import main
from benchmarks.common import ROOT, TINY_MODEL, resolve_model
from fireredasr_fast.engines.firered.checkpoint import check_model_dir


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_every_benchmark_prints_its_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([name, "--help"])
    assert exit_.value.code == 0
    assert f"python -m benchmarks {name}" in capsys.readouterr().out


def test_the_benchmarks_run_from_the_checkouts_root() -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert all(name in proc.stdout for name in BENCHMARKS)


def test_an_unknown_benchmark_lists_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["no-such-benchmark"]) == 2
    out = capsys.readouterr().out
    assert all(name in out for name in BENCHMARKS)


def test_the_default_checkpoint_is_the_trained_test_fixture(tmp_path: Path) -> None:
    path, kind = resolve_model(None, None, tmp_path)
    assert path == TINY_MODEL == ROOT / "tests" / "fixtures" / "tiny_model"
    assert kind.startswith("trained tiny fixture")
    check_model_dir(path)  # every file a FireRedASR model directory needs
    assert not any(tmp_path.iterdir())  # no random checkpoint written
