"""Exceptions whose message is a complete one-line explanation for the user."""

from __future__ import annotations

import math
import numbers


class FireRedFastError(Exception):
    """Base class: str(exc) is shown to the user as is, after the file it concerns."""


class ModelDirError(FireRedFastError):
    """A model directory is missing, incomplete, or holds something that is not a model."""


class MediaError(FireRedFastError):
    """A media file cannot be read or decoded (corrupt, truncated, no audio stream, ...)."""


class OptionError(ValueError):
    """An option outside its range: `field` is the options field it concerns (the CLI names its
    flag), `rule` what the value must be. str(exc) reads "field rule"."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field} {rule}")
        self.field = field
        self.rule = rule


def check_number(
    field: str,
    value: float,
    low: float | None = None,
    high: float | None = None,
    *,
    above: bool = False,
    integer: bool = False,
) -> None:
    """Raise OptionError unless `value` is a finite number (an int with `integer`) >= low (> low
    with `above`) and <= high."""
    bounds = [f"{'>' if above else '>='} {low:g}"] if low is not None else []
    bounds += [f"<= {high:g}"] if high is not None else []
    kinds = numbers.Integral if integer else numbers.Real
    ok = isinstance(value, kinds) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if above else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        wanted = " ".join(["an integer" if integer else "a finite number", " and ".join(bounds)]).strip()
        raise OptionError(field, f"must be {wanted}, not {value!r}")
