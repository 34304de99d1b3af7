"""The tiny fixture model (tests/fixtures/tiny_model) really recognises speech.

It is loaded and run through the reference implementation (PyPI `fireredasr`), on renderings
synthesised here with espeak-ng in voices, speeds and pitches that its training never used.
"""

from __future__ import annotations

import shutil
import sys
import wave
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures"
MODEL_DIR = FIXTURES / "tiny_model"
sys.path.insert(0, str(FIXTURES))

from make_programme import SAMPLE_RATE, make_programme, synthesize, write_wav  # noqa: E402

needs_tools = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("sox") is None, reason="needs espeak-ng and sox"
)

# (text, espeak voice, speed, pitch): variants m3/f3/m7, these speeds and these pitches are
# all outside the fixture's training renderings (see train_tiny_model.py).
HELD_OUT = (
    ("今天天气很好", "cmn+m3", 150, 43),
    ("请打开字幕", "cmn+f3", 175, 58),
    ("我们下次再见", "cmn+m7", 130, 72),
    ("THANK YOU FOR WATCHING", "en+f3", 150, 43),
)


def _normalise(text: str) -> str:
    # Mandarin is compared without spaces, English as upper-cased words.
    return " ".join(text.upper().split()) if text.isascii() else "".join(text.split())


@pytest.mark.slow
@needs_tools
def test_fixture_model_recognises_held_out_speech(tmp_path: Path) -> None:
    pytest.importorskip("fireredasr")
    jiwer = pytest.importorskip("jiwer")
    import torch
    from fireredasr.data.asr_feat import ASRFeatExtractor
    from fireredasr.models.fireredasr_aed import FireRedAsrAed
    from fireredasr.tokenizer.aed_tokenizer import ChineseCharEnglishSpmTokenizer

    from fireredasr_fast.checkpoint import check_model_dir, load_package

    model_dir = check_model_dir(MODEL_DIR)
    package = load_package(model_dir / "model.pth.tar")
    model = FireRedAsrAed.from_args(package["args"])
    model.load_state_dict(package["model_state_dict"], strict=True)
    model.eval()
    tokenizer = ChineseCharEnglishSpmTokenizer(str(model_dir / "dict.txt"), str(model_dir / "train_bpe1000.model"))
    extractor = ASRFeatExtractor(str(model_dir / "cmvn.ark"))

    paths = []
    for index, (text, voice, speed, pitch) in enumerate(HELD_OUT):
        path = tmp_path / f"held_out_{index}.wav"
        write_wav(path, synthesize(text, voice=voice, speed=speed, pitch=pitch))
        paths.append(str(path))
    feats, lengths, _ = extractor(paths)
    with torch.no_grad():
        hyps = model.transcribe(feats, lengths, beam_size=3, softmax_smoothing=1.25, length_penalty=0.6)
    texts = [tokenizer.detokenize([int(t) for t in hyp[0]["yseq"].tolist()]) for hyp in hyps]

    refs = [_normalise(text) for text, *_ in HELD_OUT]
    outs = [_normalise(text) for text in texts]
    error_rate = jiwer.cer(refs, outs)
    assert error_rate < 0.2, f"CER {error_rate:.3f}: {list(zip(refs, outs, strict=True))}"
    assert len(set(outs)) == len(outs), f"different audio gave the same text: {outs}"


@needs_tools
def test_make_programme_reports_true_speech_bounds(tmp_path: Path) -> None:
    import numpy as np

    sentences = ["今天天气很好", "请打开字幕", "我们下次再见"]
    out = tmp_path / "programme.wav"
    segments = make_programme(out, sentences, pause_seconds=[1.5, 2.0], lead_seconds=1.0, tail_seconds=0.5)

    assert [s["text"] for s in segments] == sentences
    assert segments[0]["start"] == pytest.approx(1.0)
    assert segments[1]["start"] - segments[0]["end"] == pytest.approx(1.5, abs=1e-3)
    assert segments[2]["start"] - segments[1]["end"] == pytest.approx(2.0, abs=1e-3)
    with wave.open(str(out)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (SAMPLE_RATE, 1, 2)
        audio = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    assert len(audio) / SAMPLE_RATE == pytest.approx(segments[-1]["end"] + 0.5, abs=1e-3)
    for segment in segments:
        start, end = round(segment["start"] * SAMPLE_RATE), round(segment["end"] * SAMPLE_RATE)
        # Speech right at both reported edges, silence just outside them.
        assert audio[start] != 0 and audio[end - 1] != 0
        assert not audio[start - 160 : start].any() and not audio[end : end + 160].any()
