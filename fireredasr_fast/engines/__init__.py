"""Recognition engines behind one interface (base.py), and the one place that names them.

Each engine is a folder of its own (firered/, whisper/) with an options module (a frozen
dataclass, no heavy imports) and an engine module. The registry maps a name to both and
imports them only when asked, so that importing the package loads neither torch nor
faster-whisper (nor numpy: base.py is loaded on first use).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
DEFAULT_ENGINE = "firered"


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


def __getattr__(name: str) -> Any:
    """Engine and EngineSpec (base.py, which imports numpy), loaded when first asked for:
    the command line reads ENGINES before it starts the workers' fork server, and numpy
    would delay that start (runner/workerstart.py, start_for_command)."""
    if name in ("Engine", "EngineSpec"):
        return getattr(importlib.import_module("fireredasr_fast.engines.base"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ENGINES", "Engine", "EngineSpec", "engine_class", "options_class"]
