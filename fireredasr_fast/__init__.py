"""fireredasr-fast: folders of long videos -> subtitles and transcripts with FireRedASR.

Public API:
    load_model(model_dir, options=None, device="cpu")  -> FireRedModel with .transcribe(waveforms, ...)
        options: FireRedOptions, or its fields as keywords (precision="int8", ...): built once
    transcribe_file(path, engine, options)   -> FileResult (segments, cues)
    TranscribeOptions, VadOptions, CueOptions, EngineSpec, Hypothesis, FileResult
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

# Imported lazily so that `import fireredasr_fast` stays cheap (the CLI's process runs
# without torch on a machine without CUDA: docs/tuning.md#worker-start-up-and-memory).
_EXPORTS = {
    "load_model": "engines.firered.engine",
    "FireRedEngine": "engines.firered.engine",
    "DecodingOptions": "engines.firered.options",
    "FireRedOptions": "engines.firered.options",
    "transcribe_file": "transcribe",
    "TranscribeOptions": "transcribe",
    "VadOptions": "vad",
    "CueOptions": "cues",
    "EngineSpec": "engines",
    "Engine": "engines",
    "Hypothesis": "results",
    "FileResult": "results",
    "Segment": "results",
    "Cue": "results",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'fireredasr_fast' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{module_name}", __name__), name)
