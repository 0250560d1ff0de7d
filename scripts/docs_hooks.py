"""MkDocs hooks: the CLI reference and the column reference are generated at every build, never written by hand.

`reference/cli.md` comes from the typer app (every command, argument, option, default and help text);
`reference/columns.md` from `rldelta.columns` (every column name rldelta writes and its unit). A page built from
the code cannot drift from it: a renamed option or a new column is in the next build.
"""

from __future__ import annotations

from mkdocs.structure.files import File, Files

CLI_PAGE = "reference/cli.md"
COLUMNS_PAGE = "reference/columns.md"
GENERATED_NOTE = "<!-- generated at build time by scripts/docs_hooks.py; edit the code, not this page -->\n\n"

KIND_TEXT = {
    "pct": "percent, 2 decimals",
    "num": "decimal, 3 places",
    "acc": "decimal, 3 places",
    "int": "integer, thousands separated",
    "text": "as text",
}


def cli_markdown() -> str:
    import typer
    import typer.main
    from typer.cli import get_docs_for_click

    from rldelta.cli import app

    command = typer.main.get_command(app)
    body = get_docs_for_click(obj=command, ctx=typer.Context(command), name="rldelta", title="CLI reference")
    intro = (
        "Every command of `rldelta`, generated from its typer app at each docs build: the text is the one "
        "`rldelta COMMAND --help` prints.\n\n"
    )
    head, _, rest = body.partition("\n\n")
    return GENERATED_NOTE + head + "\n\n" + intro + rest


def columns_markdown() -> str:
    from rldelta import columns

    lines = [
        "# Column reference",
        "",
        "Every column name rldelta writes into a Parquet or CSV table, with its unit, generated from "
        "`rldelta.columns` at each docs build. Each Parquet field carries its unit in its metadata "
        f'(`{{"{columns.UNIT_KEY}": ...}}`), and the report and the terminal tables show a value in its unit. '
        f"A missing value is shown as {columns.MISSING}. A column not listed here is a label.",
        "",
        "## Units",
        "",
        "| unit | shown as | meaning |",
        "|---|---|---|",
    ]
    lines += [f"| `{u.name}` | {KIND_TEXT[u.kind]} | {u.doc} |" for u in columns.UNITS]
    lines += ["", "## Columns", "", "| column | unit | meaning of the unit |", "|---|---|---|"]
    for name in sorted(columns.COLUMNS):
        unit = columns.COLUMNS[name]
        lines.append(f"| `{name}` | `{unit.name}` | {unit.doc} |")
    for prefix, unit in sorted(columns.PREFIXES.items()):
        lines.append(f"| `{prefix}k` (any k) | `{unit.name}` | {unit.doc} |")
    return GENERATED_NOTE + "\n".join(lines) + "\n"


def on_files(files: Files, config) -> Files:
    for uri, make in ((CLI_PAGE, cli_markdown), (COLUMNS_PAGE, columns_markdown)):
        if files.get_file_from_path(uri) is not None:
            files.remove(files.get_file_from_path(uri))
        files.append(File.generated(config, uri, content=make()))
    return files
