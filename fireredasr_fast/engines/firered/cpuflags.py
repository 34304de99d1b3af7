"""Which reduced-precision units this CPU has, read from its flags (no torch import).

A CPU precision (`--precision bf16` / `int8`) is allowed only where the CPU runs it on real
hardware: bf16 needs AMX-BF16 or AVX512_BF16 (torch would otherwise emulate bf16 with fp32
conversions, slower than fp32), int8 needs AVX2 at least (fbgemm's minimum), and uses
AMX-INT8 or VNNI where present. oneDNN and fbgemm pick the best unit themselves at run time;
this module only says whether there is one, and names it for messages
(docs/engine.md#precision-modes).
"""

from __future__ import annotations

import functools
from pathlib import Path

# For each CPU precision, the units that run it, best first: (flag in /proc/cpuinfo, name).
UNITS: dict[str, tuple[tuple[str, str], ...]] = {
    "bf16": (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX512_BF16")),
    "int8": (("amx_int8", "AMX-INT8"), ("avx512_vnni", "AVX512_VNNI"), ("avx_vnni", "AVX-VNNI"), ("avx2", "AVX2")),
}
REDUCED_CPU_PRECISIONS = tuple(UNITS)


@functools.cache
def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The flags of the first processor listed in `cpuinfo` (empty where it cannot be read,
    e.g. off Linux: then no reduced precision is offered)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_unit(precision: str, flags: frozenset[str] | None = None) -> str | None:
    """The unit that runs `precision` on this CPU (e.g. "AVX512_BF16"), or None when it has
    none; fp32 and the GPU precisions need no unit here ("fp32" / None)."""
    if precision == "fp32":
        return "fp32"
    have = cpu_flags() if flags is None else flags
    return next((name for flag, name in UNITS.get(precision, ()) if flag in have), None)


def missing_unit_message(precision: str) -> str:
    """One line: why `precision` cannot run on this CPU's workers, and what can."""
    names = " or ".join(name for _, name in UNITS[precision])
    usable = ", ".join(p for p in ("fp32", *REDUCED_CPU_PRECISIONS) if cpu_unit(p) is not None)
    return f"{precision} on CPU needs {names}, which this CPU lacks (it runs {usable})"
