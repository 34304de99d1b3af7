"""Docs that cannot drift: every module of the package is named in docs/architecture.md."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fireredasr_fast"
TESTSUPPORT = ROOT / "testsupport"  # benchmarks/ is described as a whole, one module per benchmark


def test_every_module_appears_in_the_architecture_page():
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    modules = [
        path
        for path in [*PACKAGE.rglob("*.py"), *TESTSUPPORT.glob("*.py")]
        if path.name != "__init__.py" and path.name != "__main__.py"
    ]
    assert len(modules) > 30  # the walk found the package
    # Named as `module.py` or `folder/module.py`.
    missing = [str(path.relative_to(ROOT)) for path in modules if not re.search(rf"[`/]{re.escape(path.name)}`", page)]
    assert not missing, f"modules not described in docs/architecture.md: {missing}"
