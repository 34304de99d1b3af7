"""Front end and tokenizer against upstream's (PyPI fireredasr 0.0.2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fireredasr_fast.engines.firered.features import FbankExtractor
from fireredasr_fast.engines.firered.tokenizer import Tokenizer, read_dict
from testsupport.random_model import write_random_model_dir

asr_feat = pytest.importorskip("fireredasr.data.asr_feat")
aed_tokenizer = pytest.importorskip("fireredasr.tokenizer.aed_tokenizer")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_model_dir(tmp_path_factory.mktemp("m") / "tiny", preset="tiny", odim=200)


def _reference_features(cmvn_file: Path, wave: np.ndarray) -> np.ndarray:
    fbank = asr_feat.KaldifeatFbank(num_mel_bins=80, frame_length=25, frame_shift=10, dither=0.0)
    cmvn = asr_feat.CMVN(str(cmvn_file))
    return np.asarray(cmvn(fbank((16000, wave * np.float32(32768.0)))), dtype=np.float32)


@pytest.mark.parametrize("seconds", [0.025, 0.5, 3.21])
def test_features_bit_identical_to_upstream(model_dir: Path, seconds: float) -> None:
    rng = np.random.default_rng(1)
    n = int(16000 * seconds)
    wave = (0.3 * np.sin(np.arange(n) * 0.05) + 0.05 * rng.standard_normal(n)).astype(np.float32)
    ours = FbankExtractor(model_dir / "cmvn.ark")(wave)
    theirs = _reference_features(model_dir / "cmvn.ark", wave)
    assert ours.dtype == np.float32 and ours.shape == (1 + (n - 400) // 160, 80)
    np.testing.assert_array_equal(ours, theirs)


def test_features_of_short_input_are_empty(model_dir: Path) -> None:
    extractor = FbankExtractor(model_dir / "cmvn.ark")
    assert extractor(np.zeros(0, np.float32)).shape == (0, 80)
    assert extractor(np.zeros(399, np.float32)).shape == (0, 80)
    assert extractor(np.zeros(400, np.float32)).shape == (1, 80)
    assert FbankExtractor.num_frames(16000) == 98


def test_cmvn_normalises(model_dir: Path) -> None:
    wave = (0.1 * np.random.default_rng(2).standard_normal(16000)).astype(np.float32)
    plain = FbankExtractor()(wave)
    normed = FbankExtractor(model_dir / "cmvn.ark")(wave)
    assert not np.allclose(plain, normed)


def test_detokenize_like_upstream(model_dir: Path) -> None:
    ours = Tokenizer(model_dir / "dict.txt", model_dir / "train_bpe1000.model")
    theirs = aed_tokenizer.ChineseCharEnglishSpmTokenizer(
        str(model_dir / "dict.txt"), str(model_dir / "train_bpe1000.model")
    )
    for text in ["丁丂 HELLO WORLD 七", "THE QUICK BROWN FOX", "丁七丁"]:
        tokens, ids = theirs.tokenize(text)
        assert ours.encode(text) == ids
        assert ours.tokens(ids) == tokens
        assert ours.detokenize(ids) == theirs.detokenize(ids)
    words = ours.encode("HELLO WORLD")
    assert ours.detokenize(words) == "HELLO WORLD"  # "▁" became spaces, edges stripped
    assert ours.detokenize([]) == ""


def test_read_dict_rules(tmp_path: Path) -> None:
    path = tmp_path / "dict.txt"
    path.write_text("<blank> 0\n<space> 1\nfoo\n\nbar 4\n", encoding="utf-8")
    assert read_dict(path) == ["<blank>", " ", "foo", " ", "bar"]
    path.write_text("a 0\nb 2\n", encoding="utf-8")
    with pytest.raises(ValueError, match="out of order"):
        read_dict(path)
