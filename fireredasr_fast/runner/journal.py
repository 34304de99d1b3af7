"""The run journal: per input, what was done, with which options, how fast, or why not.

It lives in the output directory, is rewritten atomically after every file, and is the
single truth for resuming: a rerun skips an input only when its journal record says done,
with the same options fingerprint and the same source file (size and mtime), and every
output file is still there.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fireredasr_fast.fsutil import atomic_write_text, display_name, file_identity, json_text
from fireredasr_fast.textlines import text_width

log = logging.getLogger("fireredasr_fast")

JOURNAL_NAME = ".fireredasr-fast-journal.json"
REPORT_NAME = "run-report.json"
STATUSES = ("done", "failed", "skipped", "interrupted")


@dataclass
class FileRecord:
    relative: str
    source: str
    status: str  # done | failed | skipped | interrupted
    fingerprint: str = ""
    duration: float = 0.0  # media seconds
    wall: float = 0.0  # seconds from its first batch sent to a worker to its outputs written
    error: str = ""
    outputs: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    finished_at: str = ""
    language: str = ""  # the language of most of the speech, when the engine knows it
    review: int = 0  # entries in the review list (cues to check, dropped segments)
    guarded: int = 0  # segments the degenerate-output guard acted on
    # Seconds of VAD speech, and of it those some cue covers (the rest is on the review list).
    speech_seconds: float = 0.0
    covered_seconds: float = 0.0
    # The audio stream transcribed and why (transcribe.TrackChoice.to_dict()).
    audio_track: dict[str, Any] = field(default_factory=dict)
    # The recognition fingerprint (settings.py): what the stored recognition (store.py) was made with.
    recognition: str = ""
    # Each output this run wrote, with its identity (size, mtime_ns) when written: an output of a
    # format no longer asked for is removed only while it is still the file written here.
    written: dict[str, list[int]] = field(default_factory=dict)
    reused: int = 0  # segments taken from the stores (store.py) instead of recognised

    @property
    def realtime_factor(self) -> float:
        return self.wall / self.duration if self.duration > 0 else 0.0

    @property
    def covered(self) -> str:
        """The share of the speech covered by cues, for the closing table."""
        if self.speech_seconds <= 0:
            return "-"
        return f"{100 * self.covered_seconds / self.speech_seconds:.0f}%"


def fingerprint(settings: dict[str, Any], source: Path) -> str:
    """Hash of everything that changes the outputs: engine, model, options, formats, and the
    source file's identity (size, mtime), so an edited video is redone."""
    size, mtime_ns = file_identity(source)
    payload = json.dumps({"settings": settings, "size": size, "mtime_ns": mtime_ns}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class Journal:
    """The journal of one output folder. Names are kept losslessly (fsutil.json_text); a
    malformed journal is moved aside with a warning, its valid records kept; `update` and
    `save` raise OSError when the journal cannot be written (the caller fails that file)."""

    def __init__(self, output_dir: Path) -> None:
        self.path = output_dir / JOURNAL_NAME
        self.records: dict[str, FileRecord] = {}
        if self.path.is_file():
            self._load()

    def _load(self) -> None:
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            log.warning("%s: cannot read the journal (%s); its files will be redone", self._shown(), exc.strerror)
            return
        records, problem = parse_journal(raw)
        self.records = {record.relative: record for record in records}
        if problem:
            self._move_aside(problem, len(records))

    def _move_aside(self, problem: str, kept: int) -> None:
        """Keep a malformed journal for inspection beside the new one, under a name of its own."""
        base = f"{self.path.name}.bad-{time.strftime('%Y%m%dT%H%M%S')}"
        aside = self.path.with_name(base)
        for n in range(1, 100):
            if not aside.exists():
                break
            aside = self.path.with_name(f"{base}-{n}")
        try:
            os.rename(self.path, aside)
            where = f"moved aside to {display_name(aside.name)}"
        except OSError as exc:
            where = f"cannot move it aside ({exc.strerror})"
        log.warning(
            "%s: malformed journal (%s); %s; %d record(s) kept, other files will be redone",
            self._shown(), problem, where, kept,
        )  # fmt: skip

    def _shown(self) -> str:
        return display_name(self.path)

    def is_complete(self, relative: str, fp: str, output_dir: Path) -> bool:
        record = self.records.get(relative)
        if record is None or record.status != "done" or record.fingerprint != fp:
            return False
        return all((output_dir / name).is_file() for name in record.outputs)

    def update(self, record: FileRecord) -> None:
        record.finished_at = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.records[record.relative] = record
        self.save()

    def save(self) -> None:
        data = {"version": 1, "files": [asdict(r) for r in self.records.values()]}
        atomic_write_text(self.path, json_text(data, indent=1))


def parse_journal(raw: bytes) -> tuple[list[FileRecord], str]:
    """The valid records of a journal file, and what was wrong with it ("" when nothing)."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except ValueError as exc:  # garbage, truncated, not UTF-8
        return [], f"not JSON: {str(exc).splitlines()[0][:80]}"
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):
        found = "an object without a list of files" if isinstance(data, dict) else json.dumps(data)[:20]
        return [], f'expected {{"files": [...]}}, found {found}'
    records = [record_from_dict(item) for item in data["files"]]
    good = [record for record in records if record is not None]
    bad = len(records) - len(good)
    return good, f"{bad} of {len(records)} record(s) of the wrong shape" if bad else ""


def record_from_dict(item: Any) -> FileRecord | None:
    """A journal entry as a FileRecord, or None when it is not one (a field missing or of the
    wrong type, an unknown status). Keys this release does not know are ignored."""
    if not isinstance(item, dict):
        return None
    values: dict[str, Any] = {}
    for spec in dataclasses.fields(FileRecord):
        if spec.name not in item:
            if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
                return None
            continue
        value = _of_kind(item[spec.name], _kind(spec))
        if value is _WRONG:
            return None
        values[spec.name] = value
    record = FileRecord(**values)
    if record.status not in STATUSES or not all(isinstance(name, str) for name in record.outputs):
        return None
    return record


_WRONG = object()


def _kind(spec: dataclasses.Field) -> type:
    """The type a field's JSON value must have: its default's (any, where that is None)."""
    if spec.default is not dataclasses.MISSING:
        return object if spec.default is None else type(spec.default)
    if spec.default_factory is not dataclasses.MISSING:
        return type(spec.default_factory())
    return str


def _of_kind(value: Any, kind: type) -> Any:
    """`value` if it is of the field's kind (an int where a float goes), else _WRONG."""
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind is not bool and kind is not object and isinstance(value, bool):
        return _WRONG  # JSON's true is not a number
    return value if isinstance(value, kind) else _WRONG


def write_report(output_dir: Path, records: list[FileRecord], summary: dict[str, Any]) -> Path:
    path = output_dir / REPORT_NAME
    files = []
    for record in records:
        item = asdict(record)
        item["realtime_factor"] = round(record.realtime_factor, 4)
        item["display"] = display_name(record.relative)  # the name as the table shows it
        files.append(item)
    atomic_write_text(path, json_text({"summary": summary, "files": files}, indent=1))
    return path


def format_table(records: list[FileRecord]) -> str:
    """The closing table: status, media duration, speed, language, share of the speech covered by
    cues, cues to review (guard acted) and error per file."""
    rows = [("status", "duration", "wall", "RTF", "lang", "covered", "review", "file", "error")]
    for r in records:
        done = r.status == "done"
        rtf = f"{r.realtime_factor:.3f}" if done else "-"
        review = (f"{r.review} ({r.guarded})" if r.guarded else str(r.review)) if done else "-"
        rows.append(
            (
                r.status,
                f"{r.duration:.1f}s",
                f"{r.wall:.1f}s",
                rtf,
                r.language or "-",
                r.covered if done else "-",
                review,
                *_shown(r),
            )
        )
    padded = len(rows[0]) - 1  # every column but the last (the error)
    widths = [max(columns(row[i]) for row in rows) for i in range(padded)]
    lines = []
    for row in rows:
        cells = "  ".join(cell + " " * (widths[i] - columns(cell)) for i, cell in enumerate(row[:padded]))
        lines.append(cells + ("  " + row[padded] if row[padded] else ""))
    return "\n".join(lines)


def columns(text: str) -> int:
    """Terminal columns `text` takes: a wide (CJK) character two, a combining mark none, the
    rest one (twice the subtitle width of textlines.text_width)."""
    return round(2 * text_width(text))


def _shown(record: FileRecord) -> tuple[str, str]:
    """The file and error cells: names escaped (not UTF-8, control characters), one line each."""
    return display_name(record.relative), display_name(record.error)


def relative_key(relative: Path) -> str:
    return relative.as_posix() if os.sep == "/" else str(relative).replace(os.sep, "/")
