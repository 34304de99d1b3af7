"""The fbank kernel (engines/firered/fbank.py) against kaldi-native-fbank, bit for bit, and
the guard that picks it: on real speech, on signals at the edges of the arithmetic, and with
options it does not compute (the guard then keeps knf, after one warning)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from conftest import SAMPLES
from make_programme import real_speech_programme

from fireredasr_fast.audio import decode_audio
from fireredasr_fast.engines.firered import fbank
from fireredasr_fast.engines.firered.features import FbankExtractor, prepare_fast_fbank


@pytest.fixture(scope="module")
def extractor() -> FbankExtractor:
    return FbankExtractor()


@pytest.fixture(scope="module")
def kernel(extractor: FbankExtractor) -> fbank.FastFbank:
    return fbank.FastFbank(extractor.opts)


def assert_same_bits(ours: np.ndarray, theirs: np.ndarray) -> None:
    assert ours.dtype == theirs.dtype == np.float32 and ours.shape == theirs.shape
    differ = ours.view(np.uint32) != theirs.view(np.uint32)
    assert not differ.any(), f"{int(differ.sum())} of {differ.size} floats differ"


def test_the_kernel_gives_knf_s_bits_on_real_speech(extractor: FbankExtractor, kernel: fbank.FastFbank) -> None:
    """Both samples and the 24-utterance programme (speech at gains from -14 to 0 dB, pauses,
    faint noise); the guard picks the kernel here, and the extractor's features are its."""
    english, mandarin = decode_audio(SAMPLES / "two_cities.mp4"), decode_audio(SAMPLES / "aishell_zh.mkv")
    frames = 0
    for audio in (english, mandarin, real_speech_programme(english, mandarin)):
        samples = audio.astype(np.float32)  # int16 values, as the extractor scales [-1, 1]
        ours = kernel(samples)
        assert_same_bits(ours, extractor.knf_fbank(samples))
        assert_same_bits(extractor.fbank(samples / np.float32(32768)), ours)
        frames += ours.shape[0]
    assert frames > 15000
    assert isinstance(fbank.checked(extractor.opts, extractor.knf_fbank), fbank.FastFbank)


def _edge_signals() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    second = np.arange(16000)
    signals = {f"noise x{level:g}": rng.standard_normal(16000) * level for level in (0.01, 1, 100, 3000, 20000)}
    signals["clipped noise"] = np.clip(rng.standard_normal(16000) * 60000, -32768, 32767)
    signals["silence"] = np.zeros(16000)
    signals["constant"] = np.full(8000, 1234.0)  # the mean removed leaves zeros: the log floor
    signals["int16 extremes"] = np.where(second % 2, 32767.0, -32768.0)
    signals["full-scale square"] = np.where((second // 40) % 2, 32767.0, -32768.0)
    signals["impulse"] = np.where(second == 5000, 32767.0, 0.0)
    signals["loud sweep"] = 32000 * np.sin(2 * np.pi * (50 + 7900 * second / 32000) * second / 16000)
    for n in (399, 400, 401, 560, 561, 16 * 160 + 400, 17 * 160 + 399):
        signals[f"{n} samples"] = rng.standard_normal(n) * 1000
    return {name: s.astype(np.float32) for name, s in signals.items()}


@pytest.mark.parametrize("name", list(_edge_signals()))
def test_the_kernel_gives_knf_s_bits_at_the_edges(
    extractor: FbankExtractor, kernel: fbank.FastFbank, name: str
) -> None:
    samples = _edge_signals()[name]
    ours = kernel(samples)
    assert ours.shape == (extractor.num_frames(samples.size), 80)
    assert_same_bits(ours, extractor.knf_fbank(samples))


def test_options_the_kernel_does_not_compute_keep_knf_after_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    """A real mismatch: knf with preemphasis 0.96 (the kernel computes 0.97). The probe
    finds it, the extractor's features are knf's with that option, and the warning is given
    once per process, not per extractor or call."""
    extractors = [FbankExtractor(), FbankExtractor()]
    for extractor in extractors:
        extractor.opts.frame_opts.preemph_coeff = 0.96
    wave = np.random.default_rng(3).standard_normal(16000).astype(np.float32) * 0.1
    with caplog.at_level(logging.WARNING):
        for extractor in extractors:
            assert fbank.checked(extractor.opts, extractor.knf_fbank) is None
            feats = extractor.fbank(wave)
            assert_same_bits(feats, extractor.knf_fbank(wave * np.float32(32768)))
            assert not np.array_equal(feats, FbankExtractor().fbank(wave))  # 0.96 is not 0.97
    warnings = [r.getMessage() for r in caplog.records if r.name == fbank.__name__]
    assert len(warnings) == 1 and "differ from kaldi-native-fbank" in warnings[0], warnings


def test_the_fork_server_s_warm_up_decides_for_its_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """features.prepare_fast_fbank (run by engine.prepare_fork_server) loads and checks the
    kernel; an extractor made afterwards (in a forked worker) uses it without checking again."""
    monkeypatch.setattr(fbank, "_checked", {})  # as in a fresh fork server
    prepare_fast_fbank()

    def no_second_check(*args: object) -> None:
        raise AssertionError("checked again")

    monkeypatch.setattr(fbank, "_check", no_second_check)
    extractor = FbankExtractor()
    assert isinstance(fbank.checked(extractor.opts, extractor.knf_fbank), fbank.FastFbank)
    wave = np.random.default_rng(5).standard_normal(4000).astype(np.float32) * 0.2
    assert_same_bits(extractor.fbank(wave), extractor.knf_fbank(wave * np.float32(32768)))
