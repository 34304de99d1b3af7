"""FireRedASR's vocabulary: one Chinese character per token, English as SentencePiece
pieces ("▁" marks a word start). Decoding needs only `dict.txt`; the SentencePiece model is
loaded lazily for encoding text (forced alignment, tests).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

SPM_SPACE = "▁"
_CJK = re.compile(r"([\u3400-\u4dbf\u4e00-\u9fff])")
_PUNCT = re.compile(r"[，。？！,.?!]")


def read_dict(dict_file: str | os.PathLike) -> list[str]:
    """`dict.txt` -> tokens by id, with upstream's reading rules (`<space>` is " ", a line
    with one field takes its line number as id, an empty line is a space)."""
    tokens: list[str] = []
    with open(dict_file, encoding="utf-8") as f:
        for lineno, line in enumerate(f):
            fields = line.strip().split()
            if len(fields) >= 2:
                word, index = fields[0], int(fields[1])
            elif len(fields) == 1:
                word, index = fields[0], lineno
            else:
                word, index = " ", lineno
            if index != len(tokens):
                raise ValueError(f"{dict_file}:{lineno + 1}: id {index} out of order (expected {len(tokens)})")
            tokens.append(" " if word == "<space>" else word)
    return tokens


class Tokenizer:
    def __init__(self, dict_file: str | os.PathLike, spm_file: str | os.PathLike | None = None) -> None:
        self.id_to_token = read_dict(dict_file)
        self.token_to_id = {tok: i for i, tok in enumerate(self.id_to_token)}
        self.unk_id = self.token_to_id.get("<unk>", 1)
        self._spm_file = Path(spm_file) if spm_file else None
        self._sp = None

    def __len__(self) -> int:
        return len(self.id_to_token)

    def tokens(self, ids: Sequence[int]) -> list[str]:
        return [self.id_to_token[i] for i in ids]

    def detokenize(self, ids: Sequence[int]) -> str:
        """Join the tokens, turn "▁" into spaces, strip (upstream's rule)."""
        return "".join(self.tokens(ids)).replace(SPM_SPACE, " ").strip()

    def encode(self, text: str) -> list[int]:
        """Text -> ids as upstream tokenises training text (upper case, punctuation dropped,
        CJK characters one by one, the rest through SentencePiece)."""
        if self._sp is None:
            import sentencepiece as spm

            if self._spm_file is None:
                raise ValueError("encoding English needs the SentencePiece model")
            self._sp = spm.SentencePieceProcessor(model_file=str(self._spm_file))
        text = _PUNCT.sub(" ", text.upper())
        ids: list[int] = []
        for part in _CJK.split(text.strip()):
            if not part.strip():
                continue
            pieces = [part] if _CJK.fullmatch(part) else self._sp.encode(part.strip(), out_type=str)
            ids.extend(self.token_to_id.get(p, self.unk_id) for p in pieces)
        return ids
