"""`rldelta overlap A B ...`: how much the changed sets of two or more runs overlap, against chance."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from rldelta.cli.app import app, console


@app.command()
def overlap(
    inputs: list[Path] = typer.Argument(..., help="Two or more masks or diff dirs (with mask.safetensors)."),
    out: Path = typer.Option(..., "-o", "--out", help="Output directory."),
) -> None:
    """One-sided overlap |A∩B|/|A|, Jaccard and the random expectation for every ordered pair."""
    from rldelta.api import overlap as run_overlap
    from rldelta.report.terminal import expert_overlap_table, overlap_table

    result = run_overlap(inputs, out, progress=True)
    Console().print(overlap_table(result))
    if (experts := expert_overlap_table(result)) is not None:
        Console().print(experts)
    console.print(f"wrote {out}")
