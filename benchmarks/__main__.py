"""Dispatch `python -m benchmarks NAME ...` to benchmarks.<name>.main."""

from __future__ import annotations

import importlib
import sys

from . import BENCHMARKS


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in BENCHMARKS:
        print("usage: python -m benchmarks NAME [options]\n\nbenchmarks:")
        for name, text in BENCHMARKS.items():
            print(f"  {name:18s} {text}")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module = importlib.import_module(f".{argv[0].replace('-', '_')}", __package__)
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
