"""Speaker labels (issue 31, `--speakers`) carried from the turns to segments, words, cues and
every output format: a cue never spans two speakers, the formats say who speaks as each one
can (JSON, VTT voice spans, ASS Name, TXT and, on request, SRT prefixes), and without turns
nothing changes.

The turns and the hypotheses (with token times) are the seams here: the diarization
(speakers.py) and the engines are tested on their own; the two-voice programme through the CLI
is in test_speaker_runs.py.
"""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pysubs2
import pytest

from fireredasr_fast.cues import build_cues
from fireredasr_fast.results import SAMPLE_RATE, Hypothesis, Segment
from fireredasr_fast.runner.settings import RunSettings
from fireredasr_fast.runner.store import Recognition
from fireredasr_fast.speakers import DOUBTFUL_SPEAKER, SpeakerOptions
from fireredasr_fast.transcribe import PreparedFile, TranscribeOptions, assemble_result
from fireredasr_fast.vad import SpeechSegment
from fireredasr_fast.writers import WriterOptions, get_writer

# Two people: A says the first sentence, B answers, A again. B's answer starts inside the first
# segment with neither a pause nor punctuation between them, so that segment spans a change
# of speaker that nothing but the labels would cut a cue at.
WORDS = [
    ("first", "A"), ("we", "A"), ("met", "A"), ("today", "A"),
    ("yes", "B"), ("we", "B"), ("did", "B"), ("indeed.", "B"),
    ("then", "A"), ("goodbye.", "A"),
]  # fmt: skip
WORD_SECONDS = 0.4
SEGMENTS = [(1.0, 4.2, WORDS[:8]), (5.0, 5.8, WORDS[8:])]
TURNS = [(1.0, 2.6, "S1"), (2.6, 4.2, "S2"), (5.0, 5.8, "S1")]
DURATION = 7.0


def hypotheses() -> list[Hypothesis]:
    """What an engine gives for SEGMENTS: spaced word tokens with times relative to the segment."""
    out = []
    for _, _, words in SEGMENTS:
        tokens = [" " + text for text, _ in words]
        times = [(i * WORD_SECONDS, (i + 1) * WORD_SECONDS) for i in range(len(words))]
        out.append(Hypothesis(" ".join(t for t, _ in words), tokens, token_times=times))
    return out


def prepared(turns: list[tuple[float, float, str]] | None) -> PreparedFile:
    speech = [(start, end) for start, end, _ in SEGMENTS]
    return PreparedFile(
        "talk.wav",
        np.zeros(round(DURATION * SAMPLE_RATE), dtype=np.int16),
        [SpeechSegment(start, end, [(start, end)]) for start, end in speech],
        speech,
        turns=turns,
    )


def speaker_of(word: str) -> str:
    """The true speaker label of a word of WORDS (A speaks first: S1)."""
    voices = {text.rstrip("."): voice for text, voice in WORDS if text != "we"}
    return {"A": "S1", "B": "S2"}[voices[word.rstrip(".")]]


def test_cues_never_span_two_speakers_and_segments_carry_word_labels():
    result = assemble_result(prepared(TURNS), hypotheses(), TranscribeOptions())
    assert result.cues
    for cue in result.cues:
        words = [w for w in cue.text.split() if w != "we"]
        assert {speaker_of(w) for w in words} == {cue.speaker}, cue
    assert [c.speaker for c in result.cues] == ["S1", "S2", "S1"]
    first = result.segments[0]
    assert [w.speaker for w in first.words] == ["S1"] * 4 + ["S2"] * 4
    assert first.speaker == "S1"  # a tie in time: the one heard first
    assert result.segments[1].speaker == "S1"
    # Without turns the first segment's words make one cue (the change is what splits it).
    unlabelled = assemble_result(prepared(None), hypotheses(), TranscribeOptions())
    assert len(unlabelled.cues) == 2 and all(c.speaker is None for c in unlabelled.cues)


def test_words_in_a_gap_between_turns_take_the_nearest_turns_speaker():
    """The diarization's turns need not cover every word (real AMI cues hit this): "today"
    (2.2-2.6 s) lies in the gap 2.3-2.7 s, nearer S1's end; words before the first turn and
    after the last take those turns' speakers."""
    gappy = [(1.3, 2.3, "S1"), (2.7, 4.0, "S2"), (5.0, 5.5, "S1")]
    result = assemble_result(prepared(gappy), hypotheses(), TranscribeOptions(speakers=SpeakerOptions()))
    assert [w.speaker for w in result.segments[0].words] == ["S1"] * 4 + ["S2"] * 4
    assert [w.speaker for w in result.segments[1].words] == ["S1", "S1"]
    assert [c.speaker for c in result.cues] == ["S1", "S2", "S1"]


def test_one_speaker_gives_the_same_cues_as_no_labels():
    one = [(0.0, DURATION, "S1")]
    segments = [
        Segment(start, end, h.text, h.tokens, [(start + a, start + b) for a, b in h.token_times])
        for (start, end, _), h in zip(SEGMENTS, hypotheses(), strict=True)
    ]
    speech = [(start, end) for start, end, _ in SEGMENTS]
    plain = build_cues(segments, speech, DURATION)
    labelled = build_cues(segments, speech, DURATION, turns=one)
    assert [dataclasses.replace(c, speaker=None) for c in labelled] == plain
    assert {c.speaker for c in labelled} == {"S1"}


def vtt_voices(text: str) -> list[str | None]:
    """Each WebVTT cue's voice (the `<v NAME>` span its payload opens with), in order."""
    voices = []
    for block in text.split("\n\n"):
        lines = block.strip().splitlines()
        timing = next((i for i, line in enumerate(lines) if "-->" in line), None)
        if timing is not None:
            match = re.match(r"<v ([^>]+)>", lines[timing + 1])
            voices.append(match[1] if match else None)
    return voices


def formatted(result, fmt: str, options: WriterOptions | None = None) -> str:
    return get_writer(fmt, options).format(result)


def test_every_format_says_who_speaks():
    result = assemble_result(prepared(TURNS), hypotheses(), TranscribeOptions())
    vtt = formatted(result, "vtt")
    assert vtt_voices(vtt) == ["S1", "S2", "S1"]
    assert len(pysubs2.SSAFile.from_string(vtt, format_="vtt")) == 3  # still a WebVTT file readers take
    ass = pysubs2.SSAFile.from_string(formatted(result, "ass"), format_="ass")
    assert [e.name for e in ass] == ["S1", "S2", "S1"]
    txt = formatted(result, "txt").splitlines()
    assert txt == ["S1: first we met today", "S2: yes we did indeed.", "S1: then goodbye."]
    srt = formatted(result, "srt")
    assert "S1:" not in srt and "<v" not in srt  # SRT names speakers only on request
    prefixed = pysubs2.SSAFile.from_string(formatted(result, "srt", WriterOptions(True)), format_="srt")
    assert [e.plaintext.split(":")[0] for e in prefixed] == ["S1", "S2", "S1"]
    data = json.loads(formatted(result, "json"))
    assert data["speakers"] == ["S1", "S2"]
    assert data["speaker_turns"] == [list(t) for t in TURNS]
    assert [c["speaker"] for c in data["cues"]] == ["S1", "S2", "S1"]
    assert [s["speaker"] for s in data["segments"]] == ["S1", "S1"]
    assert [w["speaker"] for w in data["segments"][0]["words"]] == ["S1"] * 4 + ["S2"] * 4
    assert "".join(w["text"] for w in data["segments"][0]["words"]).strip() == data["segments"][0]["text"]


def test_cues_in_a_very_short_turn_reach_the_review_list_and_overlaps_reach_the_json():
    """The last S1 turn (0.8 s) is under doubt_turn: its cue is listed, reason `speaker`; the
    others are not. Turns of at least overlap_turn seconds touching at a change get the other
    speaker around it in `speaker_overlaps` (TURNS' 1.6 s turns are under the default 3 s)."""
    result = assemble_result(prepared(TURNS), hypotheses(), TranscribeOptions(speakers=SpeakerOptions()))
    assert [DOUBTFUL_SPEAKER in c.flags for c in result.cues] == [False, False, True]
    review = formatted(result, "review").splitlines()[1:]
    assert [row.split("\t")[3] for row in review] == [DOUBTFUL_SPEAKER]
    assert review[0].split("\t")[4] == "then goodbye."
    data = json.loads(formatted(result, "json"))
    assert [c["flags"] for c in data["cues"]] == [[], [], [DOUBTFUL_SPEAKER]]
    assert data["speaker_overlaps"] == []
    wider = SpeakerOptions(overlap=1.0, overlap_turn=1.5, doubt_turn=0.5)
    result = assemble_result(prepared(TURNS), hypotheses(), TranscribeOptions(speakers=wider))
    assert all(not c.flags for c in result.cues)
    # Around the change at 2.6 s: S2 from 1.6 s on (its turn's start is 1.0 s), S1 up to 3.6 s.
    assert json.loads(formatted(result, "json"))["speaker_overlaps"] == [[1.6, 2.6, "S2"], [2.6, 3.6, "S1"]]
    # Segments, words and cues keep one speaker each, as without overlaps.
    assert [c.speaker for c in result.cues] == ["S1", "S2", "S1"]


def test_txt_prefix_only_where_the_speaker_changes():
    turns = [(1.0, 4.2, "S1"), (5.0, 5.8, "S1")]
    result = assemble_result(prepared(turns), hypotheses(), TranscribeOptions())
    assert formatted(result, "txt").splitlines() == ["S1: first we met today yes we did indeed.", "then goodbye."]


def test_without_turns_no_output_names_a_speaker():
    result = assemble_result(prepared(None), hypotheses(), TranscribeOptions())
    for fmt in ("srt", "vtt", "ass", "txt", "tsv"):
        text = formatted(result, fmt, WriterOptions(True))
        assert "S1" not in text and "<v" not in text, fmt
    data = json.loads(formatted(result, "json"))
    assert "speakers" not in data and "speaker_turns" not in data and "speaker_overlaps" not in data
    assert all(not c["flags"] for c in data["cues"])
    assert all("speaker" not in c for c in data["cues"]) and all("words" not in s for s in data["segments"])
    assert all(e.name == "" for e in pysubs2.SSAFile.from_string(formatted(result, "ass"), format_="ass"))


def test_store_keeps_the_turns_and_reads_stores_without_them():
    recognition = Recognition.of(prepared(TURNS), hypotheses())
    assert recognition.turns == TURNS
    again = Recognition.from_dict(json.loads(json.dumps(recognition.to_dict())))
    assert again.turns == TURNS
    relabelled = assemble_result(again, again.hypotheses, TranscribeOptions())
    assert [c.speaker for c in relabelled.cues] == ["S1", "S2", "S1"]
    older = recognition.to_dict()
    del older["turns"]  # a store written before speaker labels
    assert Recognition.from_dict(older).turns is None


@pytest.mark.parametrize("speakers", ["auto", 2])
def test_speakers_enter_the_recognition_fingerprint_only_when_on(speakers, random_model_dir):
    from fireredasr_fast.engines import EngineSpec
    from fireredasr_fast.engines.firered.options import FireRedOptions

    spec = EngineSpec("firered", str(random_model_dir), FireRedOptions())
    off = RunSettings.build(spec, TranscribeOptions(), ("srt",))
    assert off == RunSettings.build(spec, TranscribeOptions(speakers=None), ("srt",))
    on = RunSettings.build(spec, TranscribeOptions(speakers=SpeakerOptions(speakers)), ("srt",))
    assert "speakers" not in off.recognition and on.recognition["speakers"]["speakers"] == speakers
    assert on.rendering == off.rendering
    prefix = RunSettings.build(spec, TranscribeOptions(writer=WriterOptions(True)), ("srt",))
    assert prefix.recognition == off.recognition and prefix.rendering != off.rendering


@pytest.mark.parametrize(
    ("extra", "flag"),
    [
        (["--speakers", "0"], "--speakers"),
        (["--speakers", "two"], "--speakers"),
        (["--speakers", "-2"], "--speakers"),
        (["--speakers", "1.5"], "--speakers"),
        (["--srt-speaker-prefix"], "--srt-speaker-prefix"),
    ],
)
def test_bad_speaker_option_is_one_line_naming_it(extra, flag, tmp_path, capsys):
    from test_faults_options import INPUTS, TINY_MODEL, main_code, one_error_line

    out = tmp_path / "out"
    assert main_code([*extra, "--model-dir", str(TINY_MODEL), "-o", str(out), INPUTS]) == 2
    assert one_error_line(capsys).startswith(f"error: {flag} ")
    assert not out.exists()


def test_the_doctor_checks_the_voice_encoder_when_speakers_are_asked_for(tmp_path):
    from fireredasr_fast.doctor import OK, run_checks
    from fireredasr_fast.engines import EngineSpec

    def checks(*extra: str) -> dict:
        args = cli_args("--engine", "whisper", "--model", "tiny.en", "-o", str(tmp_path), *extra)
        found = run_checks(args, lambda: EngineSpec("whisper", None, "tiny.en"), lambda spec: True)
        return {check.name: check for check in found}

    assert "speakers" not in checks()
    found = checks("--speakers", "auto")["speakers"]
    assert found.status == OK and found.detail.endswith("pretrained.pt")


def cli_args(*argv: str):
    from fireredasr_fast import cli

    return cli.build_parser().parse_args(list(argv))
