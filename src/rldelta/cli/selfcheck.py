"""`rldelta selfcheck`: a one-minute check of the installation on a planted pair (not the study: that is
`make demo`)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from rldelta.cli.app import app


@app.command()
def selfcheck(out: Path = typer.Option(Path("selfcheck-out"), "-o", "--out", help="Output directory.")) -> None:
    """A one-minute self-check: build a small Llama-shaped pair with a planted update, diff it, and check the diff
    found what was planted."""
    from rldelta.api import diff as run_diff
    from rldelta.api import planted_pair
    from rldelta.report.terminal import diff_table
    from rldelta.selfcheck import LOW_RANK_TENSOR

    pair = planted_pair(out / "pair")
    result = run_diff(pair.base, pair.tuned, out / "diff", save_mask=True, progress=True)
    Console().print(diff_table(result))
    row = result.tensors().set_index("name").loc[LOW_RANK_TENSOR]
    Console().print(
        f"{LOW_RANK_TENSOR}: a rank-2 update stored in bf16 -> numerical rank {int(row['rank'])}/"
        f"{int(row['max_rank'])}, effective rank {row['effective_rank']:.1f} (rounding noise fills the spectrum)"
    )
    found = result.totals["changed"]
    want = sum(pair.planted.values())
    verdict = "[green]matches[/]" if found == want else "[red]DIFFERS from[/]"
    Console().print(f"changed entries found: {found:,} — {verdict} the {want:,} planted. Results: {out / 'diff'}")
    if found != want:
        raise typer.Exit(1)
