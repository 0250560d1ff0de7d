"""`rldelta eval MODEL --task T`: greedy accuracy and format rate on a task's test split. The options it shares
with `rldelta train` (task, difficulty) take their help from TrainConfig's fields."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from rldelta.cli.app import app, console
from rldelta.train.config import TrainConfig, help_of  # light (no torch): the shared options' help


@app.command("eval")
def eval_(
    model: Path = typer.Argument(..., help="Model folder."),
    task: str = typer.Option(..., "--task", help=help_of(TrainConfig, "task").split(" (default")[0] + "."),
    n: int = typer.Option(200, "--n", help="Number of test problems."),
    seed: int = typer.Option(0, help="Seed of the test problems."),
    difficulty: int | None = typer.Option(None, help=help_of(TrainConfig, "difficulty")),
    batch_size: int = typer.Option(16, help="Prompts per generation batch."),
    max_new_tokens: int = typer.Option(64, help="Generation length limit."),
    out: Path | None = typer.Option(None, "-o", "--out", help="Write the result as JSON here."),
) -> None:
    """Greedy accuracy and format rate of MODEL on a task's test split, overall and per difficulty."""
    from rldelta.report.terminal import eval_table
    from rldelta.train.evaluate import evaluate

    result = evaluate(
        model,
        task,
        n,
        seed=seed,
        difficulty=difficulty,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        out=out,
    )
    Console().print(eval_table(result, str(model)))
    if out is not None:
        console.print(f"wrote {out}")
