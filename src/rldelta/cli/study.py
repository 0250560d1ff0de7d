"""`rldelta study`: the whole experiment grid and its report."""

from __future__ import annotations

from pathlib import Path

import typer

from rldelta.cli.app import app, console, fail


@app.command()
def study(
    config: Path | None = typer.Argument(None, help="Study TOML (see the documented presets/example.toml)."),
    preset: str | None = typer.Option(
        None,
        "--preset",
        help="Built-in study: tiny (<1 min), demo (SmolLM2, ~16 min), full, formats (format selection, ~29 min).",
    ),
    out: Path = typer.Option(..., "-o", "--out", help="Study folder (re-run it to resume; finished work is reused)."),
    backend: str = typer.Option("local", "--backend", help="Where training runs go: local (process pool) or ray."),
    ray_address: str | None = typer.Option(None, "--ray-address", help="Address of an existing Ray cluster."),
    workers: int | None = typer.Option(None, "--workers", help="Training runs at once (default: CPUs, at most 4)."),
    model: str | None = typer.Option(
        None, "--model", help="Replace the config's model: tiny, tiny-moe (a tiny mixture of experts), or a folder."
    ),
) -> None:
    """Train the RL grid, diff, overlap, explain, surgery, subnetwork retraining; write OUT/report.html."""
    from rldelta.api import study as run_study
    from rldelta.study import load_config, preset_path

    if (config is None) == (preset is None):
        fail("give either CONFIG.toml or --preset tiny|demo|full|formats")
    try:
        res = run_study(
            load_config(config if config is not None else preset_path(preset), {"model": model} if model else None),
            out,
            backend=backend,
            workers=workers,
            ray_address=ray_address,
            progress=True,
        )
    except KeyboardInterrupt:
        console.print(f"interrupted; run the same command again to finish the study in {out}")
        raise typer.Exit(130) from None
    for claim, verdict in res.verdicts().items():
        console.print(f"[bold]{claim}[/]: {verdict}", highlight=False)
    console.print(f"report: {res.report_path}", highlight=False, soft_wrap=True)
