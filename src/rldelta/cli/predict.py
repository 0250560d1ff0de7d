"""`rldelta predict BASE --lr --steps`: the bf16 changed fraction a run will leave, forecast before it trains."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from rldelta.cli.app import app


@app.command()
def predict(
    base: Path = typer.Argument(..., help="The base checkpoint (a folder or file the other commands read)."),
    lr: float = typer.Option(..., "--lr", help="Peak learning rate."),
    steps: int = typer.Option(..., "--steps", help="Optimizer steps."),
    schedule: str = typer.Option("constant", "--schedule", help="constant, linear or cosine (after the warmup)."),
    warmup: int = typer.Option(0, "--warmup", help="Linear warmup steps."),
    beta1: float = typer.Option(0.9, "--beta1", help="Adam beta1 (recorded; the drift is calibrated under it)."),
    beta2: float = typer.Option(0.999, "--beta2", help="Adam beta2 (recorded; the drift is calibrated under it)."),
    eps: float = typer.Option(1e-8, "--eps", help="Adam epsilon (recorded)."),
    weight_decay: float = typer.Option(0.0, "--weight-decay", help="AdamW decoupled weight decay."),
    dtype: str = typer.Option("bf16", "--dtype", help="The dtype the copy is stored in: bf16 or fp16."),
    from_run: Path | None = typer.Option(None, "--from-run", help="Calibrate the law on this run's recorded steps."),
    calibrate_steps: int = typer.Option(5, "--calibrate-steps", help="The first K recorded steps of --from-run."),
    as_json: bool = typer.Option(False, "--json", help="Print the prediction as one JSON object."),
) -> None:
    """Predicted changed fraction of the stored copy: total with an interval, per module kind, per layer, per step
    (with the sparse-patch bytes of each step's sync)."""
    from rldelta.predict import Settings, calibrate, read_base
    from rldelta.predict import predict as run_predict

    s = Settings(lr, steps, schedule, warmup, beta1, beta2, eps, weight_decay, dtype)
    s.check()
    cells = read_base(base, dtype)
    cal = calibrate(from_run, calibrate_steps, cells)[0] if from_run is not None else None
    out = run_predict(cells, s, cal)
    if as_json:
        typer.echo(json.dumps(out))
        return
    Console().print(_table(out))


def _table(out: dict) -> Table:
    lo, hi = out["interval"]
    t = Table(title=f"rldelta predict: {100 * out['changed_frac']:.2f}% changed [{100 * lo:.2f}, {100 * hi:.2f}]")
    t.add_column("module kind")
    t.add_column("entries", justify="right")
    t.add_column("changed", justify="right")
    for name, m in out["by_module"].items():
        t.add_row(name, f"{m['numel']:,}", f"{100 * m['changed_frac']:.2f}%")
    per = out["per_step"]
    shown = [per[0], per[len(per) // 2], per[-1]] if len(per) > 2 else per
    steps = ", ".join(f"step {p['step']}: {100 * p['changed_step_frac']:.2f}% ({p['bytes_index']:,} B)" for p in shown)
    t.caption = f"per step (index patch bytes): {steps}. The drift law: {out['calibration']}."
    return t
