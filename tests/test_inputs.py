"""Input discovery: folders mirrored, globs, media-only, symlink loops, clashing names."""

from __future__ import annotations

import os
from pathlib import Path

from fireredasr_fast.inputs import collect_inputs
from fireredasr_fast.writers import output_path


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_folder_is_searched_recursively_for_media_only(tmp_path: Path):
    touch(tmp_path / "a.mp4")
    touch(tmp_path / "sub" / "深" / "b.MKV")
    touch(tmp_path / "notes.txt")
    touch(tmp_path / ".hidden.mp4")
    files, problems = collect_inputs([str(tmp_path)])
    assert problems == []
    assert [f.relative.as_posix() for f in files] == ["a.mp4", "sub/深/b.MKV"]


def test_globs_files_and_missing_inputs(tmp_path: Path):
    touch(tmp_path / "x1.wav")
    touch(tmp_path / "x2.wav")
    touch(tmp_path / "odd.name")  # named explicitly: taken, ffmpeg decides
    files, problems = collect_inputs([str(tmp_path / "x*.wav"), str(tmp_path / "odd.name"), str(tmp_path / "none.mp4")])
    assert [f.path.name for f in files] == ["x1.wav", "x2.wav", "odd.name"]
    assert len(problems) == 1 and "none.mp4" in problems[0]


def test_duplicates_are_taken_once(tmp_path: Path):
    touch(tmp_path / "a.mp4")
    files, _ = collect_inputs([str(tmp_path), str(tmp_path / "a.mp4")])
    assert len(files) == 1


def test_symlink_loop_is_cut(tmp_path: Path):
    touch(tmp_path / "root" / "a.mp4")
    os.symlink(tmp_path / "root", tmp_path / "root" / "loop")
    files, problems = collect_inputs([str(tmp_path / "root")])
    assert [f.relative.as_posix() for f in files] == ["a.mp4"] and problems == []


def test_inputs_that_would_share_outputs_keep_their_extension(tmp_path: Path):
    touch(tmp_path / "talk.mp4")
    touch(tmp_path / "talk.mkv")
    touch(tmp_path / "other.mp4")
    files, _ = collect_inputs([str(tmp_path)])
    names = sorted(output_path(tmp_path / "out", f.output_name, "srt").name for f in files)
    assert names == ["other.srt", "talk.mkv.srt", "talk.mp4.srt"]
