"""The typer app every command module registers on, and the one way a command fails: a one-line error."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

app = typer.Typer(add_completion=False, no_args_is_help=True)
console = Console(stderr=True)


@app.callback()
def _root() -> None:
    """Measure and explain what RL fine-tuning changes in a language model's weights."""


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print a one-line error and leave with a non-zero code (never a traceback for bad input)."""
    # escape: a message may hold brackets ("rldelta[ray]", a tensor's shape) that rich would read as markup
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)  # one line at any width
    raise typer.Exit(code)
