"""Command-line inputs -> the list of media files to transcribe.

Inputs are files, folders (searched recursively for media extensions) and glob patterns.
Each file gets a relative path that decides where its outputs go, so a folder's layout is
mirrored in the output directory. Symlink loops are detected and skipped. Inputs that would
share outputs are told apart the same way whatever the order of the arguments (see
docs/reliability.md, "File system"); what cannot be told apart is refused before the run.
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import glob
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .audio import is_media_file, probe_audio_streams
from .errors import MediaError
from .fsutil import display_name
from .writers import output_path

log = logging.getLogger("fireredasr_fast")

# ffmpeg processes probing files at once for `--audio-stream all` (each reads headers only).
PROBE_THREADS = 4


@dataclass(frozen=True)
class InputFile:
    path: Path
    relative: Path  # the input's path relative to its root: the journal key
    # What the writers name outputs after (its suffix is replaced by the format's). Equal to
    # `relative` unless two inputs would share outputs ("talk.mp4" and "talk.mkv"): those
    # keep their media extension in the stem ("talk.mp4.srt", "talk.mkv.srt").
    output_relative: Path | None = None
    # Which audio stream to transcribe (index among the file's audio streams); None: the
    # run's choice (--audio-stream, else the stream with the most speech).
    audio_stream: int | None = None

    @property
    def output_name(self) -> Path:
        return self.output_relative or self.relative


def collect_inputs(arguments: list[str]) -> tuple[list[InputFile], list[str]]:
    """Return (files, problems). Problems are one-line messages for inputs that match nothing."""
    files: list[InputFile] = []
    problems: list[str] = []
    seen: set[Path] = set()

    def add(path: Path, relative: Path) -> None:
        if _is_symlink_loop(path):
            log.warning("%s: skipped: a loop of symbolic links", display_name(path))
            return
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            files.append(InputFile(path, relative))

    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            for found in _walk_media(path):
                add(found, found.relative_to(path))
        elif path.exists() or path.is_symlink():
            # An explicitly named file is taken whatever its extension; ffmpeg decides.
            add(path, Path(path.name))
        elif glob.has_magic(argument):
            matches = sorted(glob.glob(argument, recursive=True))
            media = [Path(m) for m in matches if Path(m).is_file() and is_media_file(m)]
            if not media:
                problems.append(f"{display_name(argument)}: no media files match")
            for found in media:
                add(found, Path(found.name))
        else:
            problems.append(f"{display_name(argument)}: no such file or directory")
    return _separate_clashing_outputs(_separate_same_names(files)), problems


def _is_symlink_loop(path: Path) -> bool:
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno == errno.ELOOP
    return False


# Rounds of telling same-named inputs apart; each makes their names longer, and one is enough
# unless a lifted name meets another input's.
_NAMING_ROUNDS = 8


def _separate_same_names(files: list[InputFile]) -> list[InputFile]:
    """Inputs from different places with one relative path (d1/clip.mkv and d2/clip.mkv given
    as files, or two folders that both hold clip.mkv) would share a journal entry and outputs:
    each gets as many of its parent folders' names in front as tell them apart
    (d1/clip.mkv, d2/clip.mkv), which depends on their paths only, not on the arguments'
    order. Inputs with distinct names keep theirs."""
    files = list(files)
    for _ in range(_NAMING_ROUNDS):
        groups: dict[str, list[int]] = collections.defaultdict(list)
        for index, item in enumerate(files):
            groups[item.relative.as_posix()].append(index)
        clashing = [group for group in groups.values() if len(group) > 1]
        if not clashing:
            break
        for group in clashing:
            for index, item in zip(group, _with_parents([files[i] for i in group]), strict=True):
                files[index] = item
    return files


def _with_parents(items: list[InputFile]) -> list[InputFile]:
    """`items` (one relative path) renamed to the shortest tails of their absolute paths that
    differ (their relative paths are tails of those paths)."""
    tails = [Path(os.path.abspath(item.path)).parts[1:] for item in items]
    depth = max(len(item.relative.parts) for item in items) + 1
    while depth < max(map(len, tails)) and len({tail[-depth:] for tail in tails}) < len(tails):
        depth += 1
    return [dataclasses.replace(item, relative=Path(*tail[-depth:])) for item, tail in zip(items, tails, strict=True)]


def _separate_clashing_outputs(files: list[InputFile]) -> list[InputFile]:
    stems: dict[Path, int] = {}
    for item in files:
        stem = item.relative.with_suffix("")
        stems[stem] = stems.get(stem, 0) + 1
    return [
        InputFile(item.path, item.relative, item.relative.with_name(item.relative.name + item.relative.suffix))
        if stems[item.relative.with_suffix("")] > 1
        else item
        for item in files
    ]


def output_clashes(files: list[InputFile], formats: tuple[str, ...], reserved: tuple[str, ...] = ()) -> list[str]:
    """What two inputs would share after the renaming above (a journal entry, an output file),
    or an output that would replace one of the run's own files (`reserved`, at the top of the
    output folder): one line each; empty when nothing clashes."""
    owners = {name: "this run's own file" for name in reserved}
    clashes = []
    for item in files:
        shown = display_name(item.path)
        names = [output_path(".", item.output_name, fmt).as_posix() for fmt in formats]
        for key in [f"journal entry {item.relative.as_posix()}", *names]:
            owner = owners.setdefault(key, shown)
            if owner != shown:
                clashes.append(f"{display_name(key)}: both {owner} and {shown}")
    return clashes


def _walk_media(root: Path) -> list[Path]:
    """Media files under root, sorted; follows symlinked folders once (loops are cut)."""
    found: list[Path] = []
    visited: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        stat = os.stat(dirpath)
        if (stat.st_dev, stat.st_ino) in visited:
            dirnames[:] = []  # a symlink loop (or a second link to the same folder)
            continue
        visited.add((stat.st_dev, stat.st_ino))
        dirnames.sort()
        for name in sorted(filenames):
            if is_media_file(name) and not name.startswith("."):
                found.append(Path(dirpath) / name)
    return found


def expand_audio_streams(files: list[InputFile], threads: int = PROBE_THREADS) -> list[InputFile]:
    """`--audio-stream all`: one input per audio stream of each file, with its own journal key
    ("talk.mkv#a1") and outputs ("talk.a1.srt"; streams counted from 0, as --audio-stream
    does). A file that cannot be probed, or has no audio, stays one input and fails in the
    run with its own message."""

    def expand(item: InputFile) -> list[InputFile]:
        try:
            count = probe_audio_streams(item.path).count
        except MediaError:
            return [item]
        if count == 0:
            return [item]
        name = item.output_name
        return [
            InputFile(
                item.path,
                item.relative.with_name(f"{item.relative.name}#a{index}"),
                # The writers replace the suffix: "talk.mkv" -> "talk.a1.mkv" -> "talk.a1.srt"
                # (a name without one gets ".a1" twice, one of them to be replaced).
                name.with_name(f"{name.stem}.a{index}{name.suffix or f'.a{index}'}"),
                index,
            )
            for index in range(count)
        ]

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        return [expanded for group in pool.map(expand, files) for expanded in group]
