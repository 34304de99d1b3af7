"""Languages with the multilingual Whisper base: detected per segment, never mixed in one
encoder window, --language overrides; the file's language is that of most of its speech."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import SAMPLES

from fireredasr_fast.audio import decode_audio, to_float32
from fireredasr_fast.engines.whisper import bundled
from fireredasr_fast.errors import ModelDirError
from fireredasr_fast.results import SAMPLE_RATE, Segment
from fireredasr_fast.transcribe import file_language

pytest.importorskip("faster_whisper")


@pytest.fixture(scope="module")
def base() -> Any:
    if not bundled.bundled_installed("base"):
        pytest.skip(f"Whisper base is not installed ({bundled.INSTALL_HINT})")
    from fireredasr_fast.engines.whisper.engine import WhisperEngine, resolve_model_path

    return WhisperEngine(resolve_model_path(None, "base"), cpu_threads=1, beam_size=1)


@pytest.fixture(scope="module")
def speech() -> tuple[Any, Any, Any]:
    mandarin = to_float32(decode_audio(SAMPLES / "aishell_zh.mkv"))  # 12.8 s
    english = to_float32(decode_audio(SAMPLES / "two_cities.mp4"))
    return mandarin, english[: 5 * SAMPLE_RATE], english[5 * SAMPLE_RATE : 30 * SAMPLE_RATE]


def test_each_segment_gets_its_own_language(base: Any, speech: tuple[Any, Any, Any], monkeypatch):
    # 12.8 s + 5 s would share one 30 s window if languages were not kept apart, and one of
    # the two would then be decoded in the other's language. The 25 s segment is long enough
    # to get a window of its own, where its language is read without an extra encoder pass.
    mandarin, short_english, long_english = speech
    encoded: list[int] = []
    real_encode = base._model.encode

    def counting_encode(features: Any, *args: Any, **kwargs: Any) -> Any:
        encoded.append(len(features))
        return real_encode(features, *args, **kwargs)

    monkeypatch.setattr(base._model, "encode", counting_encode)
    zh, en, en_long = base.transcribe([mandarin, short_english, long_english])
    assert (zh.language, en.language, en_long.language) == ("zh", "en", "en")
    assert "交易" in zh.text and "调整" in zh.text.replace("調", "调")
    assert en.text.lower().startswith("it was the best of times")
    assert "age of wisdom" in en_long.text.lower()
    # Two short segments detected alone, then three windows: none shared across languages, the
    # long segment not encoded twice, and each language aligned on its rows of the batch's encoding.
    assert sum(encoded) == 2 + 3


def test_language_option_overrides_detection(base: Any, speech: tuple[Any, Any, Any]):
    from fireredasr_fast.engines.whisper.engine import WhisperEngine

    forced = WhisperEngine(base.model_path, cpu_threads=1, beam_size=1, language="zh")
    (hyp,) = forced.transcribe([speech[1]])
    assert hyp.language == "zh"
    assert forced.describe()["language"] == "zh" and base.describe()["language"] is None
    assert forced.timings["detect"] == 0.0 and base.timings["detect"] > 0.0
    with pytest.raises(ModelDirError, match="unknown Whisper language 'klingon'"):
        WhisperEngine(base.model_path, cpu_threads=1, language="klingon")


def test_file_language_is_that_of_most_speech():
    segments = [
        Segment(0.0, 4.0, "你好", language="zh"),
        Segment(4.0, 5.0, "hello", language="en"),
        Segment(5.0, 8.0, "谢谢", language="zh"),
        Segment(8.0, 20.0, "", language="en"),  # no text: not counted
    ]
    assert file_language(segments) == "zh"
    assert file_language([Segment(0.0, 1.0, "x")]) is None
    assert Segment(0.0, 1.0, "hello", language="en").to_dict()["language"] == "en"
    assert "language" not in Segment(0.0, 1.0, "x").to_dict()
