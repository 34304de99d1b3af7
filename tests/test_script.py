"""--zh-script: Chinese text in one script through OpenCC, for both engines' hypotheses."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FIXTURES, SAMPLES

from fireredasr_fast.results import Hypothesis
from fireredasr_fast.script import ZH_SCRIPTS, convert_hypothesis, convert_text
from fireredasr_fast.transcribe import PreparedFile, TranscribeOptions, assemble_result, transcribe_file
from fireredasr_fast.vad import SpeechSegment

pytest.importorskip("opencc")

# Whisper base's output on the AISHELL sample: one traditional character among simplified ones.
MIXED = "甚至出现交易几乎停滯的情况"


def test_convert_text_each_way():
    assert convert_text(MIXED, "simplified") == "甚至出现交易几乎停滞的情况"
    assert convert_text(MIXED, "traditional") == "甚至出現交易幾乎停滯的情況"
    assert convert_text(MIXED, "keep") == MIXED
    assert convert_text("It was the best of times.", "traditional") == "It was the best of times."
    with pytest.raises(ValueError, match="unknown Chinese script"):
        convert_text(MIXED, "cantonese")


def test_hypothesis_tokens_follow_the_text_and_keep_their_times():
    tokens = ["甚至", "出现", "交易", "几乎", "停滯", "的", "情况"]
    times = [(i * 0.3, i * 0.3 + 0.25) for i in range(len(tokens))]
    hyp = Hypothesis(text=MIXED, tokens=tokens, token_times=times, language="zh")
    out = convert_hypothesis(hyp, "simplified")
    assert out.text == "甚至出现交易几乎停滞的情况"
    assert out.tokens[4] == "停滞" and len(out.tokens) == len(tokens)
    assert out.token_times == times
    assert hyp.text == MIXED  # the engine's own hypothesis is not changed in place


def test_only_chinese_is_converted():
    japanese = Hypothesis(text="東京は晴れです", tokens=["東京", "は", "晴れ", "です"], language="ja")
    assert convert_hypothesis(japanese, "simplified") is japanese
    unknown = Hypothesis(text=MIXED, tokens=[MIXED])  # FireRedASR does not say: Chinese
    assert convert_hypothesis(unknown, "simplified").text == "甚至出现交易几乎停滞的情况"
    assert convert_hypothesis(Hypothesis(text=MIXED, language="zh"), "keep").text == MIXED


def test_assemble_result_applies_the_option():
    prepared = PreparedFile("x.wav", np.zeros(16000 * 4, dtype=np.int16), [SpeechSegment(0.5, 3.5)], [(0.5, 3.5)])
    hyp = Hypothesis(text=MIXED, tokens=list(MIXED), language="zh")
    for script, expected in (("simplified", "停滞"), ("traditional", "停滯"), ("keep", "停滯")):
        result = assemble_result(prepared, [hyp], TranscribeOptions(zh_script=script))
        assert expected in result.segments[0].text
        assert expected in "".join(line for cue in result.cues for line in cue.lines)
        assert result.info["language"] == "zh" and result.segments[0].language == "zh"
    assert TranscribeOptions().zh_script == ZH_SCRIPTS[0] == "simplified"


def test_firered_output_goes_through_the_same_option():
    """The trained FireRedASR-format fixture writes simplified; --zh-script traditional converts it."""
    from fireredasr_fast.engines import EngineSpec

    engine = EngineSpec("firered", str(FIXTURES / "tiny_model")).build()
    result = transcribe_file(SAMPLES / "aishell_zh.mkv", engine, TranscribeOptions(zh_script="traditional"))
    assert [s.text for s in result.segments] == ["甚至出現交易幾乎停滯的情況", "一二線城市雖然也處於調整中"]
    assert "language" not in result.info  # FireRedASR does not detect a language
