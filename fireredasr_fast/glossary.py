"""Glossaries (`--hotwords FILE`): the names and terms the recognisers should prefer.

A glossary file is UTF-8 text with one term per line and an optional weight after it
(`阿里巴巴 2.0`: a last field that reads as a number is the weight, 1.0 otherwise; write
`iPhone 15 1.0` for a term that ends in a number). Blank lines and everything after a `#` at
the start of a line or after white space are ignored. A term given twice keeps its last weight.

A folder's own glossary, `hotwords.txt` beside its media files (FOLDER_FILE), applies to the
files of that folder only, on top of the global one: its terms are added, and where a term is
in both, the folder's weight wins (it is the more specific list). A file's glossary is part of
its recognition fingerprint (runner/settings.py), and its JSON says which terms were applied
and where each was recognised (`report`).

How the engines use it: FireRedASR biases its beam search (engines/firered/context.py: a
bonus of weight x score per token of a term, given back when a hypothesis leaves the term
unfinished); Whisper gets the terms as faster-whisper's `hotwords` prompt.

A term the bias writes where the speech lacks it is left to the review rules (guard.py): the
token confidences they judge are the decoder's own, the bonuses left out, so such a cue shows
a weak token or a low mean (measured: docs/benchmarks.md#glossary-at-scale-and-forced-terms-issue-31).
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import FireRedFastError, OptionError, check_number
from .flags import DECODING, section
from .results import Cue, Segment

#: A folder's own glossary file, beside its media files.
FOLDER_FILE = "hotwords.txt"
#: Beam-search bonus per token of a term at weight 1.0 (log-probability units): recall against
#: false insertions, measured in docs/benchmarks.md#glossary-hotwords-issue-31.
DEFAULT_SCORE = 1.0
# Bounds that keep one line from swamping the search (a weight) or a file from being a corpus.
MAX_WEIGHT = 10.0
MAX_TERMS = 10000
MAX_TERM_CHARS = 100
_COMMENT = re.compile(r"(^|\s)#.*$")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


class GlossaryError(FireRedFastError):
    """A glossary file that cannot be used: str(exc) names the file, the line and the cause."""


@dataclass(frozen=True)
class Glossary:
    """Terms with their weights, in file order, and the bonus per token at weight 1.0."""

    terms: tuple[tuple[str, float], ...] = ()
    score: float = DEFAULT_SCORE
    sources: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.terms)

    def merged(self, other: Glossary) -> Glossary:
        """These terms and `other`'s; `other`'s weight wins for a term in both."""
        weights = dict(self.terms)
        weights.update(other.terms)
        return Glossary(tuple(weights.items()), self.score, self.sources + other.sources)

    def bonuses(self) -> tuple[tuple[str, float], ...]:
        """(term, bonus per token): weight x score."""
        return tuple((term, weight * self.score) for term, weight in self.terms)

    def fingerprint(self) -> dict[str, Any]:
        """What recognition depends on (not where the terms came from)."""
        return {"terms": [[term, weight] for term, weight in self.terms], "score": self.score}

    def report(self, segments: Sequence[Segment], cues: Sequence[Cue]) -> dict[str, Any]:
        """The JSON's `hotwords`: the terms applied, their files, and where each was recognised."""
        return {
            "terms": [{"term": term, "weight": weight} for term, weight in self.terms],
            "score": self.score,
            "files": list(self.sources),
            "found": find_terms([term for term, _ in self.terms], segments, cues),
        }


def _normal(text: str) -> str:
    """Text as terms are matched: case and white space ignored (Whisper spaces CJK unevenly)."""
    return "".join(text.split()).casefold()


def find_terms(terms: Sequence[str], segments: Sequence[Segment], cues: Sequence[Cue]) -> list[dict[str, Any]]:
    """Every occurrence of a term in the segments' text: the segment (index, times) and the
    cue that shows it (its times), when one cue holds the whole term."""
    found: list[dict[str, Any]] = []
    for index, segment in enumerate(segments):
        text = _normal(segment.text)
        inside = [cue for cue in cues if segment.start <= cue.start < segment.end]
        for term in terms:
            needle = _normal(term)
            count = text.count(needle) if needle else 0
            showing = [cue for cue in inside if needle in _normal(cue.text)]
            for k in range(count):
                where: dict[str, Any] = {"term": term, "segment": index}
                where["segment_start"], where["segment_end"] = round(segment.start, 3), round(segment.end, 3)
                if k < len(showing):
                    where["start"], where["end"] = round(showing[k].start, 3), round(showing[k].end, 3)
                found.append(where)
    return found


def parse_glossary(text: str, source: str) -> tuple[tuple[str, float], ...]:
    """A glossary file's text -> (term, weight) pairs; GlossaryError names `source` and the line."""
    weights: dict[str, float] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        entry = _COMMENT.sub("", line).strip()
        if not entry:
            continue
        parts = entry.split()
        term, weight = entry, 1.0
        if len(parts) > 1 and _NUMBER.match(parts[-1]):
            term, weight = " ".join(parts[:-1]), float(parts[-1])
        elif _NUMBER.match(entry):
            raise GlossaryError(f"{source}: line {number}: a weight without a term")
        term = " ".join(term.split())
        if not (0.0 < weight <= MAX_WEIGHT) or not math.isfinite(weight):
            raise GlossaryError(f"{source}: line {number}: weight {parts[-1]} must be > 0 and <= {MAX_WEIGHT:g}")
        if len(term) > MAX_TERM_CHARS:
            raise GlossaryError(f"{source}: line {number}: a term longer than {MAX_TERM_CHARS} characters")
        weights.pop(term, None)  # the last weight, in the last place
        weights[term] = weight
        if len(weights) > MAX_TERMS:
            raise GlossaryError(f"{source}: more than {MAX_TERMS} terms")
    return tuple(weights.items())


def read_glossary(path: str | os.PathLike, score: float = DEFAULT_SCORE) -> Glossary:
    """A glossary file; GlossaryError (one line: the file and the cause) when it cannot be used."""
    stat = _stat(path)
    return Glossary(_read_cached(str(path), stat.st_size, stat.st_mtime_ns), score, (str(path),))


def _stat(path: str | os.PathLike) -> os.stat_result:
    try:
        stat = os.stat(path)
    except OSError as exc:
        raise GlossaryError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not Path(path).is_file():
        raise GlossaryError(f"{path}: not a file")
    return stat


@lru_cache(maxsize=256)
def _read_cached(path: str, size: int, mtime_ns: int) -> tuple[tuple[str, float], ...]:
    """One parse per file version (size and mtime are the cache key's, not read here)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise GlossaryError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise GlossaryError(f"{path}: not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start})") from None
    return parse_glossary(text, path)


@dataclass(frozen=True)
class HotwordOptions:
    """`--hotwords FILE` (read and checked here, once) and the folders' own glossaries.

    file: the global glossary ("" for none). score: the bonus per token at weight 1.0.
    folder_file: the name of a folder's own glossary ("" to ignore folders' files).
    """

    file: str = ""
    score: float = DEFAULT_SCORE
    folder_file: str = FOLDER_FILE
    glossary: Glossary = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        check_number("hotwords_score", self.score, 0.0, above=True)
        if "/" in self.folder_file or self.folder_file in (".", ".."):
            raise OptionError("hotwords_folder_file", f"must be a file name, not {self.folder_file!r}")
        glossary = Glossary((), self.score)
        if self.file:
            try:
                glossary = read_glossary(self.file, self.score)
            except GlossaryError as exc:
                raise OptionError("hotwords", str(exc)) from None
        object.__setattr__(self, "glossary", glossary)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        section(parser, DECODING).add_argument(
            "--hotwords",
            metavar="FILE",
            help="a glossary the recognition should prefer: one term per line, an optional weight after it "
            f"(e.g. '阿里巴巴 2.0'), '#' comments; a folder's own {FOLDER_FILE} adds to it for that folder's files",
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> HotwordOptions:
        return cls(file=args.hotwords or "")

    def for_file(self, media: str | os.PathLike) -> Glossary:
        """The glossary of one media file: the global one and its folder's own (which wins for a
        term in both). GlossaryError when the folder's file cannot be used."""
        if not self.folder_file:
            return self.glossary
        own = Path(media).parent / self.folder_file
        if not own.exists() or (self.file and own.resolve() == Path(self.file).resolve()):
            return self.glossary
        return self.glossary.merged(read_glossary(own, self.score))
