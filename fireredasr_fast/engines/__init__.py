"""Recognition engines behind one interface (base.py), and the one place that names them.

Each engine is a folder of its own (firered/, whisper/). The registry maps a name to the
module holding its Engine class and imports it only when asked, so that importing the package
loads neither torch nor faster-whisper.
"""

from __future__ import annotations

import importlib

from .base import Engine, EngineSpec

# name -> (module, class): the only lines that know which engines exist.
ENGINES: dict[str, tuple[str, str]] = {
    "firered": ("fireredasr_fast.engines.firered.engine", "FireRedEngine"),
    "whisper": ("fireredasr_fast.engines.whisper.engine", "WhisperEngine"),
}


def engine_class(name: str) -> type[Engine]:
    """The Engine class registered as `name` (imported on first use)."""
    try:
        module_name, class_name = ENGINES[name]
    except KeyError:
        raise ValueError(f"unknown engine {name!r} (choose {' or '.join(ENGINES)})") from None
    return getattr(importlib.import_module(module_name), class_name)


__all__ = ["ENGINES", "Engine", "EngineSpec", "engine_class"]
