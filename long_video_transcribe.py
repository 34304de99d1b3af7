#!/usr/bin/env python3
"""Transcribe long videos into subtitles: the same CLI as `fireredasr-fast`."""

import sys

from fireredasr_fast.cli import main

if __name__ == "__main__":
    sys.exit(main())
