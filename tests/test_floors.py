"""The floors hold by themselves: no import loop, no lower floor importing a higher one (sizes: test_ratchet.py).

Read from the source with `ast`, so imports inside functions count too: a lazy import hides a loop from Python's
import machinery, not from this test.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "src" / "rldelta"

# Bottom to top. A module may import its own floor and the floors below it, never one above.
FLOORS: list[tuple[str, ...]] = [
    ("rldelta", "rldelta.runtime", "rldelta.naming", "rldelta.columns"),
    ("rldelta.metrics",),
    ("rldelta.plots", "rldelta.checkpoint"),
    ("rldelta.masks",),
    ("rldelta.diff", "rldelta.diff_journal", "rldelta.diff_summary", "rldelta.selfcheck"),
    (
        "rldelta.overlap",
        "rldelta.explain",
        "rldelta.surgery",
        "rldelta.reproduce",
        "rldelta.catalog",
        "rldelta.predict",
        "rldelta.results",  # the engines' typed results, read from their records
    ),
    ("rldelta.train",),
    ("rldelta.probes",),
    ("rldelta.report",),
    ("rldelta.study",),
    ("rldelta.api",),  # the declared entry points call the engines of every floor below
    ("rldelta.cli",),
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _floor(module: str) -> int:
    best, floor = -1, None
    for i, prefixes in enumerate(FLOORS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, floor = len(prefix), i
    assert floor is not None, f"{module} is on no floor: add it to FLOORS"
    return floor


def _runtime_nodes(tree: ast.AST):
    """Every node except those under `if TYPE_CHECKING:` (annotations only, never imported at run time)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                stack.extend(child.orelse)
                continue
            stack.append(child)


def _imports(module: str) -> set[str]:
    """The rldelta modules `module` imports anywhere in its file (top level or inside functions)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name in MODULES and name != module:
                found.add(name)
    return found


GRAPH = {m: _imports(m) for m in MODULES}


def _cycle() -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(GRAPH[m]):
            # a package's __init__ importing its own submodules is the usual re-export, not a loop
            if n.startswith(m + "."):
                continue
            if state.get(n) == 1:
                return stack[stack.index(n) :] + [n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(GRAPH):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_loop() -> None:
    loop = _cycle()
    assert loop is None, "import loop: " + " -> ".join(loop)


def test_no_lower_floor_imports_a_higher_one() -> None:
    upward = [
        f"{m} (floor {_floor(m)}) imports {n} (floor {_floor(n)})"
        for m, targets in GRAPH.items()
        for n in targets
        if _floor(n) > _floor(m)
    ]
    assert not upward, "\n".join(sorted(upward))


@pytest.mark.parametrize(
    ("importer", "imported", "allowed"),
    [("rldelta.metrics.rank", "rldelta.diff", False), ("rldelta.cli", "rldelta.metrics.rank", True)],
)
def test_floor_rule_itself(importer: str, imported: str, allowed: bool) -> None:
    # the rule can fail: a metric importing the diff engine is upward, the CLI importing a metric is not
    assert (_floor(imported) <= _floor(importer)) is allowed
