"""`rldelta reproduce`: the published pairs of a catalog diffed, published figures beside the measured ones."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from rldelta.cli.app import app, console


@app.command()
def reproduce(
    out: Path = typer.Option(Path("reproduce-out"), "-o", "--out", help="Output directory."),
    catalog: Path | None = typer.Option(
        None, "--catalog", help="A catalog TOML of your own (default: the shipped arXiv:2505.11711 one)."
    ),
    only: list[str] | None = typer.Option(None, "--only", help="Only this pair (by its name); repeat for more."),
    rank: bool = typer.Option(True, "--rank/--no-rank", help="Compute the rank columns (matrix_rank's rank)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be fetched and its size; fetch nothing."),
    workers: int = typer.Option(1, help="Tensors computed in parallel within each diff."),
) -> None:
    """Diff every published pair that is cached or downloadable; write published vs measured (Parquet, CSV, HTML)."""
    from rldelta.report.reproduce import write_reproduce_page
    from rldelta.report.terminal import fetch_plan_table, gaps_table, reproduce_table
    from rldelta.reproduce import dry_run as plan_fetches
    from rldelta.reproduce import load_catalog, run_reproduce

    if dry_run:
        cat = load_catalog(catalog)
        Console().print(fetch_plan_table(plan_fetches(cat, only)))
        if cat.gaps and not only:
            Console().print(gaps_table(cat.gaps))
        return
    result = run_reproduce(out, catalog=catalog, only=only, rank=rank, workers=workers, progress=True)
    page = write_reproduce_page(result, out)
    Console().print(reproduce_table(result))
    console.print(f"wrote {out} ({page.name})")
