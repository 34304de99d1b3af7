"""The command line's --help sections, which the options classes put their flags in.

Each options dataclass declares its own flags and builds itself back from them:

    @classmethod
    def add_arguments(cls, parser) -> None:       # its flags, each in its --help section
        section(parser, SEGMENTATION).add_argument("--vad-threshold", default=cls.threshold, ...)

    @classmethod
    def from_args(cls, args) -> VadOptions:       # checked as built (__post_init__)
        return cls(threshold=args.vad_threshold, ...)

cli.build_parser makes the sections in the order below and asks each class for its flags;
only the flags no options class owns (inputs, output folder, formats, logging, devices,
cluster) are the CLI's own.
"""

from __future__ import annotations

import argparse

ENGINE = "engine"
DECODING = "decoding (upstream FireRedASR defaults)"
SEGMENTATION = "segmentation (VAD)"
SUBTITLES = "subtitles"
REVIEW = "review (what an editor should check)"
SPEAKERS = "speakers"
PARALLELISM = "parallelism"
CLUSTER = "cluster (Ray; pip install 'fireredasr-fast[cluster]')"
# --help's order.
SECTIONS = (ENGINE, DECODING, SEGMENTATION, SUBTITLES, REVIEW, SPEAKERS, PARALLELISM, CLUSTER)


def section(parser: argparse.ArgumentParser, title: str) -> argparse._ArgumentGroup:
    """`parser`'s --help section `title`, made (at the end) when it has none yet."""
    for group in parser._action_groups:
        if group.title == title:
            return group
    return parser.add_argument_group(title)
