"""Fault catalogue, file system part: file names, output collisions, the output folder's lock,
the journal's shapes and failed writes, a full disk (docs/reliability.md, "File system").

Runs go through the real CLI in this process (--workers 0, the random tiny model, a 3 s clip),
with real files, real symbolic links, a real second process holding the lock, and a real small
tmpfs for the full disk (skipped where it cannot be mounted)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, SAMPLES, run_ffmpeg
from runs import env, wait_for
from test_writers import make_result

from fireredasr_fast import cli
from fireredasr_fast.fsutil import display_name, json_text
from fireredasr_fast.inputs import InputFile, collect_inputs, output_clashes
from fireredasr_fast.runner.journal import JOURNAL_NAME, REPORT_NAME, FileRecord, Journal
from fireredasr_fast.runner.lock import LOCK_NAME, output_folder_lock
from fireredasr_fast.writers import output_path, write_result

FORMATS = ("srt", "vtt", "txt", "json")
BAD_NAME = os.fsdecode(b"caf\xe9 \xff.mkv")  # Latin-1 bytes: not UTF-8


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "clip.mkv"
    run_ffmpeg("-i", str(SAMPLES / "aishell_zh.mkv"), "-t", "3", "-c", "copy", str(path))
    return path


def transcribe(model: Path, out: Path, *inputs: Path | str, extra: tuple[str, ...] = ()) -> int:
    """One run of the CLI in this process."""
    args = ["--model-dir", str(model), "--workers", "0", "--threads-per-worker", "1", "--no-progress"]
    return cli.main([*args, "--formats", ",".join(FORMATS), "-o", str(out), *extra, "--", *map(str, inputs)])


def report(out: Path) -> dict[str, dict]:
    return {f["relative"]: f for f in json.loads((out / REPORT_NAME).read_text(encoding="utf-8"))["files"]}


def copy(clip: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(clip, target)
    return target


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def temporaries(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.name.endswith(".tmp")]


# ---------------------------------------------------------------- names


@pytest.mark.parametrize(
    "raw", [b"caf\xe9.mkv", b"\xff\xfe.mkv", b"\xed\xa0\x80.mkv", "字幕 测试.mkv".encode(), b"a\nb\x1b.mkv"]
)
def test_json_text_keeps_any_name_and_is_utf8(raw: bytes):
    name = os.fsdecode(raw)
    text = json_text({"name": name})
    text.encode("utf-8")  # strict: what the journal and report write
    assert os.fsencode(json.loads(text)["name"]) == raw


def test_display_name_is_one_escaped_line():
    shown = display_name(os.fsdecode(b"a\nb\x1b[31m\xff\xe9.mkv"))
    assert shown == "a\\nb\\x1b[31m\\xff\\xe9.mkv"
    assert display_name("字幕.mkv") == "字幕.mkv"


def test_journal_keeps_names_that_are_not_utf8(tmp_path: Path):
    journal = Journal(tmp_path)
    journal.update(FileRecord(BAD_NAME, str(tmp_path / BAD_NAME), "done", "fp", outputs=["x.srt"]))
    again = Journal(tmp_path)
    assert list(again.records) == [BAD_NAME]
    assert os.fsencode(again.records[BAD_NAME].source) == os.fsencode(str(tmp_path / BAD_NAME))


def test_a_name_that_is_not_utf8_is_transcribed_and_resumed(random_model_dir, clip, tmp_path, capsys):
    source = tmp_path / "in"
    copy(clip, source / BAD_NAME)
    copy(clip, source / "good.mkv")
    out = tmp_path / "out"
    assert transcribe(random_model_dir, out, source) == 0
    stem = os.fsencode(BAD_NAME)[: -len(b".mkv")]
    for fmt in FORMATS:  # outputs under the same bytes
        assert os.path.isfile(os.fsencode(out) + b"/" + stem + f".{fmt}".encode())
    files = report(out)
    assert files[BAD_NAME]["status"] == "done" and files[BAD_NAME]["display"] == "caf\\xe9 \\xff.mkv"
    assert "caf\\xe9 \\xff.mkv" in capsys.readouterr().out  # the closing table, escaped
    assert transcribe(random_model_dir, out, source) == 0
    assert {f["status"] for f in report(out).values()} == {"skipped"}  # the journal kept the name


def test_symlink_loops_are_skipped_with_a_warning(tmp_path: Path, caplog):
    folder = tmp_path / "folder"
    (folder / "real.mkv").parent.mkdir()
    (folder / "real.mkv").write_bytes(b"x")
    os.symlink("self.mp4", folder / "self.mp4")  # a self-loop
    os.symlink("b.mp4", tmp_path / "a.mp4")  # a -> b -> a
    os.symlink("a.mp4", tmp_path / "b.mp4")
    files, problems = collect_inputs([str(folder), str(tmp_path / "a.mp4")])
    assert [f.relative.as_posix() for f in files] == ["real.mkv"] and problems == []
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2 and all("loop of symbolic links" in w for w in warnings)


# ---------------------------------------------------------------- output collisions


def outputs_of(files: list[InputFile]) -> dict[str, str]:
    return {output_path("", f.output_name, "srt").as_posix(): f.path.parent.name for f in files}


@pytest.mark.parametrize("reverse", [False, True], ids=["d1-first", "d2-first"])
def test_same_name_in_two_folders_goes_to_their_folders_whatever_the_order(tmp_path: Path, reverse: bool):
    paths = [str(touch(tmp_path / d / "clip.mkv")) for d in ("d1", "d2")]
    files, _ = collect_inputs(paths[::-1] if reverse else paths)
    assert outputs_of(files) == {"d1/clip.srt": "d1", "d2/clip.srt": "d2"}
    assert sorted(f.relative.as_posix() for f in files) == ["d1/clip.mkv", "d2/clip.mkv"]
    assert output_clashes(files, FORMATS) == []


def test_two_folders_with_the_same_layout_are_mirrored_under_their_names(tmp_path: Path):
    for root in ("a/x", "b/x", "c/y"):
        touch(tmp_path / root / "sub" / "clip.mkv")
    files, _ = collect_inputs([str(tmp_path / r) for r in ("c/y", "b/x", "a/x")])
    names = sorted(output_path("", f.output_name, "srt").as_posix() for f in files)
    assert names == ["a/x/sub/clip.srt", "b/x/sub/clip.srt", "c/y/sub/clip.srt"]


def test_same_stem_and_same_name_together(tmp_path: Path):
    for name in ("d1/clip.mkv", "d2/clip.mkv", "d2/clip.mp4"):
        touch(tmp_path / name)
    first, _ = collect_inputs([str(tmp_path / "d1"), str(tmp_path / "d2")])
    second, _ = collect_inputs([str(tmp_path / "d2"), str(tmp_path / "d1")])
    assert outputs_of(first) == outputs_of(second) and len(outputs_of(first)) == 3
    assert output_clashes(first, FORMATS) == []


@pytest.mark.parametrize(
    "names, formats",
    [
        (["run-report.mkv"], ("json",)),  # would replace the run's report
        ([".fireredasr-fast-journal.mp4"], ("json",)),  # would replace the journal
        (["clip.mkv", "clip.review.mkv"], ("tsv", "review")),  # clip.review.tsv twice
    ],
    ids=["report", "journal", "review-tsv"],
)
def test_clashes_that_cannot_be_told_apart_are_found(tmp_path: Path, names, formats):
    files = [InputFile(touch(tmp_path / n), Path(n)) for n in names]
    clashes = output_clashes(files, formats, (JOURNAL_NAME, REPORT_NAME, LOCK_NAME))
    assert len(clashes) == 1


def test_run_refuses_clashing_outputs_before_any_work(random_model_dir, clip, tmp_path, capsys):
    source = copy(clip, tmp_path / "run-report.mkv")
    out = tmp_path / "out"
    assert transcribe(random_model_dir, out, source, extra=("--formats", "json")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "run-report.json" in err[-1] and "overwrite" in err[-1]
    assert not (out / REPORT_NAME).exists() and not (out / JOURNAL_NAME).exists()


def test_same_name_in_two_folders_both_transcribed_and_no_flip_on_rerun(random_model_dir, clip, tmp_path):
    a, b = copy(clip, tmp_path / "d1" / "clip.mkv"), copy(clip, tmp_path / "d2" / "clip.mkv")
    run_ffmpeg("-i", str(clip), "-t", "2", "-c", "copy", str(b))  # a different file
    out = tmp_path / "out"
    assert transcribe(random_model_dir, out, a, b) == 0
    first = {p: (out / p).read_bytes() for p in ("d1/clip.json", "d2/clip.json")}
    assert json.loads(first["d1/clip.json"])["duration"] != json.loads(first["d2/clip.json"])["duration"]
    assert transcribe(random_model_dir, out, b, a) == 0  # the other order: the same names, skipped
    assert {f["status"] for f in report(out).values()} == {"skipped"}
    assert {p: (out / p).read_bytes() for p in first} == first
    assert not (out / "clip.json").exists()


# ---------------------------------------------------------------- one run per output folder


@contextlib.contextmanager
def lock_held_by_another_process(out: Path) -> Iterator[subprocess.Popen]:
    code = (
        "import sys, time; from pathlib import Path; from fireredasr_fast.runner.lock import output_folder_lock\n"
        "with output_folder_lock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(600)"
    )
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)], env=env(), stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_second_run_on_one_folder_exits_2_naming_the_holder(random_model_dir, clip, tmp_path, capsys):
    out = tmp_path / "out"
    with lock_held_by_another_process(out) as holder:
        assert transcribe(random_model_dir, out, clip) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"pid {holder.pid} on {socket.gethostname()}" in err and "another run" in err
    assert not (out / JOURNAL_NAME).exists() and not list(out.glob("clip.*"))


def test_lock_of_a_killed_run_is_taken_over(random_model_dir, clip, tmp_path, caplog):
    out = tmp_path / "out"
    with lock_held_by_another_process(out) as holder:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        assert transcribe(random_model_dir, out, clip) == 0
    assert f"taking over the lock of a run that was killed (pid {holder.pid}" in caplog.text
    assert report(out)["clip.mkv"]["status"] == "done"
    with output_folder_lock(out):  # released at the end, and marked as released
        pass
    assert caplog.text.count("taking over") == 1


def test_a_real_second_run_while_one_runs_is_refused(random_model_dir, clip, tmp_path, capsys):
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "long_video_transcribe.py"), "--model-dir", str(random_model_dir)]
    first = subprocess.Popen([*cmd, "--workers", "0", "--no-progress", "-o", str(out), str(clip)], env=env())
    try:  # stopped while it holds the lock, so it cannot finish before the second run looks
        wait_for(lambda: (out / LOCK_NAME).is_file() and (out / LOCK_NAME).stat().st_size > 0)
        first.send_signal(signal.SIGSTOP)
        assert transcribe(random_model_dir, out, clip) == 2
    finally:
        first.send_signal(signal.SIGCONT)
    assert first.wait(timeout=300) == 0
    assert f"pid {first.pid}" in capsys.readouterr().err
    assert report(out)["clip.mkv"]["status"] == "done"


# ---------------------------------------------------------------- the journal


MALFORMED = {
    "list": b"[]",
    "null": b"null",
    "files-not-a-list": b'{"version": 1, "files": 3}',
    "garbage": b"\x00\x01garbage{",
    "truncated": b'{"version": 1, "files": [{"relative": "a.mkv", "sour',
    "not-utf8": b'{"files": ["\xff"]}',
    "record-of-wrong-shape": b'{"version": 1, "files": [{"relative": 1, "source": "a", "status": "done"}]}',
    "record-not-an-object": b'{"version": 1, "files": ["a.mkv"]}',
    "unknown-status": b'{"version": 1, "files": [{"relative": "a", "source": "a", "status": "maybe"}]}',
}


@pytest.mark.parametrize("content", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_journal_is_moved_aside_with_one_warning(tmp_path: Path, content: bytes, caplog):
    (tmp_path / JOURNAL_NAME).write_bytes(content)
    journal = Journal(tmp_path)
    assert journal.records == {}
    aside = list(tmp_path.glob(f"{JOURNAL_NAME}.bad-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == content
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "malformed journal" in warnings[0] and "\n" not in warnings[0]
    journal.update(FileRecord("b.mkv", "b.mkv", "done"))  # and the run goes on with a new one
    assert list(Journal(tmp_path).records) == ["b.mkv"]


def test_valid_records_of_a_malformed_journal_are_kept(tmp_path: Path):
    good = {"relative": "a.mkv", "source": "/x/a.mkv", "status": "done", "outputs": ["a.srt"], "future_field": 1}
    bad = {"relative": "b.mkv", "source": "/x/b.mkv", "status": "done", "outputs": [3]}
    (tmp_path / JOURNAL_NAME).write_text(json.dumps({"version": 1, "files": [good, bad]}))
    assert list(Journal(tmp_path).records) == ["a.mkv"]  # a newer release's field is no fault
    assert len(list(tmp_path.glob(f"{JOURNAL_NAME}.bad-*"))) == 1


def test_a_malformed_journal_does_not_stop_the_run(random_model_dir, clip, tmp_path, caplog):
    out = tmp_path / "out"
    out.mkdir()
    (out / JOURNAL_NAME).write_text("null")
    assert transcribe(random_model_dir, out, clip) == 0
    assert report(out)["clip.mkv"]["status"] == "done"
    assert len(list(out.glob(f"{JOURNAL_NAME}.bad-*"))) == 1 and "malformed journal" in caplog.text


def test_journal_that_cannot_be_written_fails_the_file_not_the_run(random_model_dir, clip, tmp_path, caplog):
    out = tmp_path / "out"
    (out / JOURNAL_NAME).mkdir(parents=True)  # a directory in its place
    second = copy(clip, tmp_path / "in" / "other.mkv")
    assert transcribe(random_model_dir, out, clip, second) == 1
    files = report(out)  # the report is still written
    assert {f["status"] for f in files.values()} == {"failed"}
    assert all("cannot write the journal" in f["error"] for f in files.values())
    assert caplog.text.count("cannot write the journal") == 3  # each file, then the end of the run, once
    assert not temporaries(out)


# ---------------------------------------------------------------- outputs all or none, a full disk


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small-disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def big_result():
    result = make_result()
    result.segments = result.segments * 200  # a JSON of ~300 kB: more than the disk holds
    return result


def test_full_disk_leaves_the_earlier_outputs_whole_and_no_new_format(small_disk: Path):
    old = write_result(make_result(), small_disk, "news.mp4", ("srt", "txt"))
    before = {p: p.read_bytes() for p in old}
    with pytest.raises(OSError):
        write_result(big_result(), small_disk, "news.mp4", ("srt", "txt", "vtt", "json"))
    assert {p: p.read_bytes() for p in old} == before
    assert sorted(p.name for p in small_disk.iterdir()) == ["news.srt", "news.txt"]


def test_a_directory_where_one_output_goes_changes_none(tmp_path: Path):
    old = write_result(make_result(), tmp_path, "news.mp4", ("srt", "txt"))
    before = {p: p.read_bytes() for p in old}
    (tmp_path / "news.vtt").mkdir()
    result = make_result()
    result.segments = result.segments[:1]
    with pytest.raises(IsADirectoryError):
        write_result(result, tmp_path, "news.mp4", ("srt", "txt", "vtt"))
    assert {p: p.read_bytes() for p in old} == before and not temporaries(tmp_path)


# tmpfs counts 4 KiB pages: 16 on this disk, 4 filled. The file finished first takes 7 (4
# outputs, the journal, its stored recognition, its partial store until the outputs are written),
# the other's stores 2 of the rest, leaving the report its page and its 4 outputs too little room.
# Which file finishes first is the front end's business (it may prepare both at once).
FILLER_PAGES = 4


def test_full_disk_in_a_run_each_file_all_or_nothing(random_model_dir, clip, small_disk, caplog):
    source = small_disk.parent / "in"
    copy(clip, source / "a.mkv")
    copy(clip, source / "b.mkv")
    (small_disk / "filler").write_bytes(b"\0" * FILLER_PAGES * 4096)
    assert transcribe(random_model_dir, small_disk, source) == 1
    files = report(small_disk)
    done, failed = sorted(("a", "b"), key=lambda stem: files[f"{stem}.mkv"]["status"] != "done")
    assert files[f"{done}.mkv"]["status"] == "done" and files[f"{failed}.mkv"]["status"] == "failed"
    assert [(small_disk / f"{done}.{fmt}").exists() for fmt in FORMATS] == [True] * len(FORMATS)
    assert not list(small_disk.glob(f"{failed}.*")) and not temporaries(small_disk)
    assert "No space left on device" in files[f"{failed}.mkv"]["error"] and f"{failed}.mkv" in caplog.text
