"""The documentation site builds with --strict: a broken link, a cross-reference in a docstring that names nothing
(mkdocstrings/autorefs), or a generated page that fails to build (the CLI and column references are generated from
the code at every build) fails this test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_docs_build_strictly(tmp_path: Path):
    site = tmp_path / "site"
    p = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
    )
    warnings = [line for line in p.stderr.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert p.returncode == 0, "mkdocs build --strict failed:\n" + "\n".join(warnings or p.stderr.splitlines()[-20:])
    cli = (site / "reference" / "cli" / "index.html").read_text()
    columns = (site / "reference" / "columns" / "index.html").read_text()
    assert "rldelta diff" in cli and "--save-mask" in cli  # generated from the typer app
    assert "changed_frac" in columns and "rank_fraction" in columns  # generated from rldelta.columns


def test_the_generated_references_list_every_command_and_column():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import docs_hooks
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    from typer.main import get_command

    from rldelta import columns
    from rldelta.cli import app

    cli = docs_hooks.cli_markdown()
    for name in get_command(app).commands:  # every top-level command and group has its section
        assert f"## `rldelta {name}`" in cli
    table = docs_hooks.columns_markdown()
    for name, unit in columns.COLUMNS.items():
        assert f"| `{name}` | `{unit.name}` |" in table
