"""Print the import graph of predstore's packages, read from their source, and check that it points
one way; list the modules longer than the house limit.

    python docs/import_graph.py

Every ``import`` counts, at module level or inside a function (a lazy import is still a
dependency), and so does one under ``if TYPE_CHECKING:``; the entry points do not (a package's
``__main__.py``, and ``predstore/cli.py``, the root command, which imports each component's
commands: nothing imports them). Exit status 1 if a package imports one it may not (store imports
no other; models only store; lookup_api models (for live scoring) and store; batch and monitor
models and store; scheduler batch, monitor, models and store; the predstore facade any of those;
demo any), 0 otherwise; long modules are reported, not failed.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Each package, and the packages it may import.
ALLOWED: dict[str, frozenset[str]] = {
    "store": frozenset(),
    "models": frozenset({"store"}),
    "lookup_api": frozenset({"models", "store"}),
    "monitor": frozenset({"models", "store"}),
    "batch": frozenset({"models", "store"}),
    "scheduler": frozenset({"batch", "monitor", "models", "store"}),
    "predstore": frozenset({"batch", "monitor", "models", "store", "lookup_api", "scheduler"}),
    "demo": frozenset({"batch", "monitor", "models", "store", "lookup_api", "scheduler", "predstore"}),
}
#: Modules that nothing imports: they may reach every package.
ENTRY_POINTS = frozenset({"predstore/cli.py"})
#: Modules longer than this many lines are listed.
MAX_LINES = 400


def imported(tree: ast.AST) -> set[str]:
    """The top-level names of the modules ``tree`` imports (absolute imports only)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def edges(root: Path = ROOT) -> dict[tuple[str, str], list[str]]:
    """(package, imported package) -> the modules of ``package`` that import it."""
    found: dict[tuple[str, str], list[str]] = defaultdict(list)
    for package in ALLOWED:
        for path in sorted((root / package).rglob("*.py")):
            if path.name == "__main__.py" or path.relative_to(root).as_posix() in ENTRY_POINTS:
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for name in sorted(imported(tree) & set(ALLOWED) - {package}):
                found[(package, name)].append(path.relative_to(root).as_posix())
    return dict(found)


def long_modules(root: Path = ROOT, limit: int = MAX_LINES) -> list[tuple[str, int]]:
    """The packages' modules over ``limit`` lines, longest first."""
    sizes = [(path.relative_to(root).as_posix(), len(path.read_text(encoding="utf-8").splitlines()))
             for package in ALLOWED for path in (root / package).rglob("*.py")]
    return sorted(((name, n) for name, n in sizes if n > limit), key=lambda item: -item[1])


def main() -> int:
    graph = edges()
    wrong = {edge: modules for edge, modules in graph.items() if edge[1] not in ALLOWED[edge[0]]}
    for package in ALLOWED:
        targets = sorted(to for source, to in graph if source == package)
        print(f"{package:<11} -> {', '.join(targets) or '(nothing)'}")
    for (source, to), modules in sorted(wrong.items()):
        print(f"UPWARD: {source} -> {to} in {', '.join(modules)}")
    print(f"one way: {'no' if wrong else 'yes'}")
    long = long_modules()
    for name, n in long:
        print(f"over {MAX_LINES} lines: {name} ({n})")
    if not long:
        print(f"no module over {MAX_LINES} lines")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
