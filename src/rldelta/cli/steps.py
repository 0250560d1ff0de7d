"""`rldelta steps RUN`: every recorded optimizer step's change set, and the union mask at any step.
`rldelta steps apply BASE RUN --to N -o OUT`: step N's bf16 weights rebuilt from the base and the run's patches."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from rldelta.cli.app import app, console, fail


@app.command()
def steps(
    args: list[str] = typer.Argument(
        ...,
        metavar="RUN | apply BASE RUN",
        help="A run folder holding steps.parquet (rldelta train records it by default); or `apply BASE RUN`: "
        "rebuild step --to's bf16 weights from BASE and RUN's patches (recorded with `rldelta train --patches`).",
    ),
    union_at: int | None = typer.Option(
        None, "--union-at", help="Write the union of the change sets up to this step as a mask (needs -o)."
    ),
    to: int | None = typer.Option(None, "--to", help="apply: the step whose weights to rebuild."),
    out: Path | None = typer.Option(
        None, "-o", "--out", help="Mask file or folder for --union-at; apply: the model folder (or .safetensors)."
    ),
) -> None:
    """Per-step changed fraction, overlaps, saturation and sparse-patch size of a recorded run."""
    if args[0] == "apply":
        if len(args) != 3 or to is None or out is None:
            fail("usage: rldelta steps apply BASE RUN --to N -o OUT")
        _apply(Path(args[1]), Path(args[2]), to, out)
        return
    if len(args) != 1:
        fail(f"one run folder expected, got {len(args)} arguments (or: rldelta steps apply BASE RUN --to N -o OUT)")
    _table(Path(args[0]), union_at, out)


def _apply(base: Path, run: Path, to: int, out: Path) -> None:
    from rldelta.train.step_patches import apply_patches

    n = apply_patches(base, run, to, out)
    console.print(f"wrote {out}: the bf16 weights of step {to} ({n:,} entries patched over {to} steps)")


def _table(run: Path, union_at: int | None, out: Path | None) -> None:
    from rldelta.masks import save_mask
    from rldelta.report.terminal import steps_table
    from rldelta.train.step_files import read_steps, union_mask

    if (union_at is None) != (out is None):
        fail("--union-at and -o go together")
    table, summary = read_steps(run)
    last = int(table["step"].max()) if len(table) else 0
    if union_at is not None and not 1 <= union_at <= last:
        fail(f"--union-at {union_at}: {run} recorded steps 1 to {last}; choose one of them")
    Console().print(steps_table(table, summary))
    if union_at is not None:
        counts = save_mask(union_mask(run, union_at), out)
        console.print(f"wrote {out}: the union up to step {union_at}, {counts.total_count:,} entries")
