"""Print the package's import layers: for each layer of the layers contract in pyproject.toml,
its modules, their lines, and which layers it imports. Modules outside every layer are listed
last. Used for the before/after pictures in docs/architecture.md:

    python tests/tools/import_layers.py [--rev REV]

--rev reads a committed revision (through a temporary git worktree) instead of this checkout.
Needs Python 3.11 or later (tomllib).
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "fireredasr_fast"


def contract_layers(root: Path) -> list[list[str]]:
    """The package's layers contract, top layer first; each layer a list of its modules."""
    config = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    for contract in config["tool"]["importlinter"]["contracts"]:
        if contract["type"] == "layers" and PACKAGE in contract.get("containers", []):
            return [[name.strip() for name in layer.replace("|", ":").split(":")] for layer in contract["layers"]]
    raise SystemExit(f"{root}/pyproject.toml: no layers contract for {PACKAGE}")


def module_name(path: Path, package_dir: Path) -> str:
    parts = list(path.relative_to(package_dir).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, package_dir: Path) -> set[str]:
    """The package's modules `path` imports (relative imports resolved), as dotted names below it."""
    here = module_name(path, package_dir).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = (package[: len(package) - node.level + 1] if node.level else []) + (node.module or "").split(".")
            base = [part for part in base if part]
            if not node.level and (not base or base[0] != PACKAGE):
                continue
            base = base[1:] if not node.level else base
            found.update(".".join([*base, alias.name]) for alias in node.names)
            found.add(".".join(base))
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".", 1)[1] for alias in node.names if alias.name.startswith(PACKAGE + "."))
    return {name for name in found if name}


def layer_of(module: str, layers: list[list[str]]) -> int | None:
    top = module.split(".")[0]
    return next((index for index, layer in enumerate(layers) if top in layer), None)


def describe(root: Path) -> str:
    package_dir = root / PACKAGE
    layers = contract_layers(root)
    names = [
        " | ".join(layer) if len(" | ".join(layer)) <= 26 else f"{layer[0]} .. {layer[-1]} ({len(layer)})"
        for layer in layers
    ]
    modules: dict[int | None, list[Path]] = {}
    uses: dict[int | None, Counter] = {}
    for path in sorted(package_dir.rglob("*.py")):
        layer = layer_of(module_name(path, package_dir), layers)
        modules.setdefault(layer, []).append(path)
        for target in imported_modules(path, package_dir):
            other = layer_of(target, layers)
            if other != layer:
                uses.setdefault(layer, Counter())["outside" if other is None else names[other]] += 1
    rows = [f"{'layer':<26} {'modules':>7} {'lines':>6}  imports from (layer: names imported)"]
    for layer in [*range(len(layers)), None]:
        if layer not in modules:
            continue
        lines = sum(len(path.read_text(encoding="utf-8").splitlines()) for path in modules[layer])
        target = ", ".join(f"{name} {count}" for name, count in sorted(uses.get(layer, Counter()).items()))
        label = "outside the layers" if layer is None else names[layer]
        rows.append(f"{label:<26} {len(modules[layer]):>7} {lines:>6}  {target or '-'}")
    outside = [str(path.relative_to(root)) for path in modules.get(None, [])]
    if outside:
        rows.append("outside the layers: " + ", ".join(outside))
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", help="a committed revision instead of this checkout")
    args = parser.parse_args()
    if not args.rev:
        print(describe(ROOT))
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        tree = Path(scratch) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), args.rev], check=True)
        try:
            print(describe(tree))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
