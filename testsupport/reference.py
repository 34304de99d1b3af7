"""The PyPI reference implementation (`fireredasr` 0.0.2) behind our model interface.

Used for parity tests and benchmarks (`load_reference`, which finds and checks the model
directory as the product's `load_model` does). It runs upstream's own front end, encoder and
batch beam search on exactly the batch it is given; only loading differs (our safe
`load_package` instead of a full-pickle torch.load) and waveforms arrive as float arrays.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fireredasr_fast.engines.firered.checkpoint import CMVN_FILE, DICT_FILE, MODEL_FILE, SPM_FILE, load_package
from fireredasr_fast.engines.firered.engine import resolve_model_dir
from fireredasr_fast.engines.firered.features import INT16_SCALE, MIN_SAMPLES
from fireredasr_fast.engines.firered.options import step_limit
from fireredasr_fast.engines.firered.tokenizer import Tokenizer
from fireredasr_fast.results import SAMPLE_RATE, Hypothesis


def _import_reference() -> tuple[Any, Any, Any]:
    try:
        # Not fireredasr.models.fireredasr: that module imports modelscope.
        from fireredasr.data.asr_feat import CMVN, KaldifeatFbank
        from fireredasr.models.fireredasr_aed import FireRedAsrAed
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the reference needs `pip install --no-deps fireredasr==0.0.2`") from exc
    return FireRedAsrAed, KaldifeatFbank, CMVN


def load_reference(model_dir: str | os.PathLike | None, device: str = "cpu") -> ReferenceModel:
    """The reference on a model directory, found and checked as `load_model` does."""
    return ReferenceModel(resolve_model_dir(model_dir), device=device)


class ReferenceModel:
    implementation = "reference"
    precision = "fp32"

    def __init__(self, model_dir: str | os.PathLike, device: str = "cpu", package: dict | None = None) -> None:
        aed_cls, fbank_cls, cmvn_cls = self._import_reference()
        self.model_dir = Path(model_dir)
        self.device = torch.device(device)
        if package is None:
            package = load_package(self.model_dir / MODEL_FILE)
        model = aed_cls.from_args(package["args"])
        self._load_state(model, package["model_state_dict"])
        self.model = model.to(self.device).eval()
        self.fbank = fbank_cls(num_mel_bins=80, frame_length=25, frame_shift=10, dither=0.0)
        self.cmvn = cmvn_cls(str(self.model_dir / CMVN_FILE))
        self.tokenizer = Tokenizer(self.model_dir / DICT_FILE, self.model_dir / SPM_FILE)
        self.timings: dict[str, float] = {}

    @staticmethod
    def _import_reference() -> tuple[Any, Any, Any]:
        return _import_reference()

    def _load_state(self, model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
        # The v1 reference has no CTC head: leave a v2 file's `ctc.*` out, as upstream's
        # v2 code does with strict=False.
        model.load_state_dict({k: v for k, v in state.items() if not k.startswith("ctc.")}, strict=True)

    def _beam_search(self, enc: torch.Tensor, enc_mask: torch.Tensor, limit: int, **options: Any) -> list[list[dict]]:
        """Upstream's batch_beam_search; options: beam_size, nbest, softmax_smoothing,
        length_penalty, eos_penalty."""
        o = options
        if o.get("lm_weight", 0.0) > 0.0:
            raise ValueError("the fireredasr reference has no LM fusion (fireredasr2's has: reference2.py)")
        search, scoring = (o["beam_size"], o["nbest"]), (o["softmax_smoothing"], o["length_penalty"], o["eos_penalty"])
        return self.model.decoder.batch_beam_search(enc, enc_mask, *search, limit, *scoring)

    def _hypothesis(self, hyp: dict[str, torch.Tensor]) -> Hypothesis:
        ids = [int(x) for x in hyp["yseq"].cpu()]
        return Hypothesis(text=self.tokenizer.detokenize(ids), tokens=self.tokenizer.tokens(ids), token_ids=ids)

    def features(self, waveform: np.ndarray) -> torch.Tensor:
        samples = np.asarray(waveform, dtype=np.float32).reshape(-1) * np.float32(INT16_SCALE)
        feats = self.cmvn(self.fbank((SAMPLE_RATE, samples)))
        return torch.from_numpy(np.asarray(feats)).float()

    @torch.no_grad()
    def transcribe_nbest(
        self,
        waveforms: Sequence[np.ndarray],
        beam_size: int = 3,
        decode_max_len: int = 0,
        softmax_smoothing: float = 1.25,
        length_penalty: float = 0.6,
        eos_penalty: float = 1.0,
        nbest: int = 1,
        max_tokens_per_second: float = 0.0,
        logits_hook: Any = None,
        return_alignment: bool = False,
        **extra: Any,
    ) -> list[list[Hypothesis]]:
        """Upstream on the whole batch (minus empty waveforms, which it cannot take).

        Upstream has one step limit per batch; with max_tokens_per_second each utterance
        gets its own, so the batch is encoded together and then decoded one at a time."""
        if return_alignment:
            raise ValueError("the reference implementation gives no alignment")
        timings = {"features": 0.0, "encoder": 0.0, "decoder": 0.0}
        results: list[list[Hypothesis]] = [[Hypothesis(text="")] for _ in waveforms]
        keep = [i for i, w in enumerate(waveforms) if np.asarray(w).size >= MIN_SAMPLES]
        if not keep:
            self.timings = timings
            return results
        start = time.perf_counter()
        feats = [self.features(waveforms[i]) for i in keep]
        lengths = torch.tensor([f.size(0) for f in feats]).long()
        padded = torch.zeros(len(feats), int(lengths.max()), feats[0].size(1))
        for row, f in zip(padded, feats, strict=True):
            row[: f.size(0)] = f
        timings["features"] = time.perf_counter() - start

        start = time.perf_counter()
        model = self.model
        enc, _, enc_mask = model.encoder(padded.to(self.device), lengths.to(self.device))
        mid = time.perf_counter()
        decoder = model.decoder
        original = decoder.tgt_word_prj
        if logits_hook is not None:
            decoder.tgt_word_prj = _HookedProjection(original, logits_hook)
        options = dict(
            beam_size=beam_size,
            nbest=nbest,
            softmax_smoothing=softmax_smoothing,
            length_penalty=length_penalty,
            eos_penalty=eos_penalty,
            **extra,
        )
        try:
            if max_tokens_per_second <= 0.0:
                found = self._beam_search(enc, enc_mask, decode_max_len, **options)
            else:
                found = []
                for j, i in enumerate(keep):
                    limit = step_limit(int(enc_mask[j].sum()), len(waveforms[i]), decode_max_len, max_tokens_per_second)
                    found += self._beam_search(enc[j : j + 1], enc_mask[j : j + 1], limit, **options)
        finally:
            decoder.tgt_word_prj = original
        timings["encoder"] = mid - start
        timings["decoder"] = time.perf_counter() - mid
        for j, i in enumerate(keep):
            results[i] = [self._hypothesis(hyp) for hyp in found[j]]
        self.timings = timings
        return results

    def transcribe(self, waveforms: Sequence[np.ndarray], **options: Any) -> list[Hypothesis]:
        return [h[0] for h in self.transcribe_nbest(waveforms, **options)]


class _HookedProjection(torch.nn.Module):
    """Wraps the reference's output projection, which it calls exactly once per step, so a
    benchmark can force the output length the same way on both sides."""

    def __init__(self, inner: torch.nn.Module, hook: Any) -> None:
        super().__init__()
        self.inner = inner
        self.hook = hook
        self.step = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.hook(self.step, self.inner(x))
        self.step += 1
        return out
