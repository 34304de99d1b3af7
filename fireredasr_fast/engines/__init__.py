"""Recognition engines behind one interface (base.py), and the one place that names them.

Each engine is a folder of its own (firered/, whisper/) with an options module (a frozen
dataclass, no heavy imports) and an engine module. The registry maps a name to both and
imports them only when asked, so that importing the package loads neither torch nor
faster-whisper.
"""

from __future__ import annotations

import importlib
from typing import Any

from fireredasr_fast.engines.base import Engine, EngineSpec

# name -> (engine "module:Class", options "module:Class"): the only lines that know which
# engines exist.
ENGINES: dict[str, tuple[str, str]] = {
    "firered": (
        "fireredasr_fast.engines.firered.engine:FireRedEngine",
        "fireredasr_fast.engines.firered.options:FireRedOptions",
    ),
    "whisper": (
        "fireredasr_fast.engines.whisper.engine:WhisperEngine",
        "fireredasr_fast.engines.whisper.options:WhisperOptions",
    ),
}


def _entry(name: str) -> tuple[str, str]:
    try:
        return ENGINES[name]
    except KeyError:
        raise ValueError(f"unknown engine {name!r} (choose {' or '.join(ENGINES)})") from None


def _load(target: str) -> Any:
    module_name, attribute = target.split(":")
    return getattr(importlib.import_module(module_name), attribute)


def engine_class(name: str) -> type[Engine]:
    """The Engine class registered as `name` (imported on first use)."""
    return _load(_entry(name)[0])


def options_class(name: str) -> Any:
    """The options dataclass of the engine registered as `name` (no heavy imports)."""
    return _load(_entry(name)[1])


__all__ = ["ENGINES", "Engine", "EngineSpec", "engine_class", "options_class"]
