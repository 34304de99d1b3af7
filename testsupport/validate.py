"""Check cues and subtitle files against the rules cue building promises.

Test support (the product writes through writers.py and never imports this): each problem
comes back as a readable sentence naming the cue, so a failure says what is wrong, not just
that it is.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pysubs2

from fireredasr_fast.cues import CueOptions, reading_seconds
from fireredasr_fast.results import Cue
from fireredasr_fast.textlines import join_lines, text_width

# Subtitle formats store times in ms (srt, vtt) or cs (ass); comparisons allow that rounding.
_TIME_EPS = 0.011
_FORMAT_BY_SUFFIX = {".srt": "srt", ".vtt": "vtt", ".ass": "ass", ".ssa": "ssa"}


def _fmt(t: float) -> str:
    return f"{t:.3f}s"


def validate_cues(
    cues: list[Cue],
    duration: float,
    speech: list[tuple[float, float]] | None = None,
    options: CueOptions | None = None,
    tolerance: float = 0.25,
) -> list[str]:
    """Problems with `cues`; an empty list means they are valid.

    `tolerance` widens each speech region when checking that a cue overlaps speech.
    """
    opt = options or CueOptions()
    problems: list[str] = []
    regions = sorted(speech) if speech is not None else None
    prev: Cue | None = None
    for n, cue in enumerate(cues, 1):
        name = f"cue {n} ({_fmt(cue.start)}-{_fmt(cue.end)})"
        problems += _span_problems(cue, prev, duration, opt, name)
        problems += _text_problems(cue, opt, name)
        if regions is not None and not any(cue.start < b + tolerance and cue.end > a - tolerance for a, b in regions):
            problems.append(f"{name}: no speech within {tolerance}s")
        problems += _timing_problems(cues, n - 1, duration, opt, name)
        prev = cue
    return problems


def _span_problems(cue: Cue, prev: Cue | None, duration: float, opt: CueOptions, name: str) -> list[str]:
    """A cue's times: start before end, inside the file, at most max_duration, after the previous cue."""
    problems = []
    if not cue.start < cue.end:
        problems.append(f"{name}: start is not before end")
    if cue.start < -_TIME_EPS or (duration > 0 and cue.end > duration + _TIME_EPS):
        problems.append(f"{name}: outside the file [0, {_fmt(duration)}]")
    if cue.end - cue.start > opt.max_duration + _TIME_EPS:
        problems.append(f"{name}: lasts {cue.end - cue.start:.3f}s, more than {opt.max_duration}s")
    if prev is not None:
        if cue.start < prev.start:
            problems.append(f"{name}: starts before the previous cue")
        elif cue.start < prev.end - 1e-6:
            problems.append(f"{name}: overlaps the previous cue (ends {_fmt(prev.end)})")
    return problems


def _text_problems(cue: Cue, opt: CueOptions, name: str) -> list[str]:
    """A cue's text: not empty, at most max_lines lines, none wider than max_line_width."""
    problems = []
    lines = list(cue.lines)
    if not any(line.strip() for line in lines):
        problems.append(f"{name}: empty text")
    if len(lines) > opt.max_lines:
        problems.append(f"{name}: {len(lines)} lines, more than {opt.max_lines}")
    for line in lines:
        width = text_width(line)
        if width > opt.max_line_width:
            problems.append(f"{name}: line {line!r} is {width:g} wide, more than {opt.max_line_width:g}")
    return problems


def _timing_problems(cues: list[Cue], i: int, duration: float, opt: CueOptions, name: str) -> list[str]:
    """The minimum duration and the reading speed (cues.tidy_cues' promises): a cue shorter than
    min_duration while silence before or after it (more than min_gap from its neighbours,
    inside the file) could have held it; a cue reading faster than the limits while silence
    after it could."""
    cue = cues[i]
    length = cue.end - cue.start
    hi = duration if duration > 0 else math.inf
    after = (cues[i + 1].start - opt.min_gap if i + 1 < len(cues) else hi) - cue.end
    before = cue.start - (cues[i - 1].end + opt.min_gap if i > 0 else 0.0)
    problems = []
    if length < min(opt.min_duration, hi) - _TIME_EPS and (after > _TIME_EPS or before > _TIME_EPS):
        problems.append(f"{name}: lasts {length:.3f}s, less than {opt.min_duration}s, though silence is next to it")
    seconds = reading_seconds(cue.lines, opt)
    if after > _TIME_EPS and length < min(seconds, opt.max_duration) - _TIME_EPS:
        problems.append(f"{name}: on screen {length:.3f}s, its text needs {seconds:.3f}s, and silence follows")
    return problems


def load_subtitle_cues(path: str | os.PathLike) -> list[Cue]:
    """Cues from an srt, vtt or ass file, with formatting tags removed."""
    suffix = Path(path).suffix.lower()
    fmt = _FORMAT_BY_SUFFIX.get(suffix)
    if fmt is None:
        raise ValueError(f"not a subtitle file: {path}")
    # The format comes from the suffix: pysubs2 cannot autodetect an empty (cue-less) srt.
    subs = pysubs2.load(str(path), encoding="utf-8", format_=fmt)
    return [Cue(ev.start / 1000, ev.end / 1000, ev.plaintext.split("\n")) for ev in subs if not ev.is_comment]


def validate_subtitle_file(
    path: str | os.PathLike,
    duration: float,
    speech: list[tuple[float, float]] | None = None,
    options: CueOptions | None = None,
    tolerance: float = 0.25,
) -> list[str]:
    """Parse a subtitle file with pysubs2 and validate its cues; unreadable files are a problem too."""
    try:
        cues = load_subtitle_cues(path)
    except Exception as exc:  # any parse failure is a finding, not a crash of the checker
        return [f"{path}: cannot be parsed: {exc}"]
    return [f"{path}: {p}" for p in validate_cues(cues, duration, speech, options, tolerance)]


REVIEW_COLUMNS = ["start", "end", "confidence", "reason", "text"]


def _seconds(timecode: str) -> float:
    hours, minutes, seconds = timecode.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def validate_review_file(path: str | os.PathLike, duration: float, cues: list[Cue] | None = None) -> list[str]:
    """Problems with a `<stem>.review.tsv`: its header, rows in time order inside the file,
    confidences in [0, 1], a reason on every row; with `cues` (the file's subtitles), every
    row's text is a cue's text at that time."""
    try:
        rows = [line.split("\t") for line in Path(path).read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        return [f"{path}: cannot be read: {exc}"]
    if not rows or rows[0] != REVIEW_COLUMNS:
        return [f"{path}: header is not {' '.join(REVIEW_COLUMNS)}"]
    problems: list[str] = []
    previous = -1.0
    texts = {(round(c.start, 2), join_lines(c.lines)) for c in cues} if cues is not None else None
    for n, row in enumerate(rows[1:], 2):
        name = f"{path}: line {n}"
        if len(row) != len(REVIEW_COLUMNS):
            problems.append(f"{name}: {len(row)} columns, not {len(REVIEW_COLUMNS)}")
            continue
        start_code, end_code = row[0], row[1]
        try:
            start, end = _seconds(start_code), _seconds(end_code)
        except ValueError:
            problems.append(f"{name}: times {start_code!r} {end_code!r} are not H:MM:SS.mmm")
            continue
        problems += _review_row_problems(name, row, (start, end), previous, duration, texts)
        previous = start
    return problems


def _review_row_problems(
    name: str,
    row: list[str],
    span: tuple[float, float],
    previous: float,
    duration: float,
    texts: set[tuple[float, str]] | None,
) -> list[str]:
    """One review row (its times parsed into `span`): inside the file, after the previous row
    (which started at `previous`), a confidence in [0, 1], a reason, the text of a cue."""
    start_code, end_code, confidence, reason, text = row
    start, end = span
    problems = []
    if not 0 <= start <= end <= duration + _TIME_EPS:
        problems.append(f"{name}: {start_code}-{end_code} is not a span inside the file")
    if start < previous:
        problems.append(f"{name}: not in time order")
    if confidence and not 0.0 <= float(confidence) <= 1.0:
        problems.append(f"{name}: confidence {confidence} outside [0, 1]")
    if not reason:
        problems.append(f"{name}: no reason")
    if texts is not None and text and (round(start, 2), text) not in texts:
        problems.append(f"{name}: {text!r} at {start_code} is no cue of the subtitles")
    return problems
