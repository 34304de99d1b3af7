"""The code's shape, checked like behaviour: imports go one way down the layers of
pyproject.toml's [tool.importlinter] contract (docs/architecture.md), and ruff's rules hold,
function complexity (C901) included. A new import cycle or a tangle of branches fails here,
in the README's test command, not only in a reviewer's eye."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from conftest import ROOT


def run_tool(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_imports_go_one_way() -> None:
    pytest.importorskip("importlinter")
    result = run_tool(sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_ruff_is_clean() -> None:
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed")
    result = run_tool(ruff, "check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout[-4000:]


# Radon counts boolean operators, which ruff's C901 does not: a condition of five `and`s is five
# branches to a reader. Benchmarks and test support live outside the package.
MAX_COMPLEXITY = 15
MAX_FUNCTION_LINES = 100


def test_no_hidden_complexity() -> None:
    complexity = pytest.importorskip("radon.complexity")
    from radon.visitors import Function

    package = ROOT / "fireredasr_fast"
    offenders = []
    for path in sorted(package.rglob("*.py")):
        for block in complexity.cc_visit(path.read_text(encoding="utf-8")):
            if not isinstance(block, Function):
                continue
            lines = block.endline - block.lineno + 1
            if block.complexity > MAX_COMPLEXITY or lines >= MAX_FUNCTION_LINES:
                where = f"{path.relative_to(ROOT)}:{block.lineno} {block.fullname}"
                offenders.append(f"{where}: complexity {block.complexity}, {lines} lines")
    assert not offenders, "functions over the limits:\n" + "\n".join(offenders)


def test_the_product_ships_without_the_benchmarks_or_the_test_support() -> None:
    tomllib = pytest.importorskip("tomllib")
    setuptools = pytest.importorskip("setuptools")
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    shipped = {name.split(".")[0] for name in setuptools.find_packages(ROOT, include=find["include"])}
    assert shipped == {"fireredasr_fast"}
    assert (ROOT / "benchmarks" / "__init__.py").is_file() and (ROOT / "testsupport" / "__init__.py").is_file()
