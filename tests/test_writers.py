"""Output writers: every format read back with a real parser, empty results, atomic writes."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pysubs2
import pytest

from fireredasr_fast.cues import CueOptions, build_cues
from fireredasr_fast.results import FileResult, Segment
from fireredasr_fast.textlines import join_lines
from fireredasr_fast.writers import FORMATS, get_writer, output_path, write_result
from testsupport.validate import validate_subtitle_file

SUBTITLE_FORMATS = ("srt", "vtt", "ass")


def make_result() -> FileResult:
    zh = "各位观众大家好欢迎收看今天的新闻联播首先为您介绍今天的主要内容国家主席在人民大会堂会见了外国领导人"
    zh_tokens = list(zh)
    zh_times = [(1.0 + 0.2 * i, 1.18 + 0.2 * i) for i in range(len(zh_tokens))]
    en_pieces = ["▁IT", "▁WAS", "▁THE", "▁BE", "ST", "▁OF", "▁TIMES", "▁IT", "▁WAS", "▁THE", "▁WOR", "ST"]
    segments = [
        Segment(0.8, 10.8, zh, zh_tokens, zh_times),
        Segment(11.5, 15.0, "IT WAS THE BEST OF TIMES IT WAS THE WORST", en_pieces, None),
        Segment(16.0, 18.0, ""),  # VAD speech the model heard nothing in
    ]
    speech = [(1.0, 10.6), (11.7, 14.8), (16.2, 17.5)]
    cues = build_cues(segments, speech, 20.0, CueOptions())
    return FileResult(
        "videos/news.mp4",
        20.0,
        segments,
        cues,
        speech,
        {"engine": "firered", "model": {"name": "FireRedASR-AED-L"}, "elapsed": 1.25},
    )


def empty_result() -> FileResult:
    return FileResult("silence.mkv", 12.5, [], [], [], {"engine": "firered"})


@pytest.mark.parametrize("fmt", SUBTITLE_FORMATS)
def test_subtitles_parse_back_with_same_cues(tmp_path: Path, fmt: str) -> None:
    result = make_result()
    assert len(result.cues) >= 3
    path = tmp_path / f"out.{fmt}"
    get_writer(fmt).write(result, path)
    subs = pysubs2.load(str(path), encoding="utf-8")  # autodetects: the file looks like its format
    assert len(subs) == len(result.cues)
    for event, cue in zip(subs, result.cues, strict=True):
        assert abs(event.start / 1000 - cue.start) <= 0.01
        assert abs(event.end / 1000 - cue.end) <= 0.01
        assert event.plaintext.split("\n") == cue.lines
    assert validate_subtitle_file(path, result.duration, result.speech) == []


@pytest.mark.parametrize("fmt", SUBTITLE_FORMATS)
def test_empty_result_gives_valid_empty_subtitles(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"silence.{fmt}"
    get_writer(fmt).write(empty_result(), path)
    assert path.exists()
    assert len(pysubs2.load(str(path), encoding="utf-8", format_=fmt)) == 0
    assert validate_subtitle_file(path, 12.5) == []


def test_validate_subtitle_file_reports_problems(tmp_path: Path) -> None:
    broken = tmp_path / "bad.srt"
    broken.write_text("1\n00:00:01,000 --> 00:00:09,500\nmuch too long\n\n", encoding="utf-8")
    problems = validate_subtitle_file(broken, 20.0)
    assert len(problems) == 1 and "more than 7.0s" in problems[0]
    garbage = tmp_path / "garbage.ass"
    garbage.write_bytes(b"\xff\xfe not a subtitle")
    assert any("cannot be parsed" in p for p in validate_subtitle_file(garbage, 20.0))


def test_json_has_everything(tmp_path: Path) -> None:
    result = make_result()
    path = tmp_path / "out.json"
    get_writer("json").write(result, path)
    raw = path.read_text(encoding="utf-8")
    assert "各位观众" in raw  # written as UTF-8, not \\u escapes
    data = json.loads(raw)
    assert {"source", "duration", "segments", "cues", "speech", "engine", "model", "elapsed"} <= set(data)
    assert data["source"] == "videos/news.mp4"
    assert data["duration"] == 20.0
    assert data["segments"] == [json.loads(json.dumps(s.to_dict())) for s in result.segments]
    assert [c["text"] for c in data["cues"]] == [c.text for c in result.cues]
    assert all(abs(d["start"] - c.start) < 1e-3 for d, c in zip(data["cues"], result.cues, strict=True))
    assert data["speech"] == [list(r) for r in result.speech]
    assert data["model"] == {"name": "FireRedASR-AED-L"}


def test_json_info_cannot_replace_core_fields_and_odd_values_serialise(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    result = empty_result()
    result.info = {"source": "spoofed", "rtf": np.float32(0.5), "path": Path("/m/model"), "tags": {"b", "a"}}
    data = json.loads(get_writer("json").format(result))
    assert data["source"] == "silence.mkv"
    assert data["rtf"] == 0.5 and data["path"] == "/m/model" and data["tags"] == ["a", "b"]
    assert data["segments"] == [] and data["cues"] == [] and data["speech"] == []


def test_txt_has_one_line_per_segment(tmp_path: Path) -> None:
    result = make_result()
    path = tmp_path / "out.txt"
    get_writer("txt").write(result, path)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines == [s.text for s in result.segments if s.text]
    get_writer("txt").write(empty_result(), path)
    assert path.read_text(encoding="utf-8") == ""


def test_tsv_has_ms_times_and_one_line_texts(tmp_path: Path) -> None:
    result = make_result()
    path = tmp_path / "out.tsv"
    get_writer("tsv").write(result, path)
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()]
    assert rows[0] == ["start", "end", "text"]
    assert len(rows) == len(result.cues) + 1
    for (start, end, text), cue in zip(rows[1:], result.cues, strict=True):
        assert int(start) == round(cue.start * 1000) and int(end) == round(cue.end * 1000)
        assert text == join_lines(cue.lines)
        assert "\n" not in text
    # CJK lines rejoin without spaces, Latin lines with one.
    cjk = next(c for c in result.cues if "各" in c.text)
    latin = next(c for c in result.cues if "WAS" in c.text)
    texts = [text for _, _, text in rows[1:]]
    assert len(cjk.lines) == 2 and "".join(cjk.lines) in texts
    assert len(latin.lines) == 2 and " ".join(latin.lines) in texts


def test_get_writer_and_formats() -> None:
    assert set(FORMATS) == {"srt", "vtt", "ass", "txt", "json", "tsv", "review"}
    for fmt in FORMATS:
        assert get_writer(fmt).extension == ("review.tsv" if fmt == "review" else fmt)
    with pytest.raises(ValueError, match="unknown output format"):
        get_writer("docx")


def test_output_path_mirrors_the_input_layout(tmp_path: Path) -> None:
    assert output_path(tmp_path, "season1/ep01.final.mkv", "srt") == tmp_path / "season1" / "ep01.final.srt"
    assert output_path(tmp_path, "talk.mp4", "json") == tmp_path / "talk.json"
    with pytest.raises(ValueError):
        output_path(tmp_path, "/abs/talk.mp4", "srt")
    with pytest.raises(ValueError):
        output_path(tmp_path, "../talk.mp4", "srt")


def test_write_all_formats_leaves_no_temp_files(tmp_path: Path) -> None:
    paths = write_result(make_result(), tmp_path / "out", "videos/news.mp4", FORMATS)
    folder = tmp_path / "out" / "videos"
    names = [f"news.{get_writer(fmt).extension}" for fmt in FORMATS]
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)
    assert sorted(paths) == sorted(folder / name for name in names)
    assert all(p.stat().st_size > 0 for p in paths)


@pytest.mark.parametrize("failure", ["replace", "write"])
def test_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str) -> None:
    path = tmp_path / "news.srt"
    get_writer("srt").write(make_result(), path)
    before = path.read_bytes()

    def no_space(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    if failure == "replace":
        monkeypatch.setattr(os, "replace", no_space)
    else:
        # The disk fills while the temporary file is being written.
        real_fdopen = os.fdopen

        def fdopen_failing(fd: int, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
            f = real_fdopen(fd, *args, **kwargs)  # type: ignore[arg-type]
            f.write = no_space  # type: ignore[method-assign]
            return f

        monkeypatch.setattr(os, "fdopen", fdopen_failing)
    with pytest.raises(OSError) as info:
        get_writer("srt").write(empty_result(), path)
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["news.srt"]


@pytest.mark.parametrize("fmt", SUBTITLE_FORMATS)
def test_markup_characters_stay_visible(tmp_path: Path, fmt: str) -> None:
    # Braces, angle brackets and backslashes are markup to subtitle readers; none of the text may vanish.
    cue_lines = ["a {b} c", r"x < y > z C:\new"]
    result = FileResult("a.mp4", 10.0, [], [], [])
    result.cues = build_cues([Segment(1.0, 3.0, " ".join(cue_lines))], [(1.0, 3.0)], 10.0, CueOptions(max_lines=3))
    path = tmp_path / f"odd.{fmt}"
    get_writer(fmt).write(result, path)
    (event,) = pysubs2.load(str(path), encoding="utf-8", format_=fmt)
    shown = event.plaintext.replace("\n", " ")
    assert shown.split() == "a (b) c x ‹ y › z C:∖new".split()
