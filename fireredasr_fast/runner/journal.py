"""The run journal: per input, what was done, with which options, how fast, or why not.

It lives in the output directory, is rewritten atomically after every file, and is the
single truth for resuming: a rerun skips an input only when its journal record says done,
with the same options fingerprint and the same source file (size and mtime), and every
output file is still there.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fireredasr_fast.fsutil import atomic_write_text, file_identity

JOURNAL_NAME = ".fireredasr-fast-journal.json"
REPORT_NAME = "run-report.json"


@dataclass
class FileRecord:
    relative: str
    source: str
    status: str  # done | failed | skipped | interrupted
    fingerprint: str = ""
    duration: float = 0.0  # media seconds
    wall: float = 0.0  # seconds from decode start to outputs written
    error: str = ""
    outputs: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    finished_at: str = ""
    language: str = ""  # the language of most of the speech, when the engine knows it
    review: int = 0  # entries in the review list (cues to check, dropped segments)
    guarded: int = 0  # segments the degenerate-output guard acted on
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


def fingerprint(settings: dict[str, Any], source: Path) -> str:
    """Hash of everything that changes the outputs: engine, model, options, formats, and the
    source file's identity (size, mtime), so an edited video is redone."""
    size, mtime_ns = file_identity(source)
    payload = json.dumps({"settings": settings, "size": size, "mtime_ns": mtime_ns}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class Journal:
    def __init__(self, output_dir: Path) -> None:
        self.path = output_dir / JOURNAL_NAME
        self.records: dict[str, FileRecord] = {}
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                for item in data.get("files", []):
                    record = FileRecord(**item)
                    self.records[record.relative] = record
            except (ValueError, TypeError, OSError):
                # A damaged journal only costs redoing work; never fatal.
                self.records = {}

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
        atomic_write_text(self.path, json.dumps(data, ensure_ascii=False, indent=1))


def write_report(output_dir: Path, records: list[FileRecord], summary: dict[str, Any]) -> Path:
    path = output_dir / REPORT_NAME
    files = []
    for record in records:
        item = asdict(record)
        item["realtime_factor"] = round(record.realtime_factor, 4)
        files.append(item)
    atomic_write_text(path, json.dumps({"summary": summary, "files": files}, ensure_ascii=False, indent=1))
    return path


def format_table(records: list[FileRecord]) -> str:
    """The closing table: status, media duration, speed, language, cues to review (guard acted) and
    error per file."""
    rows = [("status", "duration", "wall", "RTF", "lang", "review", "file", "error")]
    for r in records:
        done = r.status == "done"
        rtf = f"{r.realtime_factor:.3f}" if done else "-"
        review = (f"{r.review} ({r.guarded})" if r.guarded else str(r.review)) if done else "-"
        rows.append(
            (r.status, f"{r.duration:.1f}s", f"{r.wall:.1f}s", rtf, r.language or "-", review, r.relative, r.error)
        )
    padded = len(rows[0]) - 1  # every column but the last (the error)
    widths = [max(len(row[i]) for row in rows) for i in range(padded)]
    lines = []
    for row in rows:
        cells = "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:padded]))
        lines.append(cells + ("  " + row[padded] if row[padded] else ""))
    return "\n".join(lines)


def relative_key(relative: Path) -> str:
    return relative.as_posix() if os.sep == "/" else str(relative).replace(os.sep, "/")
