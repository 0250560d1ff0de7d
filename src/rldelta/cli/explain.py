"""`rldelta explain DIFF --base BASE`: the null models that explain a diff (rounding, magnitude, random-sparse rank)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from rldelta.cli.app import app, console


@app.command()
def explain(
    diff_dir: Path = typer.Argument(..., help="Output directory of `rldelta diff --save-mask`."),
    base: Path = typer.Option(..., "--base", help="The base checkpoint that diff was made from."),
    out: Path = typer.Option(..., "-o", "--out", help="Output directory."),
    tuned_master: Path | None = typer.Option(None, "--tuned-master", help="fp32 master weights of the run."),
    other: Path | None = typer.Option(None, "--other", help="A second run's diff dir: magnitude-matched overlap."),
    rank_null: bool = typer.Option(
        True, "--rank-null/--no-rank-null", help="Random-sparse rank null (a rank per random matrix)."
    ),
    rank_samples: int = typer.Option(3, help="Random matrices per tensor for the rank null."),
    seed: int = typer.Option(0, help="Seed of the rank null."),
) -> None:
    """Null models: rounding (|w|-dependent ULP), magnitude-matched overlap, random-sparse rank."""
    from rldelta.api import explain as run_explain
    from rldelta.report.terminal import explain_table

    res = run_explain(
        diff_dir,
        base,
        out,
        tuned_master=tuned_master,
        other=other,
        rank_null=rank_null,
        rank_samples=rank_samples,
        seed=seed,
        progress=True,
    )
    Console().print(explain_table(res))
    console.print(f"wrote {out}")
