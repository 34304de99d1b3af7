"""Fault catalogue: resume inside a file and re-rendering without recognising again (issue 29,
docs/reliability.md). Real runs of the CLI on the tiny trained model: a run killed
with SIGKILL mid-file, stores torn, stale, foreign or unwritable, and settings changed between
runs. Each case checks what the run report counts (segments recognised by the workers, taken
from the stores, files rewritten from their stored recognition) and the bytes written."""

from __future__ import annotations

import gzip
import json
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES, ROOT, SAMPLES, run_ffmpeg
from runs import env, wait_for

from fireredasr_fast import cli
from fireredasr_fast.results import Hypothesis
from fireredasr_fast.runner.store import STORE_DIR, hypothesis_from_dict, hypothesis_to_dict, normalised

TINY_MODEL = FIXTURES / "tiny_model"
# Short segments and batches: a file of many batches, so a run can be killed inside it.
RECOGNITION = ("--model-dir", str(TINY_MODEL), "--max-segment", "8", "--batch-seconds", "10")
FORMATS = ("--formats", "srt,vtt,txt,json")
TEXT_FORMATS = (".srt", ".vtt", ".txt", ".tsv", ".ass")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """89 s of English speech (the sample twice), one file of about a dozen segments."""
    path = tmp_path_factory.mktemp("media") / "talk.wav"
    run_ffmpeg("-stream_loop", "1", "-i", str(SAMPLES / "two_cities.mp4"), "-vn", "-ac", "1", "-ar", "16000", str(path))
    return path


def run(out: Path, clip: Path, *extra: str) -> dict:
    """One run in this process (no worker processes), returning the run report's summary."""
    options = ("--workers", "0", "--threads-per-worker", "1", "--no-progress", *extra)
    code = cli.main([*RECOGNITION, *FORMATS, *options, "-o", str(out), str(clip)])
    assert code == 0
    return json.loads((out / "run-report.json").read_text(encoding="utf-8"))["summary"]


@pytest.fixture(scope="module")
def baseline(clip: Path, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("baseline")
    return out, run(out, clip)


def texts(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.suffix in TEXT_FORMATS}


def json_outputs(out: Path) -> dict[str, dict]:
    found = {}
    for path in sorted(out.glob("*.json")):
        if path.name != "run-report.json" and not path.name.startswith("."):
            data = json.loads(path.read_text(encoding="utf-8"))
            data.pop("timings")  # the only field that differs run to run
            found[path.name] = data
    return found


def assert_same_outputs(out: Path, expected: Path) -> None:
    assert texts(out) == texts(expected)
    assert json_outputs(out) == json_outputs(expected)


def partial_store(out: Path, clip: Path) -> Path:
    return out / STORE_DIR / f"{clip.name}.partial.jsonl"


def recognition_store(out: Path, clip: Path) -> Path:
    return out / STORE_DIR / f"{clip.name}.recognition.json.gz"


def stored_entries(path: Path) -> list[dict]:
    entries = []
    for line in path.read_bytes().split(b"\n")[1:]:
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue  # a torn line
    return entries


def interrupted_copy(baseline: tuple[Path, dict], clip: Path, target: Path, keep: int) -> Path:
    """An output folder as a run killed after `keep` segments leaves it: the journal, no
    outputs, a partial store of those segments (the baseline's own hypotheses, as stored)."""
    out, _ = baseline
    target.mkdir()
    stored = json.loads(gzip.decompress(recognition_store(out, clip).read_bytes()))
    header = {k: stored[k] for k in ("version", "recognition", "source")}
    lines = [json.dumps(header)]
    segments, hypotheses = stored["file"]["segments"], stored["file"]["hypotheses"]
    for i, ((start, end, _), hyp) in enumerate(zip(segments[:keep], hypotheses[:keep], strict=True)):
        lines.append(json.dumps({"i": i, "start": round(start * 16000), "end": round(end * 16000), "hyp": hyp}))
    partial_store(target, clip).parent.mkdir()
    partial_store(target, clip).write_text("".join(line + "\n" for line in lines))
    return target


def segments_of(summary: dict) -> int:
    return summary["segments_recognised"] + summary["segments_reused"]


# -- resume inside a file


def test_killed_mid_file_resumes_from_its_finished_segments(clip, baseline, tmp_path):
    """SIGKILL of the main process once segments are stored; the rerun recognises only the
    rest, reuses every stored one (the VAD gives the same segments again), and writes the
    uninterrupted run's bytes."""
    out = tmp_path / "out"
    command = [sys.executable, str(ROOT / "long_video_transcribe.py"), *RECOGNITION, *FORMATS]
    # Recognition in the CLI's own process (--workers 0): the SIGKILL ends it mid-batch.
    command += ["--workers", "0", "--threads-per-worker", "1", "--no-progress", "-o", str(out), str(clip)]
    proc = subprocess.Popen(command, env=env(), start_new_session=True, stderr=subprocess.DEVNULL)
    store = partial_store(out, clip)
    wait_for(lambda: (store.is_file() and len(stored_entries(store)) >= 2) or proc.poll() is not None)
    os.killpg(proc.pid, signal.SIGKILL)  # before the file is done
    proc.wait()
    stored = len(stored_entries(store))
    total = segments_of(baseline[1])
    assert 2 <= stored < total, "the run finished before it could be killed"
    assert not (out / f"{clip.stem}.srt").exists()

    summary = run(out, clip)

    assert summary["segments_reused"] == stored  # every stored segment matched one of this run's
    assert summary["segments_recognised"] == total - stored
    assert_same_outputs(out, baseline[0])
    assert not store.exists(), "the partial store outlived the file's outputs"


def test_a_torn_last_line_is_ignored(clip, baseline, tmp_path):
    """And so are lines of another shape: their segments are recognised again."""
    out = interrupted_copy(baseline, clip, tmp_path / "out", keep=3)
    stored = json.loads(gzip.decompress(recognition_store(baseline[0], clip).read_bytes()))
    start, end, _ = stored["file"]["segments"][3]
    key = {"i": 3, "start": round(start * 16000), "end": round(end * 16000)}
    with open(partial_store(out, clip), "ab") as f:
        for damaged in ([1, 2], {**key, "i": [3], "hyp": {}}, {**key, "hyp": 7}, {**key, "hyp": {"txt": "?"}}):
            f.write(json.dumps(damaged).encode() + b"\n")
        f.write(json.dumps({**key, "hyp": {"text": "torn"}}).encode()[:20])  # killed mid-write
    summary = run(out, clip)
    assert summary["segments_reused"] == 3
    assert summary["segments_recognised"] == segments_of(baseline[1]) - 3
    assert_same_outputs(out, baseline[0])


def test_a_changed_source_file_is_recognised_again(clip, baseline, tmp_path):
    media = tmp_path / clip.name
    shutil.copy2(clip, media)  # same bytes and mtime: the stores still apply ...
    out = interrupted_copy(baseline, media, tmp_path / "out", keep=3)
    os.utime(media, ns=(media.stat().st_atime_ns, media.stat().st_mtime_ns + 10**9))  # ... until it changes
    summary = run(out, media)
    assert summary["segments_reused"] == 0
    assert summary["segments_recognised"] == segments_of(baseline[1])


def test_a_changed_recognition_option_recognises_again(clip, baseline, tmp_path):
    out = interrupted_copy(baseline, clip, tmp_path / "out", keep=3)
    summary = run(out, clip, "--beam-size", "2")
    assert summary["segments_reused"] == 0 and summary["files_rerendered"] == 0
    assert summary["segments_recognised"] == segments_of(baseline[1])


def test_a_store_of_another_version_is_started_over(clip, baseline, tmp_path):
    out = interrupted_copy(baseline, clip, tmp_path / "out", keep=3)
    store = partial_store(out, clip)
    lines = store.read_text().splitlines()
    lines[0] = json.dumps({**json.loads(lines[0]), "version": 0})
    store.write_text("\n".join(lines) + "\n")
    summary = run(out, clip)
    assert summary["segments_reused"] == 0
    assert_same_outputs(out, baseline[0])


def test_an_unwritable_store_does_not_stop_the_run(clip, baseline, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / STORE_DIR).write_text("a file where the store's folder would go")
    summary = run(out, clip)
    assert summary["files_done"] == 1 and summary["segments_recognised"] == segments_of(baseline[1])
    assert_same_outputs(out, baseline[0])


# -- re-rendering without recognising again


def rendered_copy(baseline: tuple[Path, dict], target: Path) -> Path:
    shutil.copytree(baseline[0], target)  # mtimes kept: the outputs are still the ones written
    return target


def test_new_formats_are_rendered_from_the_stored_recognition(clip, baseline, tmp_path):
    """Only --formats changed: no segment recognised; the outputs of the formats dropped are
    removed, but a file of that name this tool did not write stays, and so does one of ours
    changed since."""
    out = rendered_copy(baseline, tmp_path / "out")
    (out / "notes.vtt").write_text("the user's own\n")
    (out / f"{clip.stem}.txt").write_text("edited by hand\n")
    summary = run(out, clip, "--formats", "srt,tsv,json")
    assert summary["segments_recognised"] == 0 and summary["files_rerendered"] == 1
    assert summary["workers"]["batches"] == {}  # no worker ever ran: the engine was not needed
    assert not (out / f"{clip.stem}.vtt").exists()
    assert (out / "notes.vtt").read_text() == "the user's own\n"
    assert (out / f"{clip.stem}.txt").read_text() == "edited by hand\n"

    fresh = tmp_path / "fresh"
    run(fresh, clip, "--formats", "srt,tsv,json")
    assert texts(out) == {**texts(fresh), f"{clip.stem}.txt": b"edited by hand\n", "notes.vtt": b"the user's own\n"}
    assert json_outputs(out) == json_outputs(fresh)


def test_a_cue_option_rerenders_equal_to_a_fresh_run(clip, baseline, tmp_path):
    out = rendered_copy(baseline, tmp_path / "out")
    changed = ("--max-line-width", "10", "--max-cue-duration", "4", "--no-guard")
    summary = run(out, clip, *changed)
    assert summary["segments_recognised"] == 0 and summary["files_rerendered"] == 1
    assert texts(out) != texts(baseline[0])  # the option does change the subtitles
    fresh = tmp_path / "fresh"
    fresh_summary = run(fresh, clip, *changed)
    assert fresh_summary["segments_recognised"] == segments_of(baseline[1])
    assert_same_outputs(out, fresh)


def test_outputs_that_could_not_be_written_are_rendered_on_the_rerun(clip, baseline, tmp_path):
    """Writing failed after the file was recognised (here a folder where its SRT goes): the
    rerun writes the outputs from the stored recognition, without recognising again."""
    out = tmp_path / "out"
    (out / f"{clip.stem}.srt").mkdir(parents=True)
    code = cli.main([*RECOGNITION, *FORMATS, "--workers", "0", "--no-progress", "-o", str(out), str(clip)])
    assert code == 1
    (out / f"{clip.stem}.srt").rmdir()
    summary = run(out, clip)
    assert summary["files_rerendered"] == 1 and summary["segments_recognised"] == 0
    assert_same_outputs(out, baseline[0])
    assert not partial_store(out, clip).exists()


def test_overwrite_recognises_again(clip, baseline, tmp_path):
    out = rendered_copy(baseline, tmp_path / "out")
    summary = run(out, clip, "--overwrite", "--max-line-width", "10")
    assert summary["files_rerendered"] == 0 and summary["segments_recognised"] == segments_of(baseline[1])


def test_an_unreadable_recognition_store_recognises_again(clip, baseline, tmp_path):
    out = rendered_copy(baseline, tmp_path / "out")
    store = recognition_store(out, clip)
    store.write_bytes(store.read_bytes()[:40])  # truncated gzip
    summary = run(out, clip, "--formats", "srt")
    assert summary["files_rerendered"] == 0 and summary["segments_recognised"] == segments_of(baseline[1])
    assert (out / f"{clip.stem}.srt").read_bytes() == (baseline[0] / f"{clip.stem}.srt").read_bytes()


def test_unchanged_settings_skip_the_file(clip, baseline, tmp_path):
    out = rendered_copy(baseline, tmp_path / "out")
    before = texts(out)
    summary = run(out, clip)
    assert summary["files_skipped"] == 1 and summary["files_rerendered"] == 0
    assert texts(out) == before


# -- what the stores keep


def test_hypotheses_round_trip_exactly():
    """numpy float32 values (confidences, times) come back as the same numbers, NaN, odd
    text and empty fields included, through JSON as stored."""
    conf = np.float32(0.1)
    hyp = Hypothesis(
        text="a\udcff 你好 \u2028",
        tokens=["a", "你好"],
        token_ids=[3, 4],
        token_times=[(np.float32(0.1), 0.30000000000000004), (1 / 3, float("nan"))],
        token_confidences=[conf, 0.7],
        confidence=np.float64(0.4),
        language=None,
        flags=["loop"],
    )
    back = normalised(hyp)
    assert back.text == hyp.text and back.tokens == hyp.tokens and back.token_ids == hyp.token_ids
    assert back.token_times[0] == (float(np.float32(0.1)), 0.30000000000000004)
    assert back.token_times[1][0] == 1 / 3 and math.isnan(back.token_times[1][1])
    assert back.token_confidences == [float(conf), 0.7] and back.confidence == 0.4
    # Stored again, it is the same (repr: NaN is not equal to itself).
    assert repr(normalised(back)) == repr(back) == repr(hypothesis_from_dict(hypothesis_to_dict(back)))


def test_a_recognition_is_stored_as_the_json_of_all_its_fields():
    """Recognition.to_dict takes the fields as they are (no dataclasses.asdict copies): the
    JSON is that of asdict, numpy numbers, tuples, the track and the turns included."""
    import dataclasses

    from fireredasr_fast.runner.store import Recognition, _dumps
    from fireredasr_fast.transcribe import TrackChoice
    from fireredasr_fast.vad import SpeechSegment

    times = [(np.float32(0.1), 0.2), (0.2, 0.5)]
    hyp = Hypothesis(text="你好", tokens=["你", "好"], token_ids=[3, 4], token_times=times,
                     token_confidences=[np.float32(0.9), 0.8], confidence=np.float64(0.85), flags=["loop"])  # fmt: skip
    recognition = Recognition(
        source="a.mkv", duration=2.0, segments=[SpeechSegment(0.0, 1.0, [(0.1, 0.9)])], speech=[(0.1, 0.9)],
        music=[], track=TrackChoice(1, 2, 0, "most speech", (3.0, None)), timings={"asr": 0.5},
        hypotheses=[hyp, Hypothesis(text="")], turns=[(0.1, 0.9, "S1")],
    )  # fmt: skip
    by_definition = dataclasses.asdict(recognition)
    by_definition["segments"] = [[0.0, 1.0, [(0.1, 0.9)]]]
    assert _dumps(recognition.to_dict()) == _dumps(by_definition)
    assert _dumps(hypothesis_to_dict(hyp)) == _dumps(dataclasses.asdict(hyp))
