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


@app.callback()
def _root() -> None:
    """Measure and explain what RL fine-tuning changes in a language model's weights."""


def fail(message: str, code: int = 2) -> "typer.Exit":
    """Print a one-line error and leave with a non-zero code (never a traceback for bad input)."""
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)  # one line, whatever the width
    raise typer.Exit(code)


# ---- diff (issue 3) -------------------------------------------------------------------------------------------


@app.command()
def diff(
    base: Path = typer.Argument(..., help="Base checkpoint: dir, .safetensors file, sharded dir or hub cache folder."),
    tuned: Path = typer.Argument(..., help="Fine-tuned checkpoint, in any of the same layouts."),
    out: Path = typer.Option(..., "-o", "--out", help="Output directory."),
    atol: float = typer.Option(1e-5, help="Tolerance for changed_atol: |tuned - base| > atol, in fp32."),
    compare_dtype: str = typer.Option("base", help="Dtype the bitwise comparison is made in: base, bf16, fp16, fp32."),
    rank: bool = typer.Option(True, "--rank/--no-rank", help="Compute the SVD-based rank columns."),
    save_mask: bool = typer.Option(False, "--save-mask", help="Also write OUT/mask.safetensors."),
    workers: int = typer.Option(1, help="Parallel worker processes."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in OUT."),
    strict: bool = typer.Option(False, "--strict", help="Missing or reshaped tensors are an error."),
) -> None:
    """How sparse and how high-rank the update from BASE to TUNED is, tensor by tensor."""
    from rldelta.diff import DiffError, run_diff
    from rldelta.report.terminal import diff_table

    try:
        summary = run_diff(
            base, tuned, out, atol=atol, compare_dtype=compare_dtype, rank=rank, save_mask=save_mask,
            workers=workers, resume=resume, strict=strict, progress=True,
        )
    except (CheckpointError, DiffError) as e:
        fail(str(e))
    Console().print(diff_table(summary))
    console.print(f"wrote {out}")

# ---- masks, overlap, explain (issue 4) -----------------------------------------------------------------------

# ---- models, train, eval (issue 5) ---------------------------------------------------------------------------

# ---- surgery, study (issue 6) --------------------------------------------------------------------------------

# ---- probes (issue 7) ----------------------------------------------------------------------------------------


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
