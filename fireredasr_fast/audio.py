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


def decode_audio(path: str | os.PathLike, audio_stream: int | None = None) -> np.ndarray:
    """Decode one audio stream of any container ffmpeg reads to 16 kHz mono int16.

    `audio_stream` is the index among the file's audio streams (0 = first); None lets
    ffmpeg choose (its default: the "best" audio stream). Raises MediaError with the cause.
    """
    source = Path(path)
    if not source.is_file():
        raise MediaError("file does not exist" if not source.exists() else "not a regular file")
    if not os.access(source, os.R_OK):
        raise MediaError("permission denied")

    # "file:" keeps names that start with "-" or contain ":" from being read as options or
    # protocols by ffmpeg.
    stream = ffmpeg.input(f"file:{source.resolve()}")
    if audio_stream is not None:
        stream = stream[f"a:{audio_stream}"]
    out = stream.output("pipe:", format="s16le", acodec="pcm_s16le", ac=1, ar=SAMPLE_RATE, vn=None, sn=None, dn=None)
    args = out.global_args("-nostdin", "-hide_banner", "-loglevel", "error").compile(cmd=ffmpeg_executable())

    buffer = bytearray()
    with tempfile.TemporaryFile() as stderr:
        # An argument list, never a shell: file names are passed through untouched.
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr)
        assert proc.stdout is not None
        try:
            while chunk := proc.stdout.read(_READ_CHUNK):
                buffer += chunk
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
