"""A file's outputs are the same however it was scheduled (issue 28): alone, beside other files
(batch partners), with 1 or 2 workers, resumed after one of its outputs was deleted, and on a
local Ray cluster. Both engines: Whisper tiny.en (whose short segments share encoder windows)
and the trained FireRedASR fixture. Subtitles and text byte for byte, the JSON equal but for
its timings."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from conftest import FIXTURES, SAMPLES, run_ffmpeg
from runs import run

FORMATS = "srt,vtt,txt,tsv,review,json"
TARGET = "target.wav"
RAY = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed (.[cluster])")


def _command(engine: tuple[str, ...], out: Path, inputs: list[Path], workers: int, extra: tuple[str, ...] = ()):
    import sys

    from conftest import ROOT

    return [
        sys.executable, str(ROOT / "long_video_transcribe.py"), *engine, "--workers", str(workers),
        "--formats", FORMATS, "--no-progress", "-o", str(out), *extra, "--", *map(str, inputs),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """Whisper's target: four short stretches of the English sample with pauses between
    (separate short segments, which Whisper packs together); FireRedASR's: the Mandarin
    sample; two neighbours in another folder."""
    folder = tmp_path_factory.mktemp("same-output")
    target, others = folder / "target", folder / "others"
    target.mkdir()
    others.mkdir()
    cuts = [(0.0, 3.0), (5.0, 8.5), (12.0, 14.5), (20.0, 24.0)]
    chains = ";".join(
        f"[0:a]atrim={a}:{b},asetpts=PTS-STARTPTS,apad=pad_dur=2.5[c{i}]" for i, (a, b) in enumerate(cuts)
    )
    joined = "".join(f"[c{i}]" for i in range(len(cuts)))
    run_ffmpeg(
        "-i", str(SAMPLES / "two_cities.mp4"), "-filter_complex", f"{chains};{joined}concat=n={len(cuts)}:v=0:a=1",
        "-ar", "16000", "-ac", "1", str(target / TARGET),
    )  # fmt: skip
    # The fixture model knows the Mandarin sample's sentences: its target.
    shutil.copy(SAMPLES / "aishell_zh.mkv", target / "target.mkv")
    # Long enough that the target and the third file are ready while its batch runs.
    run_ffmpeg("-i", str(SAMPLES / "two_cities.mp4"), "-ss", "24", "-ar", "16000", str(others / "b.wav"))
    shutil.copy(SAMPLES / "aishell_zh.mkv", others / "c.mkv")
    return {"whisper": target / TARGET, "firered": target / "target.mkv", "b": others / "b.wav", "c": others / "c.mkv"}


def _target_outputs(out: Path) -> dict[str, object]:
    found: dict[str, object] = {}
    for path in sorted(out.glob("target.*")):
        if path.suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            data.pop("timings", None)
            found[path.name] = data
        else:
            found[path.name] = path.read_bytes()
    return found


def _run(engine: tuple[str, ...], out: Path, inputs: list[Path], workers: int, extra: tuple[str, ...] = ()) -> None:
    result = run(_command(engine, out, inputs, workers, extra))
    assert result.returncode == 0, result.stderr[-2000:]


ENGINES = {
    "whisper": ("--engine", "whisper", "--model", "tiny.en"),
    "firered": ("--model-dir", str(FIXTURES / "tiny_model")),
}


# The third run: Whisper with two local workers; FireRedASR with two workers on a local Ray
# cluster (where Ray is installed).
@pytest.mark.parametrize(
    ("name", "third"),
    [("whisper", ()), ("firered", ()), pytest.param("firered", ("--cluster", "local"), marks=RAY, id="firered-ray")],
    ids=["whisper", "firered", "firered-ray"],
)
def test_a_file_is_transcribed_the_same_however_it_is_scheduled(media, tmp_path, name, third):
    if name == "whisper":
        pytest.importorskip("faster_whisper")
    engine = ENGINES[name]
    everything = [media["b"], media[name], media["c"]]
    # One worker beside two other files: the target's segments are ready while the first
    # file's batch runs, together with the third file's (a batch partner before issue 28).
    first = tmp_path / "first"
    _run(engine, first, everything, workers=1)
    expected = _target_outputs(first)
    assert {"target.srt", "target.vtt", "target.txt", "target.tsv", "target.review.tsv", "target.json"} <= set(expected)
    assert expected["target.txt"].strip(), "the target must have text for the comparison to mean anything"

    # Resumed: the target's subtitle deleted, the rerun redoes the target alone, two workers.
    (first / "target.srt").unlink()
    _run(engine, first, everything, workers=2)
    assert _target_outputs(first) == expected

    # All three again from scratch with two workers (and on Ray for one case).
    _run(engine, tmp_path / "third", everything, workers=2, extra=third)
    assert _target_outputs(tmp_path / "third") == expected
