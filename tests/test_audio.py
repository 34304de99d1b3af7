"""Media decoding through ffmpeg on real files, good and bad."""

from __future__ import annotations

import os
import resource
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLES, run_ffmpeg

from fireredasr_fast.audio import decode_audio
from fireredasr_fast.errors import MediaError


def test_decodes_real_speech_from_mp4_and_mkv():
    english = decode_audio(SAMPLES / "two_cities.mp4")
    mandarin = decode_audio(SAMPLES / "aishell_zh.mkv")
    assert english.dtype == np.int16 and mandarin.dtype == np.int16
    assert abs(english.size / 16000 - 44.4) < 0.1
    assert abs(mandarin.size / 16000 - 12.8) < 0.1
    # Real speech, not silence: a healthy RMS level.
    assert np.sqrt(np.mean(english.astype(np.float64) ** 2)) > 300


@pytest.mark.parametrize("container", ["mov", "webm", "m4a", "mp3", "wav", "flac"])
def test_other_containers_give_the_same_length(tmp_path: Path, container: str):
    target = tmp_path / f"speech.{container}"
    run_ffmpeg("-i", str(SAMPLES / "aishell_zh.mkv"), "-vn", str(target))
    samples = decode_audio(target)
    assert abs(samples.size / 16000 - 12.8) < 0.1


def test_picks_an_audio_stream(tmp_path: Path):
    # Two audio streams: silence first, speech second.
    target = tmp_path / "two streams.mkv"
    run_ffmpeg(
        "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-i", str(SAMPLES / "aishell_zh.mkv"),
        "-map", "0:a", "-map", "1:a", "-t", "5", "-c:a", "flac", str(target),
    )  # fmt: skip
    first = decode_audio(target, audio_stream=0)
    second = decode_audio(target, audio_stream=1)
    assert np.abs(first).max() == 0 and np.abs(second).max() > 1000
    with pytest.raises(MediaError, match="no audio stream with index 2"):
        decode_audio(target, audio_stream=2)


def test_awkward_names(tmp_path: Path):
    target = tmp_path / "-dash 空格 name.mkv"
    target.write_bytes((SAMPLES / "aishell_zh.mkv").read_bytes())
    assert decode_audio(target).size > 16000


@pytest.mark.parametrize(
    ("name", "make", "cause"),
    [
        ("empty.mp4", lambda p: p.write_bytes(b""), "not a readable media file"),
        ("text.mp4", lambda p: p.write_text("hello"), "not a readable media file"),
        ("truncated.mp4", lambda p: p.write_bytes((SAMPLES / "two_cities.mp4").read_bytes()[:4000]), "not a readable"),
        ("missing.mp4", lambda p: None, "does not exist"),
    ],
)
def test_bad_files_raise_one_line_errors(tmp_path: Path, name, make, cause):
    target = tmp_path / name
    make(target)
    with pytest.raises(MediaError, match=cause) as info:
        decode_audio(target)
    assert "\n" not in str(info.value)


def test_video_without_audio(tmp_path: Path):
    target = tmp_path / "no audio.mp4"
    run_ffmpeg("-f", "lavfi", "-i", "color=s=32x32:r=5", "-t", "1", str(target))
    with pytest.raises(MediaError, match="no audio stream"):
        decode_audio(target)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any file")
def test_unreadable_file(tmp_path: Path):
    target = tmp_path / "locked.mkv"
    target.write_bytes((SAMPLES / "aishell_zh.mkv").read_bytes())
    target.chmod(0)
    with pytest.raises(MediaError, match="permission denied"):
        decode_audio(target)


def test_ffmpegs_output_arrives_in_blocks_not_per_packet(tmp_path: Path):
    # 60 s of AAC (~2,800 packets at 48 kHz): flushed after every packet, reading it woke the
    # reading thread about that many times; in ffmpeg's 32 KB blocks, about 60.
    target = tmp_path / "tone.mp4"
    run_ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=60", "-c:a", "aac", str(target))
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw
    samples = decode_audio(target)
    waits = resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw - before
    assert abs(samples.size / 16000 - 60.0) < 0.1
    assert waits < 600, f"{waits} waits for 60 s of audio"
