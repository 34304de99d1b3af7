"""Docs that cannot drift: every module of the package is named in docs/architecture.md, and the
code's comments hold no measurements or history (those live in docs/, which comments link)."""

from __future__ import annotations

import io
import re
import tokenize
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


# A comment that reports a measurement must say where it is written down.
MEASUREMENT = re.compile(r"\((M|m)easured\b|(^|[.;] )Measured\b", re.M)
DOC_LINK = re.compile(r"docs/|\.md\b|python -m benchmarks")
# Figures and history that belong in docs/benchmarks.md or the git log, not in a comment.
FIGURE_OR_HISTORY = re.compile(
    r"\b\d+(\.\d+)?x (faster|slower|realtime|the speed|the time)\b"
    r"|\b\d+(\.\d+)? ?(GFLOP/s|tokens/s|x realtime)"
    r"|\b(previous default|default before|used to be|no longer the|formerly|session \d+|issue \d+)\b",
    re.I,
)
ANCHOR = re.compile(r"#[\w-]+")  # a link's anchor may name a dated section of the docs


def comment_blocks(path: Path) -> list[tuple[int, str]]:
    """(first line, text) of every docstring and every run of consecutive comment lines."""
    blocks: list[tuple[int, str]] = []
    last_comment_line = -2
    for token in tokenize.generate_tokens(io.StringIO(path.read_text(encoding="utf-8")).readline):
        if token.type == tokenize.COMMENT:
            text = token.string.lstrip("#").strip()
            if token.start[0] == last_comment_line + 1 and blocks:
                blocks[-1] = (blocks[-1][0], blocks[-1][1] + "\n" + text)
            else:
                blocks.append((token.start[0], text))
            last_comment_line = token.start[0]
        elif token.type == tokenize.STRING and token.string.lstrip("rbuRBU").startswith(('"""', "'''")):
            blocks.append((token.start[0], token.string))
    return blocks


def comment_problems(path: Path) -> list[str]:
    problems = []
    for line, text in comment_blocks(path):
        if MEASUREMENT.search(text) and not DOC_LINK.search(text):
            problems.append(f"{path.relative_to(ROOT)}:{line}: a measurement without a link to docs/")
        found = FIGURE_OR_HISTORY.search(ANCHOR.sub("", text))
        if found:
            problems.append(f"{path.relative_to(ROOT)}:{line}: {found.group(0)!r} belongs in docs/")
    return problems


def test_code_comments_hold_no_measurements_or_history():
    problems = [problem for path in sorted(PACKAGE.rglob("*.py")) for problem in comment_problems(path)]
    assert not problems, "\n".join(problems)


def test_the_comment_check_finds_a_measurement_and_history(tmp_path):
    module = tmp_path / "module.py"
    module.write_text(
        '"""Recognises speech."""\n'
        "# Measured on 2 cores: one worker of 2 threads won.\n"
        "LIMIT = 1\n"
        "# The kernel runs 3.5x faster than torch's, the previous default.\n"
        "# (measured: docs/engine.md#measured-numbers)\n"
        "OTHER = 2\n"
        "LAST = 3  # see session 9\n",
        encoding="utf-8",
    )
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        problems = comment_problems(module)
    finally:
        ROOT = saved
    assert len(problems) == 3, problems
    assert "module.py:2: a measurement" in problems[0]
    assert "3.5x faster" in problems[1] and "session 9" in problems[2]
