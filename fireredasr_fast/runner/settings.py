"""What a run's outputs depend on, built once from the options objects: recognition settings
(what the hypotheses depend on) apart from rendering settings (what turns hypotheses into
files), and the per-file fingerprints the journal and the recognition stores keep.

Changing only rendering settings rewrites a file's outputs from its stored recognition
(store.py) without recognising again; changing a recognition setting, or the source file,
recognises again. The journal's `fingerprint` hashes both parts in the shape journals have
always fingerprinted (tests/test_resume_compat.py), so journals written before keep resuming.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fireredasr_fast.engines import EngineSpec
from fireredasr_fast.fsutil import directory_identity
from fireredasr_fast.glossary import Glossary
from fireredasr_fast.guard import REVIEW_THRESHOLD
from fireredasr_fast.inputs import InputFile
from fireredasr_fast.transcribe import TranscribeOptions
from fireredasr_fast.writers import WriterOptions

from .journal import fingerprint

# VadOptions fields added since journals were first written, at the values that behave as before.
VAD_AS_BEFORE = {"backend": "silero", "music": "keep"}
# CueOptions fields added since, likewise (no reading speed limit).
CUES_AS_BEFORE = {"max_cps": 0.0, "max_cps_cjk": 0.0}


@dataclass(frozen=True)
class FileFingerprints:
    """One input's fingerprints: `outputs` changes with anything that changes its files (the
    journal's `fingerprint`), `recognition` only with what changes its hypotheses. Both include
    the source file's identity (size, mtime), so an edited video is redone."""

    outputs: str
    recognition: str


@dataclass(frozen=True)
class RunSettings:
    recognition: dict[str, Any]
    rendering: dict[str, Any]
    # Engine options the journal's shape leaves out but the hypotheses depend on (Whisper's
    # guard re-decodes inside the engine; batch_frames, timestamps): in the recognition
    # fingerprint only.
    engine_options: dict[str, Any]

    @classmethod
    def build(
        cls,
        spec: EngineSpec,
        transcribe: TranscribeOptions,
        formats: tuple[str, ...],
        gpu_spec: EngineSpec | None = None,
    ) -> RunSettings:
        gpu_spec = gpu_spec or spec.for_gpu()
        recognition: dict[str, Any] = {
            "engine": {"engine": spec.engine, "options": spec.options.fingerprint()},
            "gpu_precision": gpu_precision(spec, gpu_spec),
            "model": model_identity(spec.model_dir),
            "vad": _without(dataclasses.asdict(transcribe.vad), VAD_AS_BEFORE),
            "audio_stream": transcribe.audio_stream,
        }
        # Speaker turns are found from the audio and stored with the recognition, so other
        # --speakers recognise again; off, the fingerprint is as before.
        if transcribe.speakers is not None:
            recognition["speakers"] = dataclasses.asdict(transcribe.speakers)
        rendering: dict[str, Any] = {
            "cues": _without(dataclasses.asdict(transcribe.cues), CUES_AS_BEFORE),
            "formats": list(formats),
        }
        # Options added after journals already existed enter only where they differ from what
        # those journals' release did, so such a journal resumes when run the old way
        # (--no-guard --zh-script keep) and is redone when a new default changes the outputs.
        if transcribe.guard.enabled:
            rendering["guard"] = dataclasses.asdict(transcribe.guard)
        if transcribe.review_threshold != REVIEW_THRESHOLD:
            rendering["review_threshold"] = transcribe.review_threshold
        if transcribe.weak_token_threshold != 0.0:
            rendering["weak_token_threshold"] = transcribe.weak_token_threshold
        if transcribe.zh_script != "keep":
            rendering["zh_script"] = transcribe.zh_script
        if transcribe.writer != WriterOptions():
            rendering["writer"] = dataclasses.asdict(transcribe.writer)
        engine_options = {"cpu": dataclasses.asdict(spec.options), "gpu": dataclasses.asdict(gpu_spec.options)}
        return cls(recognition, rendering, engine_options)

    def journal_settings(self, item: InputFile | None = None, hotwords: Glossary | None = None) -> dict[str, Any]:
        """Both parts in the one dict the journal has always fingerprinted (and the JSON's
        `options` shows); `audio_stream` is "all" for the inputs `--audio-stream all` made;
        `hotwords`, the file's glossary, only when it has terms (so journals without keep resuming)."""
        settings = {**self.recognition, **self.rendering}
        if item is not None and item.audio_stream is not None:
            settings["audio_stream"] = "all"
        if hotwords:
            settings["hotwords"] = hotwords.fingerprint()
        return settings

    def fingerprints(self, item: InputFile, hotwords: Glossary | None = None) -> FileFingerprints:
        """Raises OSError when the source cannot be read. `hotwords`: the file's glossary
        (HotwordOptions.for_file), which its hypotheses depend on."""
        recognition = {**self.recognition, "engine_options": self.engine_options, "stream": item.audio_stream}
        if hotwords:
            recognition["hotwords"] = hotwords.fingerprint()
        return FileFingerprints(
            fingerprint(self.journal_settings(item, hotwords), item.path),
            fingerprint({"recognition": recognition}, item.path),
        )


def gpu_precision(spec: EngineSpec, gpu_spec: EngineSpec) -> str | None:
    """The precision GPU workers run where it differs from the CPU workers' (None otherwise):
    fp16 and bf16 give other hypotheses than fp32."""
    cpu = getattr(spec.options, "precision", None)
    gpu = getattr(gpu_spec.options, "precision", None)
    return gpu if gpu != cpu else None


def model_identity(path: str | None) -> dict[str, Any]:
    """Size and mtime of the model files: a replaced checkpoint changes the fingerprint. The
    path is resolved, as the command line resolves it, so that a Runner given a relative
    directory from Python fingerprints the same run alike."""
    if not path or not Path(path).is_dir():
        return {"path": path}
    path = str(Path(path).resolve())
    return {"path": path, "files": {name: list(identity) for name, identity in directory_identity(path).items()}}


def _without(values: dict[str, Any], as_before: dict[str, Any]) -> dict[str, Any]:
    """`values` less the entries that equal `as_before`'s."""
    return {k: v for k, v in values.items() if k not in as_before or v != as_before[k]}
