"""The opt-in ONNX Runtime backends (encoder_backend / decoder_backend = "onnx") against torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fireredasr_fast.audio import decode_audio
from fireredasr_fast.engines.firered import onnx_decoder, onnx_encoder
from fireredasr_fast.engines.firered.engine import FireRedModel, load_model
from fireredasr_fast.engines.firered.onnx_decoder import OnnxDecoder
from fireredasr_fast.fsutil import CACHE_ENV

pytest.importorskip("onnx")

FIXTURE = Path(__file__).parent / "fixtures" / "tiny_model"
SAMPLES = Path(__file__).resolve().parents[1] / "samples"
pytestmark = pytest.mark.skipif(not (FIXTURE / "model.pth.tar").is_file(), reason="needs the trained fixture")


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[FireRedModel, FireRedModel, Path]:
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_ENV, str(cache))
        onnx_model = FireRedModel(FIXTURE, encoder_backend="onnx", decoder_backend="onnx")
    return FireRedModel(FIXTURE), onnx_model, cache


def _waves() -> list[np.ndarray]:
    """Real speech (both samples, and 20 s / 3 s cuts of them) plus short noise bursts, down
    to 30 ms (a single encoder frame)."""
    waves = []
    for name in ("aishell_zh.mkv", "two_cities.mp4"):
        audio = decode_audio(SAMPLES / name).astype(np.float32) / 32768.0
        waves += [audio[: 20 * 16000], audio[16000 : 4 * 16000]]
    rng = np.random.default_rng(1)
    waves += [(0.05 * rng.standard_normal(int(16000 * s))).astype(np.float32) for s in (0.03, 0.06, 0.5, 1.7)]
    return waves


def test_onnx_backends_give_the_same_tokens(models: tuple[FireRedModel, FireRedModel, Path]) -> None:
    torch_model, onnx_model, _ = models
    assert isinstance(onnx_model._encoder, onnx_encoder.OnnxEncoder)
    assert isinstance(onnx_model._decoder, OnnxDecoder)
    waves = _waves()
    # One batch of mixed lengths: utterances finish at different steps and leave the batch.
    expected = torch_model.transcribe_nbest(waves, nbest=3)
    got = onnx_model.transcribe_nbest(waves, nbest=3)
    assert [[h.token_ids for h in hyps] for hyps in got] == [[h.token_ids for h in hyps] for hyps in expected]
    assert sum(len(hyps[0].token_ids) for hyps in got) > 50
    # Greedy too, one at a time.
    for wave in waves[:3]:
        (got_one,), (expected_one,) = (m.transcribe([wave], beam_size=1) for m in (onnx_model, torch_model))
        assert (got_one.text, got_one.token_ids) == (expected_one.text, expected_one.token_ids)
        # Confidences come from the step scores, which ONNX Runtime rounds differently.
        assert got_one.token_confidences == pytest.approx(expected_one.token_confidences, abs=1e-4)
    # One batch, one at a time: encoder outputs agree with torch's to float rounding.
    for a, b in zip(torch_model.encode(waves), onnx_model.encode(waves), strict=True):
        assert a.shape == b.shape
        if a.numel():
            assert (a - b).abs().max().item() < 1e-4


def test_export_is_cached_outside_the_model_dir(
    models: tuple[FireRedModel, FireRedModel, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, onnx_model, cache = models
    exports = sorted(p.name.split("-")[0] for p in cache.iterdir())
    assert exports == ["decoder", "encoder"]
    assert (onnx_model._encoder.path.parent / onnx_encoder.ENCODER_FILE).is_file()
    assert onnx_model._decoder.path.parent.parent == cache
    assert not list(cache.glob(".*"))  # no temporary left behind
    assert not list(FIXTURE.glob("*.onnx"))

    def no_export(*args: object) -> None:
        raise AssertionError("exported again")

    monkeypatch.setenv(CACHE_ENV, str(cache))
    monkeypatch.setattr(onnx_encoder, "export_encoder", no_export)
    monkeypatch.setattr(onnx_decoder, "export_step", no_export)
    again = FireRedModel(FIXTURE, encoder_backend="onnx", decoder_backend="onnx")
    assert again._encoder.path == onnx_model._encoder.path
    assert again._decoder.path == onnx_model._decoder.path


def test_onnx_encoder_refuses_other_modes() -> None:
    with pytest.raises(ValueError, match="onnx"):
        load_model(FIXTURE, precision="int8", encoder_backend="onnx")
    with pytest.raises(ValueError, match="onnx"):
        load_model(FIXTURE, precision="int8", decoder_backend="onnx")
    with pytest.raises(ValueError, match="encoder_backend"):
        load_model(FIXTURE, encoder_backend="tensorrt")
