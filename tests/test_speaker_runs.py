"""Speaker labels through the real command (issue 31): a programme of two espeak-ng voices
taking turns, run with `--speakers` on two workers; the labels in every format, kept by a rerun
that only re-renders, redone by a rerun with other `--speakers`, and the Whisper engine's words
labelled the same way.

Two voices: espeak-ng's Mandarin voice and its female variant (f4), clearly apart in pitch and
timbre. Most turns are separated by a pause the VAD hears, but all of them fall in one VAD
segment (pauses under --merge-gap), so cues are cut at the changes inside a segment; one answer
follows with almost no pause, a change inside one stretch of speech.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pysubs2
import pytest
from conftest import FIXTURES, require_espeak
from runs import run
from test_speaker_labels import vtt_voices

from fireredasr_fast.results import SAMPLE_RATE

TINY_MODEL = FIXTURES / "tiny_model"
VOICES = ("cmn", "cmn+f4")  # A, B
# (sentence, voice index, pause after it in seconds)
SCRIPT = [
    ("今天天气很好", 0, 0.7),
    ("我们明天早上八点出发", 1, 0.7),
    ("他每天坐地铁去上班", 0, 0.15),
    ("这家饭店的菜非常好吃", 1, 0.7),
    ("请把窗户关上", 0, 0.7),
    ("我想喝一杯热茶", 1, 1.0),
]
FORMATS = "srt,vtt,ass,txt,json"
FIRERED = ("--model-dir", str(TINY_MODEL))


@pytest.fixture(scope="module")
def programme(tmp_path_factory) -> tuple[Path, list[tuple[float, float, int]]]:
    """The WAV, and each sentence's true (start, end, voice)."""
    require_espeak()
    from make_programme import synthesize, trim, write_wav

    position = SAMPLE_RATE
    pieces = [np.zeros(position, dtype=np.int16)]
    truth = []
    for text, voice, pause in SCRIPT:
        speech = trim(synthesize(text, voice=VOICES[voice], pitch=50))
        truth.append((position / SAMPLE_RATE, (position + speech.size) / SAMPLE_RATE, voice))
        pause_samples = np.zeros(round(pause * SAMPLE_RATE), dtype=np.int16)
        pieces += [speech, pause_samples]
        position += speech.size + pause_samples.size
    path = tmp_path_factory.mktemp("programme") / "talk.wav"
    write_wav(path, np.concatenate(pieces))
    return path, truth


def cli(wav: Path, out: Path, *extra: str, engine: tuple[str, ...] = FIRERED, workers: int = 0) -> dict:
    """Run the command on the programme; its JSON. Worker processes cost seconds to start: the
    runner's pool is used where it is what a run tests."""
    command = [
        "-m", "fireredasr_fast.cli", *engine, "--workers", str(workers), "--threads-per-worker", "1",
        "--batch-seconds", "10", "--formats", FORMATS, "--no-progress", "-o", str(out), *extra, str(wav),
    ]  # fmt: skip
    result = run([sys.executable, *command])
    assert result.returncode == 0, result.stderr
    return json.loads((out / "talk.json").read_text())


def speaker_at(turns: list[list], t: float) -> str:
    """The rule labels follow: the turn covering `t`, else the nearest one."""
    return min(turns, key=lambda turn: max(turn[0] - t, t - turn[1], 0.0))[2]


def cue_words(cues: list[dict], words: list[dict]) -> list[list[dict]]:
    """The words each cue shows: cues and words both in order, spelled alike but for spacing."""
    out, taken = [], 0
    for cue in cues:
        want, got, mine = re.sub(r"\s", "", cue["text"]), "", []
        while len(got) < len(want):
            mine.append(words[taken])
            got += re.sub(r"\s", "", words[taken]["text"])
            taken += 1
        assert got == want, cue
        out.append(mine)
    return out


def check_labels(data: dict, out: Path, truth: list[tuple[float, float, int]]) -> None:
    """The diarization heard the two voices (A first: S1); every word labelled from the turns,
    every cue one speaker's words, and every format says so."""
    turns = data["speaker_turns"]
    assert data["speakers"] == ["S1", "S2"]
    assert [speaker_at(turns, (start + end) / 2) for start, end, _ in truth] == [f"S{v + 1}" for _, _, v in truth]
    words = [w for s in data["segments"] for w in s["words"]]
    assert [w["speaker"] for w in words] == [speaker_at(turns, (w["start"] + w["end"]) / 2) for w in words]
    # Some segment spans a change (the turns' pauses are shorter than --merge-gap).
    assert any(len({w["speaker"] for w in s["words"]}) == 2 for s in data["segments"])
    cues = data["cues"]
    for cue, shown in zip(cues, cue_words(cues, words), strict=True):
        assert {w["speaker"] for w in shown} == {cue["speaker"]}, cue  # a cue never spans two speakers
    assert vtt_voices((out / "talk.vtt").read_text()) == [c["speaker"] for c in cues]
    assert [e.name for e in pysubs2.load(str(out / "talk.ass"))] == [c["speaker"] for c in cues]
    lines = (out / "talk.txt").read_text().splitlines()
    prefixes = [line.split(": ")[0] for line in lines if re.match(r"S\d+: ", line)]
    assert prefixes == changes([w["speaker"] for w in words])  # "S1: " at each change, nowhere else


def changes(speakers: list[str]) -> list[str]:
    """The speaker at each change (the first one included)."""
    return [speaker for i, speaker in enumerate(speakers) if i == 0 or speakers[i - 1] != speaker]


def test_two_voices_labelled_in_every_format_and_kept_on_resume(programme, tmp_path):
    wav, truth = programme
    out = tmp_path / "out"
    first = cli(wav, out, "--speakers", "2", workers=2)
    check_labels(first, out, truth)
    assert "S1:" not in (out / "talk.srt").read_text()  # SRT: only on request

    # A rendering option only: written again from the stored recognition, turns included.
    again = cli(wav, out, "--speakers", "2", "--srt-speaker-prefix")
    assert json.loads((out / "run-report.json").read_text())["files"][0]["reused"] > 0
    assert again["cues"] == first["cues"] and again["speaker_turns"] == first["speaker_turns"]
    srt = pysubs2.load(str(out / "talk.srt"), format_="srt")
    prefixes = [e.plaintext.split(": ")[0] for e in srt if re.match(r"S\d+: ", e.plaintext)]
    assert prefixes == changes([c["speaker"] for c in first["cues"]])

    # Other --speakers: recognised again and labelled anew.
    one = cli(wav, out, "--speakers", "1")
    assert json.loads((out / "run-report.json").read_text())["files"][0]["reused"] == 0
    assert one["speakers"] == ["S1"] and {c["speaker"] for c in one["cues"]} == {"S1"}


def test_whisper_words_labelled_too(programme, tmp_path):
    wav, truth = programme
    data = cli(wav, tmp_path, "--speakers", "auto", engine=("--engine", "whisper", "--model", "tiny.en"))
    assert data["cues"]
    check_labels(data, tmp_path, truth)
