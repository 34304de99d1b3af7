"""The Chinese script of transcripts: simplified, traditional, or as the engine wrote it.

Whisper writes Mandarin in either script, sometimes both in one sentence (停滯 beside 简体);
FireRedASR writes simplified. Every hypothesis of Chinese speech goes through OpenCC here
(character and phrase tables, e.g. 乾燥 -> 干燥 but 乾隆 kept), its text and each token alike,
so tokens keep their times.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from .results import Hypothesis

#: --zh-script choices; the first is the default.
ZH_SCRIPTS = ("simplified", "traditional", "keep")
#: OpenCC's configuration per script: mainland simplified, OpenCC's standard traditional.
_OPENCC_CONFIGS = {"simplified": "t2s", "traditional": "s2t"}
#: Languages whose Han characters are Chinese. None: the engine did not say (FireRedASR,
#: whose languages are Mandarin, Chinese dialects and English). Japanese kanji are left alone.
CHINESE_LANGUAGES = frozenset({None, "zh", "yue"})


@functools.cache
def _converter(script: str) -> Any:
    import opencc

    return opencc.OpenCC(_OPENCC_CONFIGS[script])


def _has_han(text: str) -> bool:
    return any("\u3400" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff" for ch in text)


def convert_text(text: str, script: str) -> str:
    """`text` in `script` (one of ZH_SCRIPTS); text without Han characters is returned as is."""
    if script not in ZH_SCRIPTS:
        raise ValueError(f"unknown Chinese script {script!r}; choose from {', '.join(ZH_SCRIPTS)}")
    if script == "keep" or not _has_han(text):
        return text
    return _converter(script).convert(text)


def convert_hypothesis(hypothesis: Hypothesis, script: str) -> Hypothesis:
    """The hypothesis with its text and tokens in `script` when its language is Chinese (or
    unknown); otherwise, or with "keep", the hypothesis itself."""
    if script == "keep" or hypothesis.language not in CHINESE_LANGUAGES or not _has_han(hypothesis.text):
        return hypothesis
    return dataclasses.replace(
        hypothesis,
        text=convert_text(hypothesis.text, script),
        tokens=[convert_text(token, script) for token in hypothesis.tokens],
    )
