"""Output writers, one small class per format, in the manner of openai-whisper's result writers.

Every file is written atomically (fsutil), so an interrupted run never leaves a truncated
subtitle behind, and a resumed run can trust any output file that exists; `write_result`
writes a file's formats all together or none of them.
"""

from __future__ import annotations

import abc
import argparse
import dataclasses
import os
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path, PurePath
from typing import Any

import pysubs2

from .flags import SPEAKERS, section
from .fsutil import atomic_write_text, discard, json_text, replace_all, stage_bytes
from .guard import NO_TEXT
from .results import FileResult, SpokenWord
from .textlines import join_lines

FORMATS: tuple[str, ...] = ("srt", "vtt", "ass", "txt", "json", "tsv", "review")


@dataclass(frozen=True)
class WriterOptions:
    # With speaker labels: start an SRT cue with "S1: " where the speaker changes (SRT has no
    # voice markup of its own, and a prefix is text players show).
    srt_speaker_prefix: bool = False

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        section(parser, SPEAKERS).add_argument(
            "--srt-speaker-prefix",
            action="store_true",
            help="with --speakers: start an SRT cue with 'S1: ' where the speaker changes",
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> WriterOptions:
        return cls(srt_speaker_prefix=args.srt_speaker_prefix)


class ResultWriter(abc.ABC):
    extension: str = ""

    def __init__(self, options: WriterOptions | None = None) -> None:
        self.options = options or WriterOptions()

    @abc.abstractmethod
    def format(self, result: FileResult) -> str:
        """The whole file as text."""

    def write(self, result: FileResult, path: str | os.PathLike) -> None:
        # Format fully before touching the disk: a formatting error leaves the old file intact.
        atomic_write_text(path, self.format(result))


# Characters that srt/vtt/ass readers take as markup ({\tags}, <tags>, \N escapes), so a
# transcript containing them would lose text on screen; they are shown as look-alikes of the
# same display width instead (the line widths cue building measured still hold).
_MARKUP_LOOKALIKES = str.maketrans({"{": "(", "}": ")", "<": "‹", ">": "›", "\\": "∖"})


class SubtitleWriter(ResultWriter):
    """srt, vtt and ass through pysubs2, so escaping and time formats follow one tested library."""

    def subtitles(self, result: FileResult) -> pysubs2.SSAFile:
        subs = pysubs2.SSAFile()
        previous: str | None = None
        for cue in result.cues:
            lines = [line.strip().translate(_MARKUP_LOOKALIKES) for line in cue.lines if line.strip()]
            if not lines:
                continue
            if cue.speaker is not None:
                lines[0] = self.voice(cue.speaker, cue.speaker != previous) + lines[0]
                previous = cue.speaker
            start, end = round(cue.start * 1000), round(cue.end * 1000)
            # "\N" is the ASS hard line break; pysubs2 turns it into a newline for srt and vtt.
            event = pysubs2.SSAEvent(start=start, end=end, text=r"\N".join(lines))
            if cue.flags:
                event.style = REVIEW_STYLE
                # The reasons travel with the event (ASS editors show the Name/Actor field)...
                event.name = "+".join(cue.flags)
            if cue.speaker is not None:
                # ...unless it names the speaker, as ASS means it to (the review list keeps them).
                event.name = cue.speaker
            subs.append(event)
        return subs

    def voice(self, speaker: str, changed: bool) -> str:
        """What a cue's text starts with to say who speaks (`changed`: not the previous cue's speaker)."""
        return ""

    def format(self, result: FileResult) -> str:
        return self.subtitles(result).to_string(self.extension)


class WriteSRT(SubtitleWriter):
    # An SRT file with no cues is empty. pysubs2 parses it when told the format (as the
    # validator does); format autodetection cannot work on an empty file whatever is written.
    extension = "srt"

    def voice(self, speaker: str, changed: bool) -> str:
        return f"{speaker}: " if changed and self.options.srt_speaker_prefix else ""


class WriteVTT(SubtitleWriter):
    extension = "vtt"

    def voice(self, speaker: str, changed: bool) -> str:
        # A WebVTT voice span; its end tag may be left out when it runs to the cue's end.
        return f"<v {speaker}>"


# Cues to check are shown in this ASS style: the default one, in yellow, so they stand out in
# an editor's preview and can be selected by style.
REVIEW_STYLE = "Review"


class WriteASS(SubtitleWriter):
    extension = "ass"

    def format(self, result: FileResult) -> str:
        subs = self.subtitles(result)
        review = subs.styles["Default"].copy()
        review.primarycolor = pysubs2.Color(255, 255, 0)
        subs.styles[REVIEW_STYLE] = review
        return subs.to_string(self.extension)


class WriteTXT(ResultWriter):
    extension = "txt"

    def format(self, result: FileResult) -> str:
        if result.turns is not None:
            return _speaker_text(result)
        lines = [seg.text.strip() for seg in result.segments if seg.text.strip()]
        return "".join(line + "\n" for line in lines)


def _speaker_text(result: FileResult) -> str:
    """One line per segment, or per speaker within a segment that spans a change, with "S1: "
    where the speaker changes."""
    out: list[str] = []
    previous: str | None = None
    for seg in result.segments:
        if not seg.text.strip():
            continue
        runs = [(speaker, "".join(w.text for w in run)) for speaker, run in groupby(seg.words or (), key=_speaker)]
        if len(runs) < 2:
            runs = [(seg.speaker, seg.text)]
        for speaker, text in runs:
            if not text.strip():
                continue
            prefix = f"{speaker}: " if speaker is not None and speaker != previous else ""
            previous = speaker if speaker is not None else previous
            out.append(prefix + text.strip() + "\n")
    return "".join(out)


def _speaker(word: SpokenWord) -> str | None:
    return word.speaker


class WriteTSV(ResultWriter):
    """start and end in integer milliseconds, then the cue text on one line (as whisper's tsv)."""

    extension = "tsv"

    def format(self, result: FileResult) -> str:
        out = ["start\tend\ttext\n"]
        for cue in result.cues:
            text = join_lines(cue.lines).replace("\t", " ")
            if text:
                out.append(f"{round(cue.start * 1000)}\t{round(cue.end * 1000)}\t{text}\n")
        return "".join(out)


def timecode(seconds: float) -> str:
    """H:MM:SS.mmm, as an editor types it into a player's seek box."""
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


class WriteReview(ResultWriter):
    """`<stem>.review.tsv`: the cues an editor should check, by time, with their confidence and
    why (low confidence, guard flags); a segment left without text (the guard dropped it, or
    the engine heard nothing) and speech no cue covers are listed too, with no text. Always
    written, with its header alone when nothing needs checking, so an empty list says
    "checked, nothing found"."""

    extension = "review.tsv"

    def format(self, result: FileResult) -> str:
        rows: list[tuple[float, float, str, str, str]] = []
        for cue in result.cues:
            if cue.flags:
                text = join_lines(cue.lines).replace("\t", " ")
                rows.append((cue.start, cue.end, _confidence_cell(cue.confidence), ",".join(cue.flags), text))
        for seg in result.segments:
            if seg.flags and not seg.text.strip():
                rows.append((seg.start, seg.end, _confidence_cell(seg.confidence), ",".join(seg.flags), ""))
        rows.extend((start, end, "", NO_TEXT, "") for start, end in result.lost)
        rows.sort(key=lambda row: (row[0], row[1]))
        out = ["start\tend\tconfidence\treason\ttext\n"]
        out.extend(f"{timecode(a)}\t{timecode(b)}\t{c}\t{r}\t{t}\n" for a, b, c, r, t in rows)
        return "".join(out)


def _confidence_cell(confidence: float | None) -> str:
    return "" if confidence is None else f"{confidence:.2f}"


def _json_default(obj: Any) -> Any:
    # info carries engine descriptions and timings: numpy values, paths, sets, small dataclasses.
    if hasattr(obj, "tolist") and callable(obj.tolist):
        return obj.tolist()  # numpy arrays and scalars alike
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=str)
    return str(obj)


class WriteJSON(ResultWriter):
    extension = "json"

    def format(self, result: FileResult) -> str:
        data: dict[str, Any] = {
            "source": result.source,
            "duration": round(result.duration, 3),
            "segments": [seg.to_dict() for seg in result.segments],
            "cues": [c.to_dict() for c in result.cues],
            "speech": [[round(a, 3), round(b, 3)] for a, b in result.speech],
            # How much of that speech the cues cover (the rest is on the review list).
            "speech_seconds": round(result.speech_seconds, 3),
            "covered_seconds": round(result.covered_seconds, 3),
        }
        if result.turns is not None:
            data["speakers"] = result.speakers
            data["speaker_turns"] = [[round(a, 3), round(b, 3), speaker] for a, b, speaker in result.turns]
            overlaps = result.overlaps or []
            data["speaker_overlaps"] = [[round(a, 3), round(b, 3), speaker] for a, b, speaker in overlaps]
        # info adds to the record but never replaces what the file is about.
        for key, value in result.info.items():
            data.setdefault(key, value)
        return json_text(data, indent=2, default=_json_default) + "\n"


_WRITERS: dict[str, type[ResultWriter]] = {
    "srt": WriteSRT,
    "vtt": WriteVTT,
    "ass": WriteASS,
    "txt": WriteTXT,
    "json": WriteJSON,
    "tsv": WriteTSV,
    "review": WriteReview,
}


def get_writer(fmt: str, options: WriterOptions | None = None) -> ResultWriter:
    try:
        return _WRITERS[fmt.lower().lstrip(".")](options)
    except KeyError:
        raise ValueError(f"unknown output format {fmt!r}; choose from {', '.join(FORMATS)}") from None


def output_path(output_dir: str | os.PathLike, relative_source: str | os.PathLike, fmt: str) -> Path:
    """DIR/<relative parent>/<stem>.<ext>: the input folder's layout mirrored under the output folder."""
    rel = PurePath(relative_source)
    if rel.is_absolute() or rel.anchor or ".." in rel.parts:
        # An absolute or escaping path would put outputs outside the output folder.
        raise ValueError(f"source path must be relative and inside the input folder: {relative_source}")
    ext = get_writer(fmt).extension
    return Path(output_dir) / rel.parent / f"{rel.stem}.{ext}"


def write_result(
    result: FileResult,
    output_dir: str | os.PathLike,
    relative_source: str | os.PathLike,
    formats: tuple[str, ...],
    options: WriterOptions | None = None,
) -> list[Path]:
    """Write every requested format for one file, all or none: each is formatted, then written
    to a temporary file, then all are renamed into place. On any error (a full disk, a
    directory where an output goes) the temporaries are removed, the file's earlier outputs
    are left as they were, and the error propagates. Returns the paths written."""
    texts = [
        (output_path(output_dir, relative_source, fmt), get_writer(fmt, options).format(result)) for fmt in formats
    ]
    staged: list[tuple[Path, Path]] = []
    try:
        for path, text in texts:
            staged.append((stage_bytes(path, text.encode("utf-8")), path))
    except BaseException:
        discard(tmp for tmp, _ in staged)
        raise
    replace_all(staged)
    return [path for path, _ in texts]
