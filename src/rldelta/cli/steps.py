"""`rldelta steps RUN`: every recorded optimizer step's change set, and the union mask at any step."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from rldelta.cli.app import app, console, fail
from rldelta.errors import RldeltaError


@app.command()
def steps(
    run: Path = typer.Argument(..., help="A run folder holding steps.parquet (rldelta train records it by default)."),
    union_at: int | None = typer.Option(
        None, "--union-at", help="Write the union of the change sets up to this step as a mask (needs -o)."
    ),
    out: Path | None = typer.Option(None, "-o", "--out", help="Mask file or folder for --union-at."),
) -> None:
    """Per-step changed fraction, overlaps, saturation and sparse-patch size of a recorded run."""
    from rldelta.masks import save_mask
    from rldelta.report.terminal import steps_table
    from rldelta.train.step_recorder import read_steps, union_mask

    if (union_at is None) != (out is None):
        fail("--union-at and -o go together")
    try:
        table, summary = read_steps(run)
        last = int(table["step"].max()) if len(table) else 0
        if union_at is not None and not 1 <= union_at <= last:
            fail(f"--union-at {union_at}: {run} recorded steps 1 to {last}; choose one of them")
        Console().print(steps_table(table, summary))
        if union_at is not None:
            counts = save_mask(union_mask(run, union_at), out)
            console.print(f"wrote {out}: the union up to step {union_at}, {counts.total_count:,} entries")
    except RldeltaError as e:
        fail(str(e))
