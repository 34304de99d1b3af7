"""FireRedASR2's own AED code (PyPI `fasr-asr-firered` 0.5.8, package `fireredasr2`) behind
our model interface: the v2 reference for parity tests of tokens, confidence and LM fusion.

Like reference.py for v1: upstream's front end, encoder and batch beam search on exactly the
batch it is given; loading goes through our safe `load_package` (upstream unpickles with
weights_only=False). Its hypotheses carry upstream's per-hypothesis `confidence`.

Importing `fireredasr2` normally runs its `__init__`, which imports the LLM code (needs
`transformers`), silences every warning of the process and edits sys.path; the AED module
also imports torchaudio at module level, used only by its timestamp path, and torchaudio has
no build for every torch. So the package is entered without its `__init__`, and where
torchaudio is missing an empty stand-in module is present only while that one module is
imported (its timestamp path, never called here, would fail and be caught upstream).
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
import sys
import types
from pathlib import Path
from typing import Any

import torch

from fireredasr_fast.engines.firered.checkpoint import MODEL_FILE, load_package
from fireredasr_fast.results import Hypothesis
from testsupport.reference import ReferenceModel

PACKAGE = "fireredasr2"
INSTALL_HINT = "the FireRedASR2 reference needs `pip install --no-deps fasr-asr-firered==0.5.8`"


def _import_fireredasr2(module: str) -> Any:
    """`fireredasr2.<module>`, the package entered without running its __init__."""
    if PACKAGE not in sys.modules:
        spec = importlib.util.find_spec(PACKAGE)
        if spec is None or spec.submodule_search_locations is None:
            raise ImportError(INSTALL_HINT)
        package = types.ModuleType(PACKAGE)
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules[PACKAGE] = package
    name = f"{PACKAGE}.{module}"
    if name in sys.modules:
        return sys.modules[name]
    stand_in = importlib.util.find_spec("torchaudio") is None and "torchaudio" not in sys.modules
    if stand_in:
        sys.modules["torchaudio"] = types.ModuleType("torchaudio")
    try:
        return importlib.import_module(name)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"{INSTALL_HINT} ({exc})") from exc
    finally:
        if stand_in:
            del sys.modules["torchaudio"]


def load_reference_lm(lm_dir: str | os.PathLike) -> torch.nn.Module:
    """FireRedASR2's LstmLm from `lm_dir/model.pth.tar`, loaded safely, in eval mode."""
    lstm_lm = _import_fireredasr2("models.lstm_lm")
    package = load_package(Path(lm_dir) / MODEL_FILE)
    lm = lstm_lm.LstmLm.from_args(package["args"])
    lm.load_state_dict(package["model_state_dict"], strict=False)  # as upstream's load_lstm_lm
    return lm.eval()


class Reference2Model(ReferenceModel):
    """fireredasr2's FireRedAsrAed; v1 checkpoints load too (their CTC head stays random,
    unused by the search)."""

    implementation = "reference"

    def __init__(self, model_dir: str | os.PathLike, device: str = "cpu", package: dict | None = None) -> None:
        super().__init__(model_dir, device=device, package=package)
        self._lms: dict[Path, torch.nn.Module] = {}

    @staticmethod
    def _import_reference() -> tuple[Any, Any, Any]:
        aed = _import_fireredasr2("models.fireredasr_aed")
        feat = _import_fireredasr2("data.asr_feat")
        return aed.FireRedAsrAed, feat.KaldifeatFbank, feat.CMVN

    def _load_state(self, model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
        missing, unexpected = model.load_state_dict(state, strict=False)  # strict=False as upstream
        if unexpected or any(not k.startswith("ctc.") for k in missing):
            raise ValueError(f"checkpoint does not fit fireredasr2's AED: missing {missing}, unexpected {unexpected}")

    def lm(self, lm_dir: str | os.PathLike) -> torch.nn.Module:
        path = Path(lm_dir).resolve()
        if path not in self._lms:
            self._lms[path] = load_reference_lm(path).to(self.device)
        return self._lms[path]

    def _beam_search(self, enc: torch.Tensor, enc_mask: torch.Tensor, limit: int, **options: Any) -> list[list[dict]]:
        o = options
        lm_weight = float(o.get("lm_weight", 0.0))
        lm = self.lm(o["lm_dir"]) if o.get("lm_dir") and lm_weight > 0.0 else None
        search, scoring = (o["beam_size"], o["nbest"]), (o["softmax_smoothing"], o["length_penalty"], o["eos_penalty"])
        return self.model.decoder.batch_beam_search(enc, enc_mask, *search, limit, *scoring, lm, lm_weight)

    def _hypothesis(self, hyp: dict[str, torch.Tensor]) -> Hypothesis:
        out = super()._hypothesis(hyp)
        confidence = float(hyp["confidence"])
        out.confidence = None if math.isnan(confidence) else confidence  # the mean of no tokens
        return out
