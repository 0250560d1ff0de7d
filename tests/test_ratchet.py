"""The size limits of src/ hold, and their exceptions (tests/ratchet.toml) only shrink.

Lines are counted from the source with `ast` (a function from its `def` to its last line, a module in all its
lines); ruff's C901 and PLR0915 (pyproject.toml) are only silenced by a `# noqa` on the function's `def` line, and
each such function must be listed here too.
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
RATCHET = tomllib.loads((Path(__file__).parent / "ratchet.toml").read_text())
_NOQA = re.compile(r"#\s*noqa:[^#]*\b(C901|PLR0915)\b")


def _modules() -> dict[str, str]:
    return {p.relative_to(SRC).as_posix(): p.read_text() for p in sorted(SRC.rglob("*.py"))}


def _functions(path: str, text: str):
    """(name, lines, noqa on its def line) for every function and method of one module."""
    lines = text.splitlines()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            header = " ".join(lines[node.lineno - 1 : node.body[0].lineno - 1])
            yield f"{path}:{node.name}", node.end_lineno - node.lineno + 1, bool(_NOQA.search(header))


def measured() -> tuple[dict[str, int], dict[str, int], set[str]]:
    """Every module over the module limit and every function over the function limit (or silenced for ruff)."""
    limits = RATCHET["limits"]
    modules, functions, silenced = {}, {}, set()
    for path, text in _modules().items():
        if (n := len(text.splitlines())) > limits["module_lines"]:
            modules[path] = n
        for name, n, noqa in _functions(path, text):
            if n > limits["function_lines"] or noqa:
                functions[name] = n
            if noqa:
                silenced.add(name)
    return modules, functions, silenced


def check(listed: dict[str, dict], found: dict[str, int], what: str) -> list[str]:
    errors = []
    for name, n in sorted(found.items()):
        entry = listed.get(name)
        if entry is None:
            errors.append(f"{name}: {n} lines, over the {what} limit and not in tests/ratchet.toml")
        elif n > entry["lines"]:
            errors.append(f"{name}: {n} lines, more than the {entry['lines']} tests/ratchet.toml allows")
        elif n < entry["lines"]:
            errors.append(f"{name}: down to {n} lines: lower its number in tests/ratchet.toml to {n}")
    for name in sorted(set(listed) - set(found)):
        errors.append(f"{name}: within the limits now: remove it from tests/ratchet.toml")
    errors += [f"{name}: listed without a reason" for name, e in listed.items() if not e.get("reason", "").strip()]
    return errors


def test_modules_within_the_limit_or_listed() -> None:
    modules, _, _ = measured()
    assert not (errors := check(RATCHET["modules"], modules, "module")), "\n".join(errors)


def test_functions_within_the_limit_or_listed() -> None:
    _, functions, _ = measured()
    assert not (errors := check(RATCHET["functions"], functions, "function")), "\n".join(errors)


def test_the_ratchet_can_fail() -> None:
    # a module that grew, one that shrank and one that is new all fail; one at its number passes
    listed = {"a.py": {"lines": 500, "reason": "r"}, "b.py": {"lines": 500, "reason": "r"}}
    errors = check(listed, {"a.py": 501, "b.py": 499, "c.py": 401}, "module")
    assert len(errors) == 3
    assert check({"a.py": {"lines": 500, "reason": "r"}}, {"a.py": 500}, "module") == []
    assert check({"a.py": {"lines": 500, "reason": ""}}, {"a.py": 500}, "module") == ["a.py: listed without a reason"]
