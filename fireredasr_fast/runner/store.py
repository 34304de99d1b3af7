"""Recognition kept in the output folder, so that neither an interrupted file nor a change of
subtitle settings costs recognising again (docs/reliability.md).

Per input, under `DIR/.fireredasr-fast/` (mirroring the journal key):

- `<key>.partial.jsonl` while the file is being recognised: a header line (store version, the
  recognition fingerprint, the source's identity), then one line per finished segment (its
  index, start and end sample, its hypothesis), appended and fsync'd as batches finish. A rerun
  with the same fingerprint sends only the segments not in it to the workers. A torn last line
  (a kill mid-write) is dropped. Deleted once the file's outputs are written.
- `<key>.recognition.json.gz` once the file is recognised: what `assemble_result` needs (the
  segments, speech and music regions, audio track, duration, speaker turns with `--speakers`,
  and the raw hypotheses). A rerun
  whose settings differ only in rendering (settings.py) writes the outputs from it.

Hypotheses go through JSON here both ways, in every run (`normalised`): a resumed file is
assembled from exactly the values an uninterrupted run assembles from. JSON writes a Python
float as its shortest repr, which reads back as the same float.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fireredasr_fast.fsutil import atomic_write_bytes
from fireredasr_fast.results import SAMPLE_RATE, Hypothesis, Turn
from fireredasr_fast.transcribe import PreparedFile, TrackChoice
from fireredasr_fast.vad import SpeechSegment

log = logging.getLogger("fireredasr_fast")

STORE_DIR = ".fireredasr-fast"
# Written into every store; a store of another version is not read (started over).
STORE_VERSION = 1


def _plain(value: Any) -> Any:
    """numpy scalars and arrays as Python numbers (json.dumps' `default`)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__}")


def _dumps(data: Any) -> str:
    # ASCII: lone surrogates in odd text survive; the store is never read by people.
    return json.dumps(data, default=_plain, separators=(",", ":"))


def hypothesis_to_dict(hyp: Hypothesis) -> dict[str, Any]:
    """The hypothesis's fields, for json.dumps: its own lists, not copies (dataclasses.asdict
    copies every element: a large share of writing a long file's store, and the same JSON)."""
    return {field.name: getattr(hyp, field.name) for field in dataclasses.fields(hyp)}


def hypothesis_from_dict(data: dict[str, Any]) -> Hypothesis:
    """Raises TypeError or ValueError for data of another shape."""
    hyp = Hypothesis(**data)
    if hyp.token_times is not None:
        hyp.token_times = [(a, b) for a, b in hyp.token_times]
    return hyp


def normalised(hyp: Hypothesis) -> Hypothesis:
    """The hypothesis as the store gives it back."""
    return hypothesis_from_dict(json.loads(_dumps(hypothesis_to_dict(hyp))))


def segment_key(index: int, segment: SpeechSegment) -> tuple[int, int, int]:
    """A segment's identity: its index and its first and last sample (as PreparedFile.jobs cuts)."""
    return index, round(segment.start * SAMPLE_RATE), round(segment.end * SAMPLE_RATE)


@dataclass
class Recognition:
    """A recognised file without its samples: what `assemble_result` reads of a PreparedFile,
    and the raw hypotheses (before the script conversion and the guard, which are rendering)."""

    source: str
    duration: float
    segments: list[SpeechSegment]
    speech: list[tuple[float, float]]
    music: list[tuple[float, float]]
    track: TrackChoice | None
    timings: dict[str, float]
    hypotheses: list[Hypothesis]
    # Who speaks when (`--speakers`, in the recognition fingerprint); None without labels.
    turns: list[Turn] | None = None

    @classmethod
    def of(cls, prepared: PreparedFile, hypotheses: list[Hypothesis]) -> Recognition:
        data = {
            "source": prepared.source,
            "duration": prepared.duration,
            "segments": [[s.start, s.end, s.speech] for s in prepared.segments],
            "speech": prepared.speech,
            "music": prepared.music,
            "track": dataclasses.asdict(prepared.track) if prepared.track else None,
            "timings": prepared.timings,
            "hypotheses": [hypothesis_to_dict(h) for h in hypotheses],
            "turns": prepared.turns,
        }
        return cls.from_dict(json.loads(_dumps(data)))

    def to_dict(self) -> dict[str, Any]:
        """For json.dumps: the JSON of dataclasses.asdict(self), less its copies (see
        hypothesis_to_dict), with each segment as [start, end, speech]."""
        data = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        data["segments"] = [[s.start, s.end, s.speech] for s in self.segments]
        data["track"] = dataclasses.asdict(self.track) if self.track else None
        data["hypotheses"] = [hypothesis_to_dict(h) for h in self.hypotheses]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recognition:
        track = data["track"]
        if track is not None:
            track = TrackChoice(**{**track, "speech_seconds": tuple(track["speech_seconds"])})
        return cls(
            source=data["source"],
            duration=data["duration"],
            segments=[SpeechSegment(a, b, [(x, y) for x, y in speech]) for a, b, speech in data["segments"]],
            speech=[(a, b) for a, b in data["speech"]],
            music=[(a, b) for a, b in data["music"]],
            track=track,
            timings=dict(data["timings"]),
            hypotheses=[hypothesis_from_dict(h) for h in data["hypotheses"]],
            # Stores written before speaker labels have none.
            turns=None if data.get("turns") is None else [(a, b, speaker) for a, b, speaker in data["turns"]],
        )


class FileStore:
    """The two stores of one input (module docstring), for one recognition fingerprint."""

    def __init__(self, output_dir: Path, key: str, recognition: str, identity: tuple[int, int]) -> None:
        base = output_dir / STORE_DIR / key
        self.partial_path = base.with_name(base.name + ".partial.jsonl")
        self.recognition_path = base.with_name(base.name + ".recognition.json.gz")
        self.header = {"version": STORE_VERSION, "recognition": recognition, "source": list(identity)}

    # -- while recognising

    def resume(self, segments: list[SpeechSegment]) -> dict[int, Hypothesis]:
        """The hypotheses of `segments` a previous run stored, by segment index (resume_lookup)."""
        stored = self.resume_lookup(reuse=bool(segments))
        found = ((i, stored.get(segment_key(i, s))) for i, s in enumerate(segments))
        return {i: hyp for i, hyp in found if hyp is not None}

    def resume_lookup(self, reuse: bool = True) -> dict[tuple[int, int, int], Hypothesis]:
        """The hypotheses a previous run stored (none unless `reuse`), by segment_key: a file's
        segments may come a stretch at a time, so they are looked up as they come. The store
        is left holding exactly those (a torn line dropped), or started empty: an entry of a
        segment this run does not have stays unused (the header fixes source and settings)."""
        found: dict[tuple[int, int, int], Hypothesis] = {}
        lines = [_dumps(self.header)]
        for entry in self._read_partial() if reuse else []:
            try:
                key = (entry["i"], entry["start"], entry["end"])
                if key in found:
                    continue
                found[key] = hypothesis_from_dict(entry["hyp"])
            except (TypeError, ValueError, KeyError):
                continue  # a line of another shape: that segment is recognised again
            lines.append(_dumps(entry))
        atomic_write_bytes(self.partial_path, "".join(line + "\n" for line in lines).encode())
        return found

    def append(self, finished: list[tuple[int, SpeechSegment, Hypothesis]]) -> None:
        """Append finished segments and make them durable (one write, then fsync)."""
        lines = []
        for index, segment, hyp in finished:
            _, start, end = segment_key(index, segment)
            lines.append(_dumps({"i": index, "start": start, "end": end, "hyp": hypothesis_to_dict(hyp)}) + "\n")
        with open(self.partial_path, "ab") as f:
            f.write("".join(lines).encode())
            f.flush()
            os.fsync(f.fileno())

    def _read_partial(self) -> list[dict[str, Any]]:
        """The entries of a stored partial with this header; [] when there is none, or it is
        another file's, version's or settings' (said in the log)."""
        try:
            lines = self.partial_path.read_bytes().split(b"\n")
        except FileNotFoundError:
            return []
        except OSError as exc:
            log.warning("%s: cannot read (%s); recognising the whole file", self.partial_path, exc)
            return []
        if _loads(lines[0]) != self.header:
            log.info("%s: from other settings or another source file; recognising the whole file", self.partial_path)
            return []
        entries = [_loads(line) for line in lines[1:] if line.strip()]
        return [e for e in entries if isinstance(e, dict)]

    # -- once recognised

    def save_recognition(self, recognition: Recognition) -> None:
        data = {**self.header, "file": recognition.to_dict()}
        atomic_write_bytes(self.recognition_path, gzip.compress(_dumps(data).encode(), mtime=0))

    def load_recognition(self) -> Recognition | None:
        """The stored recognition when it has this header (same version, settings, source)."""
        try:
            data = json.loads(gzip.decompress(self.recognition_path.read_bytes()))
            if {k: data.get(k) for k in self.header} != self.header:
                return None
            return Recognition.from_dict(data["file"])
        except FileNotFoundError:
            return None
        except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("%s: unreadable (%s); recognising again", self.recognition_path, exc)
            return None

    def finished(self) -> None:
        """The outputs are written: the partial store has served."""
        with contextlib.suppress(FileNotFoundError):
            self.partial_path.unlink()


def _loads(line: bytes) -> Any:
    """One JSON line, or None for a torn or damaged one."""
    try:
        return json.loads(line)
    except ValueError:
        return None
