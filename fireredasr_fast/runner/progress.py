"""The run's progress bar: seconds of audio recognised out of a total known from the start.

The total is the stated durations of the files to do, probed (audio.probe_audio_streams) in a
background thread as the run starts, so the bar shows a percentage long before the first file
is decoded; the front end then takes those probes (`streams`) rather than probing again. The
bar moves as batches come back, each file by its share of its own duration, and a file that
ends (done or failed) completes its share. While the bar is shown, log messages are printed
above it (tqdm.write) rather than onto its line.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from fireredasr_fast.audio import AudioStreams, probe_audio_streams

# ffmpeg probes run at once while the total is gathered (each is a short-lived process).
PROBE_THREADS = 4
# Whole seconds of audio, also while the total is not known yet ("?").
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total_fmt} s [{elapsed}<{remaining}]"


def probe_files(
    paths: Sequence[Path], threads: int = PROBE_THREADS, stop: threading.Event | None = None
) -> list[AudioStreams | None]:
    """Each file's audio streams and stated duration; None where it cannot be read (the front
    end probes it again and says why) or once `stop` is set."""

    def one(path: Path) -> AudioStreams | None:
        if stop is not None and stop.is_set():
            return None
        try:
            return probe_audio_streams(path)
        except Exception:  # the front end reports the file's problem; the bar only lacks its length
            return None

    with cf.ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="probe") as pool:
        return list(pool.map(one, paths))


class _BarHandler(logging.Handler):
    """A console handler's level and format, written above the bar."""

    def __init__(self, original: logging.Handler) -> None:
        super().__init__(original.level)
        self.setFormatter(original.formatter)

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def messages_above_bar() -> Iterator[None]:
    """Route the root logger's console handlers (stderr) through tqdm.write for the duration."""
    root = logging.getLogger()
    console = [
        h
        for h in root.handlers
        if type(h) is logging.StreamHandler and getattr(h, "stream", None) in (sys.stderr, sys.stdout)
    ]
    swapped = [(h, _BarHandler(h)) for h in console]
    for original, replacement in swapped:
        root.removeHandler(original)
        root.addHandler(replacement)
    try:
        yield
    finally:
        for original, replacement in swapped:
            root.removeHandler(replacement)
            root.addHandler(original)


class Progress:
    """The bar of one run (`enabled` False: nothing shown, every call does nothing).

    `sources` are the files to do, by their index in the run; call `accept` when a file's
    segments are known, `advance` as its segments come back, `end` when it is done or failed,
    `poll` from the scheduling loop (it sets the total once the probes are in), `close` at the end."""

    def __init__(self, enabled: bool, sources: dict[int, Path]) -> None:
        self.enabled = enabled
        self.weights: dict[int, int] = {}  # a file's share of the total: its duration, whole seconds
        self.segment_seconds: dict[int, float] = {}
        self.credited: dict[int, float] = {}
        self.bar: Any = None
        self._probed: dict[int, AudioStreams | None] | None = None
        self._redirect: contextlib.ExitStack | None = None
        self.probing: threading.Thread | None = None  # the thread measuring the total
        self._stop = threading.Event()
        if not enabled:
            return
        from tqdm import tqdm

        self.bar = tqdm(total=None, desc="audio", dynamic_ncols=True, bar_format=BAR_FORMAT)
        self._redirect = contextlib.ExitStack()
        self._redirect.enter_context(messages_above_bar())
        items = list(sources.items())
        self.probing = threading.Thread(target=self._probe, args=(items,), name="probe-durations", daemon=True)
        self.probing.start()

    def _probe(self, items: list[tuple[int, Path]]) -> None:
        found = probe_files([path for _, path in items], stop=self._stop)
        self._probed = {index: streams for (index, _), streams in zip(items, found, strict=True)}

    def streams(self, index: int) -> AudioStreams | None:
        """The file's probe, when the bar has it (for the front end; from any thread)."""
        probed = self._probed
        return probed.get(index) if probed is not None else None

    def poll(self) -> None:
        """Set the total when the probes are in (from the scheduling loop's thread)."""
        if self.bar is None or self._probed is None or self.bar.total is not None:
            return
        for index, streams in self._probed.items():
            self.weights.setdefault(index, round(streams.duration or 0.0) if streams else 0)
        self.bar.total = sum(self.weights.values())
        self.bar.refresh()

    def accept(self, index: int, duration: float, segment_seconds: float) -> None:
        """A file's samples and segments are known: a file the probe could not measure joins
        the total with its decoded length."""
        if self.bar is None:
            return
        self.poll()
        if not self.weights.get(index):
            self.weights[index] = round(duration)
            if self.bar.total is not None:
                self.bar.total += self.weights[index]
                self.bar.refresh()
        self.segment_seconds[index] = segment_seconds

    def advance(self, index: int, seconds: float) -> None:
        """`seconds` of the file's segments came back: its share of them moves the bar."""
        total = self.segment_seconds.get(index)
        if self.bar is None or not total:
            return
        self._credit(index, self.weights.get(index, 0) * seconds / total)

    def end(self, index: int) -> None:
        """The file is done or failed: the rest of its share."""
        if self.bar is None:
            return
        self._credit(index, self.weights.get(index, 0) - self.credited.get(index, 0.0))

    def _credit(self, index: int, seconds: float) -> None:
        room = self.weights.get(index, 0) - self.credited.get(index, 0.0)
        if self.bar.total is not None:  # sums of shares may pass the total by a rounding error
            room = min(room, self.bar.total - self.bar.n)
        seconds = max(0.0, min(seconds, room))
        if seconds > 0:
            self.credited[index] = self.credited.get(index, 0.0) + seconds
            self.bar.update(seconds)

    def close(self) -> None:
        self._stop.set()
        if self.bar is not None:
            self.bar.close()
        if self._redirect is not None:
            self._redirect.close()
