"""What the benchmarks share: where their inputs and checkpoints come from, the runner's
folder of real-speech videos, report headers, the CPU's name, and the timing helpers.

A benchmark module imports this module and the package's public API, never another
benchmark's module (the import-linter contracts in pyproject.toml say so). The benchmarks run
from a checkout: they read samples/ and the trained test fixture (tests/fixtures/tiny_model).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fireredasr_fast.audio import decode_audio, ffmpeg_executable
from fireredasr_fast.batching import SegmentJob
from fireredasr_fast.results import SAMPLE_RATE
from fireredasr_fast.transcribe import prepare_file
from fireredasr_fast.vad import SpeechSegmenter

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
# The trained tiny FireRedASR-AED test fixture (its TRAINING.md says how it was made): unlike a
# random checkpoint it says <eos> where the speech ends.
TINY_MODEL = ROOT / "tests" / "fixtures" / "tiny_model"


def tool_command(root: Path | None = None) -> list[str]:
    """The command as `fireredasr-fast` runs it, from the checkout at `root` (default: this
    one): fireredasr_fast/__main__.py where the checkout has one (it starts the fork server
    before the CLI's imports, and processes it spawns import it rather than the CLI), else
    the CLI."""
    main = (root or ROOT) / "fireredasr_fast" / "__main__.py"
    return [sys.executable, "-m", "fireredasr_fast" if main.exists() else "fireredasr_fast.cli"]


def tiny_model_texts() -> Any:
    """tests/fixtures/tiny_model_texts.py: the sentences the tiny fixture was trained on (one
    list for the tests, the training recipe and the benchmarks)."""
    import importlib.util

    path = ROOT / "tests" / "fixtures" / "tiny_model_texts.py"
    spec = importlib.util.spec_from_file_location("tiny_model_texts", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


DEFAULT_CACHE = Path(tempfile.gettempdir()) / "fireredasr-bench"  # random checkpoints, written once
LONG_FOLDER_VERSION = 2  # bump when build_long_folder's recipe changes: the cache is keyed by it
# Relative file lengths of the runner's folder (scaled to its minutes, clamped to 1-3 min per file).
LENGTH_WEIGHTS = (1.0, 1.6, 0.8, 1.3, 0.7, 1.2, 0.9, 1.5)


# --------------------------------------------------------------------------- the machine


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def report_header(benchmark: str, threads: int, model: str) -> dict[str, Any]:
    """The JSON fields every engine-on-folder benchmark report starts with."""
    return {
        "benchmark": benchmark,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": {"processor": cpu_name(), "platform": platform.platform(), "threads": threads},
        "model": model,
    }


# --------------------------------------------------------------------------- inputs


def ffmpeg(*args: str) -> None:
    """Run ffmpeg quietly with these arguments; raises if it fails."""
    subprocess.run([ffmpeg_executable(), "-nostdin", "-v", "error", "-y", *args], check=True)


def samples_track(path: Path) -> Path:
    """One 16 kHz mono WAV of both samples in turn (English 44 s, Mandarin 13 s)."""
    ffmpeg(
        "-i",
        str(SAMPLES / "two_cities.mp4"),
        "-i",
        str(SAMPLES / "aishell_zh.mkv"),
        "-filter_complex",
        "[0:a]aresample=16000,aformat=channel_layouts=mono[a];[1:a]aresample=16000,aformat=channel_layouts=mono[b];"
        "[a][b]concat=n=2:v=0:a=1[out]",
        "-map",
        "[out]",
        str(path),
    )
    return path


def build_folder(folder: Path, minutes: float, files: int | None = None) -> list[dict[str, Any]]:
    """Media files of 1-3 minutes, `minutes` in all, each the two samples in turn (English
    44 s, Mandarin 13 s) repeated and cut; even files mp4 (H.264+AAC), odd mkv (H.264+Opus)."""
    folder.mkdir(parents=True, exist_ok=True)
    # Every file loops the samples' track from its own offset, so files differ in where their
    # sentences are cut.
    pair = samples_track(folder.parent / "pair.wav")
    total = minutes * 60.0
    count = files or max(3, min(8, int(total // 60.0)))
    weights = [LENGTH_WEIGHTS[i % len(LENGTH_WEIGHTS)] for i in range(count)]
    lengths = [min(180.0, max(60.0, total * w / sum(weights))) for w in weights]
    # The tracks are cut here in samples: ffmpeg's -stream_loop with -ss/-t gave files whose
    # decoded audio ran past their container duration.
    loop = decode_audio(pair)
    made = []
    for i, length in enumerate(lengths):
        mp4 = i % 2 == 0
        path = folder / f"video_{i + 1:02d}.{'mp4' if mp4 else 'mkv'}"
        offset = round((i * 17.0) % 57.0 * 16000)
        count = round(length * 16000)
        reps = (offset + count) // loop.size + 1
        track = np.tile(loop, reps)[offset : offset + count]
        wav = write_wav(folder.parent / f"track_{i + 1:02d}.wav", track)
        ffmpeg(
            "-i",
            str(wav),
            "-f",
            "lavfi",
            "-i",
            "color=c=0x203040:s=160x90:r=5",
            "-map",
            "1:v",
            "-map",
            "0:a",
            "-shortest",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "aac" if mp4 else "libopus",
            "-b:a",
            "48k",
            str(path),
        )
        wav.unlink()
        made.append({"file": path.name, "seconds": round(length, 1)})
    return made


def build_long_folder(cache_dir: Path, files: int, minutes: float) -> list[Path]:
    """`files` long videos of `minutes` each, made once with ffmpeg and then reused (the
    frontend benchmark's folder): each file loops a cycle of real speech (samples/: English
    44 s, Mandarin 13 s), pink noise, silence and a warbling tone, under light background
    noise, as H.264 (a still frame, 1 fps) + AAC 48 kHz stereo, the usual shape of a
    downloaded video; each file starts the cycle at its own offset."""
    folder = cache_dir / f"frontend-v{LONG_FOLDER_VERSION}-{files}x{minutes:g}min"
    paths = [folder / f"long_{i + 1:02d}.mp4" for i in range(files)]
    if all(path.is_file() for path in paths):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    cycle = folder / "cycle.wav"
    if not cycle.is_file():
        mono = "aresample=16000,aformat=channel_layouts=mono"
        ffmpeg(
            "-i", str(SAMPLES / "two_cities.mp4"),
            "-f", "lavfi", "-t", "8", "-i", "anoisesrc=color=pink:a=0.1:r=16000",
            "-i", str(SAMPLES / "aishell_zh.mkv"),
            "-f", "lavfi", "-t", "10", "-i", "anullsrc=r=16000:cl=mono",
            "-f", "lavfi", "-t", "6", "-i", "sine=f=440:r=16000,vibrato=f=5:d=0.5",
            "-filter_complex", ";".join(f"[{i}:a]{mono}[s{i}]" for i in range(5)) + ";"
            + "".join(f"[s{i}]" for i in range(5)) + "concat=n=5:v=0:a=1[out]",
            "-map", "[out]", str(folder / "cycle.tmp.wav"),
        )  # fmt: skip
        (folder / "cycle.tmp.wav").replace(cycle)
    loop = decode_audio(cycle)
    count = round(minutes * 60.0 * SAMPLE_RATE)
    for i, path in enumerate(paths):
        if path.is_file():
            continue
        # Each file starts the cycle at its own offset, so files differ. The track is cut here
        # in samples: ffmpeg's -stream_loop with -ss/-t wrote audio past the stated duration.
        offset = round(i * 13.7 * SAMPLE_RATE) % loop.size
        track = np.tile(loop, (offset + count) // loop.size + 1)[offset : offset + count]
        wav = folder / f"track_{i + 1:02d}.wav"
        with wave.open(str(wav), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(SAMPLE_RATE)
            out.writeframes(track.astype("<i2").tobytes())
        partial = path.with_suffix(".tmp.mp4")
        ffmpeg(
            "-i", str(wav),
            "-f", "lavfi", "-i", "anoisesrc=color=white:a=0.01:r=48000",
            "-f", "lavfi", "-i", "color=c=0x203040:s=160x90:r=1",
            "-filter_complex", "[0:a]aresample=48000[s];[s][1:a]amix=inputs=2:duration=first,"
            "aformat=channel_layouts=stereo[a]",
            "-map", "2:v", "-map", "[a]", "-t", f"{count / SAMPLE_RATE:.3f}",
            "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-b:a", "128k", str(partial),
        )  # fmt: skip
        wav.unlink()
        partial.replace(path)
    return paths


def segmented_folder(minutes: float) -> list[list[SegmentJob]]:
    """The runner benchmark's folder (build_folder), through the real VAD: each file's
    segments, files in name order."""
    with tempfile.TemporaryDirectory(prefix="bench-folder-") as tmp:
        folder = Path(tmp) / "videos"
        folder.mkdir()
        build_folder(folder, minutes)
        segmenter = SpeechSegmenter()
        paths = sorted(folder.iterdir())
        return [list(prepare_file(path, segmenter).jobs(i)) for i, path in enumerate(paths)]


def as_float(job: SegmentJob) -> np.ndarray:
    return job.samples.astype(np.float32) / 32768.0


def add_folder_options(parser: argparse.ArgumentParser, rounds: int) -> None:
    """Options shared by the benchmarks that run the engine on the runner's folder."""
    parser.add_argument("--minutes", type=float, default=4.0, help="audio in the folder (default: %(default)s)")
    parser.add_argument("--model-dir", type=Path, help="checkpoint (default: the fixture, else random)")
    parser.add_argument("--preset", choices=["tiny", "small", "aed-l"], help="write a random checkpoint of this shape")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="random checkpoints are kept here")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=rounds, help="alternating rounds (default: %(default)s)")
    parser.add_argument("--tokens-per-second", type=float, default=4.5)
    parser.add_argument("--json", type=Path)


# --------------------------------------------------------------------------- checkpoints


def resolve_model(model_dir: Path | None, preset: str | None, cache: Path) -> tuple[Path, str]:
    """--model-dir, else the trained tiny model, else a random model of --preset (default small)."""
    if model_dir is not None and preset is None:
        return model_dir, f"given: {model_dir}"
    if model_dir is None and preset is None and (TINY_MODEL / "model.pth.tar").is_file():
        return TINY_MODEL, f"trained tiny fixture ({TINY_MODEL.relative_to(ROOT)})"
    preset = preset or "small"
    return ensure_random_model(cache / preset, preset), f"random {preset} (odim 7832)"


def ensure_random_model(path: Path, preset: str) -> Path:
    """A random model of `preset` at `path`, written once (via a temporary name, so an
    interrupted write is never mistaken for a model)."""
    if (path / "model.pth.tar").is_file():
        return path
    from testsupport.random_model import write_random_model_dir

    partial = path.with_name(path.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    start = time.perf_counter()
    write_random_model_dir(partial, preset=preset, odim=7832)
    partial.rename(path)
    size = sum(f.stat().st_size for f in path.iterdir())
    print(f"wrote random {preset} checkpoint to {path} ({size / 1e9:.2f} GB) in {time.perf_counter() - start:.0f} s")
    return path


# --------------------------------------------------------------------------- timing

_NEG = -1e9  # finite: upstream multiplies scores by 0 for finished beams (inf * 0 = nan)


def noise_waveform(seconds: float, seed: int) -> np.ndarray:
    """Noise with a 3 Hz syllable-like envelope: input both implementations decode alike."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    envelope = 0.5 + 0.5 * np.sin(np.arange(n) * (2 * np.pi * 3 / 16000))  # syllable-like
    return (0.1 * envelope * rng.standard_normal(n)).astype(np.float32)


def forced_length_hook(length: int, eos: int):
    """Logits hook: no <eos> before `length` tokens, only <eos> at step `length`."""

    def hook(step: int, logits: Any) -> Any:  # a torch tensor (this module does not import torch)
        logits = logits.clone()
        if step < length:
            logits[:, eos] = _NEG
        else:
            logits.fill_(_NEG)
            logits[:, eos] = 0.0
        return logits

    return hook


def alternate(impls: dict[str, Callable[[], Any]], rounds: int, repeats: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each implementation, `rounds` times, order reversed every round."""
    times: dict[str, list[float]] = {name: [] for name in impls}
    items = list(impls.items())
    for r in range(rounds):
        for name, fn in items if r % 2 == 0 else items[::-1]:
            start = time.perf_counter()
            for _ in range(repeats):
                fn()
            times[name].append((time.perf_counter() - start) / repeats)
    return times


def memory_bandwidth_gbs(threads: int, mib: int = 512, repeats: int = 5) -> float:
    """Best-of read bandwidth (a sum over `mib` MiB of fp32): what a decoder step that
    streams its weights can hope for."""
    import torch

    torch.set_num_threads(threads)
    data = torch.ones(mib * 2**20 // 4)
    best = float("inf")
    for _ in range(repeats + 1):
        start = time.perf_counter()
        data.sum()
        best = min(best, time.perf_counter() - start)
    return data.numel() * 4 / best / 1e9


def feature_frames(seconds: float) -> int:
    """10 ms fbank frames of `seconds` of 16 kHz audio (25 ms windows)."""
    from fireredasr_fast.engines.firered.features import fbank_frames

    return fbank_frames(int(seconds * SAMPLE_RATE))


def write_wav(path: Path, samples: np.ndarray) -> Path:
    """16 kHz mono int16 samples as a WAV file (what decode_audio reads back unchanged)."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(np.asarray(samples).astype("<i2").tobytes())
    return path
