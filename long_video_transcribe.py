#!/usr/bin/env python3
"""Transcribe long videos into subtitles: the same command as `fireredasr-fast`."""

from fireredasr_fast.__main__ import run

if __name__ == "__main__":
    run()
