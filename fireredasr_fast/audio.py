"""Media -> 16 kHz mono int16 samples, through ffmpeg and a pipe (no temporary WAV).

int16 is what FireRedASR's front end expects and half the memory of float32: one hour of
audio is ~115 MB. Samples are read straight into one growing buffer; there is no float64
copy and no Python list of samples.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import ffmpeg
import numpy as np

from .errors import MediaError
from .results import SAMPLE_RATE

MEDIA_EXTENSIONS = frozenset(
    ".mp4 .mkv .mov .webm .avi .flv .wmv .ts .mts .m2ts .mpg .mpeg .m4v .3gp .ogv "
    ".wav .flac .mp3 .m4a .aac .ogg .opus .wma .amr .aiff .aif .ac3".split()
)

_READ_CHUNK = 1 << 20


def ffmpeg_executable() -> str:
    """The `ffmpeg` on PATH, else the binary shipped by the imageio-ffmpeg package."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as exc:
        raise MediaError(
            f"ffmpeg not found: install it (apt-get install ffmpeg) or pip install imageio-ffmpeg ({exc})"
        ) from None


def is_media_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in MEDIA_EXTENSIONS


_INPUT_PLACEHOLDER = "file:input"


def decode_audio(
    path: str | os.PathLike, audio_stream: int | None = None, on_read: Callable[[bytearray], None] | None = None
) -> np.ndarray:
    """Decode one audio stream of any container ffmpeg reads to 16 kHz mono int16.

    `audio_stream` is the index among the file's audio streams (0 = first); None lets
    ffmpeg choose (its default: the "best" audio stream). `on_read` is called with the
    int16 bytes read so far after each read (a VAD can start before the decode ends; it
    must not keep a view of them). Raises MediaError with the cause.
    """
    source = _checked_source(path)

    # The name goes in after ffmpeg-python built the command: it hashes its arguments as UTF-8,
    # which a name that is not UTF-8 cannot be.
    stream = ffmpeg.input(_INPUT_PLACEHOLDER)
    if audio_stream is not None:
        stream = stream[f"a:{audio_stream}"]
    # flush_packets=0: ffmpeg writes its I/O buffer's blocks instead of flushing after every
    # packet (a pipe turns flushing on), which woke this reader once per packet of a few hundred
    # bytes: the same bytes for less CPU in both processes
    # (measured: docs/benchmarks.md#ffmpegs-output-in-blocks-not-per-packet).
    out = stream.output(
        "pipe:", format="s16le", acodec="pcm_s16le", ac=1, ar=SAMPLE_RATE, vn=None, sn=None, dn=None, flush_packets=0
    )
    args = out.global_args("-nostdin", "-hide_banner", "-loglevel", "error").compile(cmd=ffmpeg_executable())
    # "file:" keeps names that start with "-" or contain ":" from being read as options or
    # protocols by ffmpeg.
    args = [f"file:{source.resolve()}" if arg == _INPUT_PLACEHOLDER else arg for arg in args]

    buffer = bytearray()
    with tempfile.TemporaryFile() as stderr:
        # An argument list, never a shell: file names are passed through untouched.
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr)
        assert proc.stdout is not None
        try:
            while chunk := proc.stdout.read(_READ_CHUNK):
                buffer += chunk
                if on_read is not None:
                    on_read(buffer)
        finally:
            proc.stdout.close()
            returncode = proc.wait()
        stderr.seek(0)
        messages = stderr.read().decode("utf-8", errors="replace")

    if returncode != 0:
        raise MediaError(_explain_ffmpeg_error(messages, audio_stream))
    if len(buffer) % 2:
        del buffer[-1]
    samples = np.frombuffer(buffer, dtype=np.int16)
    if samples.size == 0 and messages.strip():
        raise MediaError(_explain_ffmpeg_error(messages, audio_stream))
    return samples


@dataclass(frozen=True)
class AudioStreams:
    """A media file's audio streams as ffmpeg lists them (indices count audio streams only,
    as `decode_audio`'s `audio_stream` does)."""

    count: int
    default: int | None  # the one ffmpeg decodes when not told which
    languages: tuple[str, ...]  # per stream; "" where the file names none
    duration: float | None  # the container's duration in seconds, when it states one


# ffmpeg's stream listing: "  Stream #0:2[0x3](eng): Audio: aac ..." and, under
# "Stream mapping:", "  Stream #0:2 -> #0:0 (aac (native) -> pcm_s16le (native))".
_INPUT_STREAM = re.compile(r"^\s*Stream #0:(\d+)(?:\[\w+\])?(?:\((\w+)\))?: (\w+):", re.MULTILINE)
_MAPPED_STREAM = re.compile(r"^\s*Stream #0:(\d+) -> #0:0\b", re.MULTILINE)
_DURATION = re.compile(r"^\s*Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", re.MULTILINE)


def probe_audio_streams(path: str | os.PathLike) -> AudioStreams:
    """List the audio streams and the one ffmpeg would pick (ffprobe is not always there,
    e.g. with imageio-ffmpeg, so ffmpeg's own listing is read). Raises MediaError."""
    source = _checked_source(path)
    args = [
        ffmpeg_executable(), "-nostdin", "-hide_banner", "-i", f"file:{source.resolve()}",
        "-vn", "-sn", "-dn", "-t", "0", "-f", "null", "-",
    ]  # fmt: skip
    proc = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
    text = proc.stderr.decode("utf-8", errors="replace")
    listing, _, mapping = text.partition("Stream mapping:")
    absolute = [int(m[0]) for m in _INPUT_STREAM.findall(listing) if m[2] == "Audio"]
    languages = tuple("" if m[1] in ("", "und") else m[1] for m in _INPUT_STREAM.findall(listing) if m[2] == "Audio")
    if not re.search(r"^Input #0", text, re.MULTILINE):
        raise MediaError(_explain_ffmpeg_error(text, None))
    mapped = _MAPPED_STREAM.search(mapping)
    default = absolute.index(int(mapped[1])) if mapped and int(mapped[1]) in absolute else None
    found = _DURATION.search(listing)
    duration = int(found[1]) * 3600 + int(found[2]) * 60 + float(found[3]) if found else None
    return AudioStreams(len(absolute), default, languages, duration)


def _checked_source(path: str | os.PathLike) -> Path:
    source = Path(path)
    if not source.is_file():
        raise MediaError("file does not exist" if not source.exists() else "not a regular file")
    if not os.access(source, os.R_OK):
        raise MediaError("permission denied")
    return source


def _explain_ffmpeg_error(messages: str, audio_stream: int | None) -> str:
    text = messages.strip()
    if re.search(r"matches no streams|does not contain any stream|Output file .* does not contain", text):
        if audio_stream is None:
            return "no audio stream"
        return f"no audio stream with index {audio_stream}"
    if "Invalid data found" in text or "moov atom not found" in text:
        return "not a readable media file (corrupt, truncated or not media)"
    if "Permission denied" in text:
        return "permission denied"
    lines = [line for line in text.splitlines() if line.strip()]
    return f"ffmpeg failed: {lines[-1][:200] if lines else 'unknown error'}"


def to_float32(samples: np.ndarray) -> np.ndarray:
    """int16 samples -> float32 in [-1, 1), the engines' input."""
    return samples.astype(np.float32) * np.float32(1.0 / 32768.0)
