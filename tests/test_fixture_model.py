"""The tiny fixture model (tests/fixtures/tiny_model) really recognises speech.

It is loaded and run through the reference implementation (PyPI `fireredasr`), on renderings
synthesised here with espeak-ng in voices, speeds and pitches that its training never used:
single sentences, and several sentences joined by pauses (what a VAD segment holds).
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

from make_programme import SAMPLE_RATE, make_programme, synthesize, trim, write_wav  # noqa: E402

needs_tools = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")

# (text, espeak voice, speed, pitch): variants m3/f3/m7, these speeds and these pitches are
# all outside the fixture's training renderings (see train_tiny_model.py).
HELD_OUT = (
    ("今天天气很好", "cmn+m3", 150, 43),
    ("请打开字幕", "cmn+f3", 175, 58),
    ("我们下次再见", "cmn+m7", 130, 72),
    ("THANK YOU FOR WATCHING", "en+f3", 150, 43),
)


# Several held-out renderings joined by pauses: (sentences, voice, speed, pauses in seconds).
MULTI_SENTENCE = (
    (("今天天气很好", "请打开字幕", "我们下次再见"), "cmn+f3", 150, (0.6, 0.9)),
    (("THANK YOU FOR WATCHING", "SEE YOU NEXT TIME"), "en+m3", 175, (0.7,)),
)


def _normalise(text: str) -> str:
    # Mandarin is compared without spaces, English as upper-cased words.
    return " ".join(text.upper().split()) if text.isascii() else "".join(text.split())


def _transcribe(paths: list[str]) -> list[str]:
    """Decode WAV files with the fixture through the reference implementation (beam 3)."""
    import torch
    from fireredasr.data.asr_feat import ASRFeatExtractor
    from fireredasr.models.fireredasr_aed import FireRedAsrAed
    from fireredasr.tokenizer.aed_tokenizer import ChineseCharEnglishSpmTokenizer

    from fireredasr_fast.engines.firered.checkpoint import check_model_dir, load_package

    model_dir = check_model_dir(MODEL_DIR)
    package = load_package(model_dir / "model.pth.tar")
    model = FireRedAsrAed.from_args(package["args"])
    model.load_state_dict(package["model_state_dict"], strict=True)
    model.eval()
    tokenizer = ChineseCharEnglishSpmTokenizer(str(model_dir / "dict.txt"), str(model_dir / "train_bpe1000.model"))
    extractor = ASRFeatExtractor(str(model_dir / "cmvn.ark"))
    feats, lengths, _ = extractor(paths)
    with torch.no_grad():
        hyps = model.transcribe(feats, lengths, beam_size=3, softmax_smoothing=1.25, length_penalty=0.6)
    return [tokenizer.detokenize([int(t) for t in hyp[0]["yseq"].tolist()]) for hyp in hyps]


def test_fixture_position_tables_cover_a_segment_and_nothing_more() -> None:
    """The stored position tables are upstream's fixed tables; the decoder's is cut to the
    positions a 60 s segment can need (upstream's encoder table has a fixed size)."""
    pytest.importorskip("fireredasr")
    import torch
    from fireredasr.models.module.conformer_encoder import RelPositionalEncoding
    from fireredasr.models.module.transformer_decoder import PositionalEncoding

    from fireredasr_fast.engines.firered.checkpoint import SEGMENT_PE_MAXLEN, load_package

    package = load_package(MODEL_DIR / "model.pth.tar")
    args, state = package["args"], package["model_state_dict"]
    assert args.pe_maxlen == SEGMENT_PE_MAXLEN
    # The stored tables were computed by the torch that wrote the fixture; sin and exp may round
    # the last bit differently in another build, so compare within float32 rounding.
    torch.testing.assert_close(
        state["decoder.positional_encoding.pe"], PositionalEncoding(args.d_model, args.pe_maxlen).pe
    )
    torch.testing.assert_close(state["encoder.positional_encoding.pe"], RelPositionalEncoding(args.d_model).pe)


@pytest.mark.slow
@needs_tools
def test_fixture_model_recognises_held_out_speech(tmp_path: Path) -> None:
    pytest.importorskip("fireredasr")
    jiwer = pytest.importorskip("jiwer")

    paths = []
    for index, (text, voice, speed, pitch) in enumerate(HELD_OUT):
        path = tmp_path / f"held_out_{index}.wav"
        write_wav(path, synthesize(text, voice=voice, speed=speed, pitch=pitch))
        paths.append(str(path))
    texts = _transcribe(paths)

    refs = [_normalise(text) for text, *_ in HELD_OUT]
    outs = [_normalise(text) for text in texts]
    error_rate = jiwer.cer(refs, outs)
    assert error_rate < 0.2, f"CER {error_rate:.3f}: {list(zip(refs, outs, strict=True))}"
    assert len(set(outs)) == len(outs), f"different audio gave the same text: {outs}"


@pytest.mark.slow
@needs_tools
@pytest.mark.xfail(
    reason="the fixture decodes held-out multi-sentence segments only partly (see tiny_model/TRAINING.md)",
    strict=False,
)
def test_fixture_model_recognises_every_sentence_of_a_segment(tmp_path: Path) -> None:
    """A segment of 2-3 sentences decodes to all of them, not just the first."""
    pytest.importorskip("fireredasr")
    jiwer = pytest.importorskip("jiwer")
    import numpy as np

    paths = []
    for index, (sentences, voice, speed, pauses) in enumerate(MULTI_SENTENCE):
        pieces = [np.zeros(SAMPLE_RATE // 5, dtype=np.int16)]
        for number, text in enumerate(sentences):
            pieces.append(trim(synthesize(text, voice=voice, speed=speed, pitch=40 + 10 * number)))
            gap = pauses[number] if number < len(pauses) else 0.2
            pieces.append(np.zeros(round(gap * SAMPLE_RATE), dtype=np.int16))
        path = tmp_path / f"segment_{index}.wav"
        write_wav(path, np.concatenate(pieces))
        paths.append(str(path))
    texts = _transcribe(paths)

    for (sentences, *_), text in zip(MULTI_SENTENCE, texts, strict=True):
        joiner = " " if sentences[0].isascii() else ""
        ref, out = _normalise(joiner.join(sentences)), _normalise(text)
        error_rate = jiwer.cer(ref, out)
        assert error_rate < 0.2, f"CER {error_rate:.3f}: {out!r} != {ref!r}"
        # Stopping after the first sentence would lose at least a third of the characters.
        assert len(out) > 0.8 * len(ref), f"sentences missing: {out!r} != {ref!r}"


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
