"""The `rldelta` command line: parse, call one library function, print. No computation lives here."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from rldelta.checkpoint import CheckpointError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console(stderr=True)


def fail(message: str, code: int = 2) -> "typer.Exit":
    """Print a one-line error and leave with a non-zero code (never a traceback for bad input)."""
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


# ---- diff (issue 3) -------------------------------------------------------------------------------------------

# ---- masks, overlap, explain (issue 4) -----------------------------------------------------------------------

# ---- models, train, eval (issue 5) ---------------------------------------------------------------------------

# ---- surgery, study (issue 6) --------------------------------------------------------------------------------

# ---- probes (issue 7) ----------------------------------------------------------------------------------------


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
