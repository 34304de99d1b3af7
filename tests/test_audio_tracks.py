"""Files with several audio tracks: the track with the most speech is transcribed, and
`--audio-stream all` writes one set of outputs per track. Real files made with ffmpeg -map."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES, ROOT, SAMPLES, run_ffmpeg

from fireredasr_fast.audio import probe_audio_streams
from fireredasr_fast.inputs import InputFile, expand_audio_streams
from fireredasr_fast.transcribe import choose_track, prepare_file
from fireredasr_fast.vad import SpeechSegmenter


def _two_tracks(target: Path, first: list[str], second: list[str], default: int) -> Path:
    """A video with two audio tracks (inputs 1 and 2) and `default` marked as the default one."""
    run_ffmpeg(
        "-i", str(SAMPLES / "two_cities.mp4"), *first, *second,
        "-map", "0:v", "-map", "1:a", "-map", "2:a", "-c:v", "copy", "-c:a", "aac", "-t", "12",
        f"-disposition:a:{default}", "default", f"-disposition:a:{1 - default}", "0", str(target),
    )  # fmt: skip
    return target


SILENCE = ["-f", "lavfi", "-t", "12", "-i", "anullsrc=r=16000:cl=mono"]
SPEECH = ["-i", str(SAMPLES / "two_cities.mp4")]


@pytest.fixture(scope="module")
def silent_first(tmp_path_factory) -> Path:
    """The issue's case: ffmpeg's default track is silent, the second holds the speech."""
    return _two_tracks(tmp_path_factory.mktemp("tracks") / "two tracks.mkv", SILENCE, SPEECH, default=0)


@pytest.fixture(scope="module")
def segmenter() -> SpeechSegmenter:
    return SpeechSegmenter()


def test_probe_lists_the_audio_streams_and_ffmpegs_choice(silent_first: Path):
    streams = probe_audio_streams(silent_first)
    assert (streams.count, streams.default) == (2, 0)
    assert streams.duration is not None and abs(streams.duration - 12.0) < 1.0
    single = probe_audio_streams(SAMPLES / "aishell_zh.mkv")
    assert (single.count, single.default) == (1, 0)


def test_the_track_with_speech_is_chosen_over_ffmpegs_silent_default(silent_first: Path, segmenter):
    prepared = prepare_file(silent_first, segmenter)
    track = prepared.track
    assert track is not None
    assert (track.stream, track.streams, track.default, track.reason) == (1, 2, 0, "most speech")
    assert track.speech_seconds[0] == 0.0 and track.speech_seconds[1] > 8.0
    # The same audio and segments as asking for stream 1.
    asked = prepare_file(silent_first, segmenter, audio_stream=1)
    assert (prepared.samples == asked.samples).all()
    assert [(s.start, s.end) for s in prepared.segments] == [(s.start, s.end) for s in asked.segments]
    assert asked.track is not None and asked.track.reason == "requested"
    assert "transcribing stream 1, not ffmpeg's default (0)" in track.describe("two tracks.mkv")


def test_tied_tracks_keep_ffmpegs_default(tmp_path: Path, segmenter):
    # The same speech twice, the second marked default: a tie, so ffmpeg's choice stands.
    target = _two_tracks(tmp_path / "dubbed.mkv", SPEECH, SPEECH, default=1)
    track = prepare_file(target, segmenter).track
    assert track is not None and (track.stream, track.reason) == (1, "tie: ffmpeg's default")


@pytest.mark.parametrize(
    ("speech", "default", "expected"),
    [
        ([0.0, 30.0], 0, (1, "most speech")),
        ([30.0, 29.0], 1, (1, "tie: ffmpeg's default")),  # within TRACK_TIE_SHARE
        ([30.0, 20.0], 1, (0, "most speech")),
        ([0.0, 0.0], 1, (1, "tie: ffmpeg's default")),
        ([None, 5.0, 5.0], 0, (1, "most speech")),  # unreadable default; first of equals
        ([4.0, 9.0], None, (1, "most speech")),
    ],
)
def test_choose_track(speech, default, expected):
    assert choose_track(speech, default) == expected


def test_all_expands_one_input_per_stream(silent_first: Path, tmp_path: Path):
    text = tmp_path / "notes.mp4"
    text.write_text("not media")
    items = [InputFile(silent_first, Path("a/two tracks.mkv")), InputFile(text, Path("notes.mp4"))]
    expanded = expand_audio_streams(items)
    assert [(i.relative.as_posix(), i.output_name.as_posix(), i.audio_stream) for i in expanded] == [
        ("a/two tracks.mkv#a0", "a/two tracks.a0.mkv", 0),
        ("a/two tracks.mkv#a1", "a/two tracks.a1.mkv", 1),
        ("notes.mp4", "notes.mp4", None),  # unreadable: fails in the run with its own message
    ]


def _run_cli(out: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    command = [
        sys.executable, str(ROOT / "long_video_transcribe.py"), "--model-dir", str(FIXTURES / "tiny_model"),
        "--workers", "0", "--formats", "srt,txt,json", "--no-progress", "-o", str(out), *args,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


def test_the_cli_says_which_track_and_writes_each_with_all(silent_first: Path, tmp_path: Path):
    out = tmp_path / "chosen"
    result = _run_cli(out, str(silent_first))
    assert result.returncode == 0, result.stderr
    assert "two tracks.mkv: 2 audio streams; transcribing stream 1" in result.stderr  # the log
    assert "EPOCH OF BELIEF" in (out / "two tracks.txt").read_text().upper()
    data = json.loads((out / "two tracks.json").read_text())
    assert data["audio_track"]["stream"] == 1 and data["audio_track"]["ffmpeg_default"] == 0
    report = json.loads((out / "run-report.json").read_text())
    assert report["files"][0]["audio_track"]["stream"] == 1

    out = tmp_path / "all"
    result = _run_cli(out, "--audio-stream", "all", str(silent_first))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.glob("two tracks.*")) == [
        f"two tracks.a{i}.{ext}" for i in (0, 1) for ext in ("json", "srt", "txt")
    ]
    assert (out / "two tracks.a0.txt").read_text().strip() == ""  # the silent track: empty, valid
    assert "EPOCH OF BELIEF" in (out / "two tracks.a1.txt").read_text().upper()
    report = json.loads((out / "run-report.json").read_text())
    assert [(f["relative"], f["status"], f["audio_track"]["reason"]) for f in report["files"]] == [
        ("two tracks.mkv#a0", "done", "requested"),
        ("two tracks.mkv#a1", "done", "requested"),
    ]


def test_audio_stream_option_takes_an_index_or_all(capsys):
    from fireredasr_fast.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["--audio-stream", "all", "x.mkv"]).audio_stream == "all"
    assert parser.parse_args(["--audio-stream", "1", "x.mkv"]).audio_stream == 1
    for bad in ("-1", "first"):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(["--audio-stream", bad, "x.mkv"])
        assert exit_info.value.code == 2
    assert "expected a stream index (0, 1, ...) or 'all'" in capsys.readouterr().err
