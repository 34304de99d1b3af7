"""Shared fixtures. Every test process pins torch to one thread: this machine has two
cores, and over-subscription makes small models orders of magnitude slower."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
sys.path.insert(0, str(FIXTURES))  # make_programme (synthetic speech) for every test module


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    return SAMPLES


@pytest.fixture(scope="session")
def ffmpeg_exe() -> str:
    from fireredasr_fast.audio import ffmpeg_executable

    return ffmpeg_executable()


def run_ffmpeg(*args: str) -> None:
    from fireredasr_fast.audio import ffmpeg_executable

    subprocess.run([ffmpeg_executable(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def require_espeak() -> str:
    exe = shutil.which("espeak-ng")
    if not exe:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    return exe


@pytest.fixture(scope="session")
def random_model_dir(tmp_path_factory) -> Path:
    """A tiny FireRedASR-AED directory in the official format, random weights."""
    from testsupport.random_model import write_random_model_dir

    return write_random_model_dir(tmp_path_factory.mktemp("random-model") / "tiny", preset="tiny", seed=0)


@pytest.fixture(scope="session")
def folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("folder")
    for i in range(3):
        shutil.copy(SAMPLES / "aishell_zh.mkv", folder / f"zh {i}.mkv")
        shutil.copy(SAMPLES / "two_cities.mp4", folder / f"en {i}.mp4")
    return folder


@pytest.fixture(scope="session")
def baseline(folder: Path, random_model_dir: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("baseline")
    from runs import cli_command, run

    result = run(cli_command(random_model_dir, out, folder))
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="session")
def long_file(tmp_path_factory) -> Path:
    """About two minutes: English speech, noise, Mandarin speech, silence, English again (the
    front end's and the stretches' tests, with small VAD blocks)."""
    target = tmp_path_factory.mktemp("frontend") / "long talk.mkv"
    mono = "aresample=16000,aformat=channel_layouts=mono"
    run_ffmpeg(
        "-i", str(SAMPLES / "two_cities.mp4"), "-f", "lavfi", "-t", "9", "-i", "anoisesrc=a=0.05:r=16000",
        "-i", str(SAMPLES / "aishell_zh.mkv"), "-f", "lavfi", "-t", "20", "-i", "anullsrc=r=16000:cl=mono",
        "-i", str(SAMPLES / "two_cities.mp4"),
        "-filter_complex", ";".join(f"[{i}:a]{mono}[s{i}]" for i in range(5)) + ";"
        + "".join(f"[s{i}]" for i in range(5)) + "concat=n=5:v=0:a=1[out]",
        "-map", "[out]", "-c:a", "aac", str(target),
    )  # fmt: skip
    return target
