"""`rldelta diff BASE TUNED`: how sparse and how high-rank the update is, tensor by tensor."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from rldelta.cli.app import app, console


@app.command()
def diff(
    base: Path = typer.Argument(
        ...,
        help="Base checkpoint: dir, .safetensors or .bin file, sharded dir, hub cache folder, or hub id org/name[@rev].",
    ),
    tuned: Path = typer.Argument(..., help="Fine-tuned checkpoint, in any of the same layouts."),
    out: Path = typer.Option(..., "-o", "--out", help="Output directory."),
    atol: float = typer.Option(1e-5, help="Tolerance for changed_atol: |tuned - base| > atol, in fp32."),
    compare_dtype: str = typer.Option(
        "narrower",
        help="Dtype the bitwise comparison is made in: narrower (of the two stored dtypes, what a publisher's cast "
        "produces), base, bf16, fp16, fp32.",
    ),
    rank: bool = typer.Option(True, "--rank/--no-rank", help="Compute the rank columns (matrix_rank's rank)."),
    save_mask: bool = typer.Option(False, "--save-mask", help="Also write OUT/mask.safetensors."),
    workers: int = typer.Option(1, help="Tensors computed in parallel (processes, or Ray tasks)."),
    backend: str = typer.Option("local", "--backend", help="Where tensors are computed: local (processes) or ray."),
    ray_address: str | None = typer.Option(None, "--ray-address", help="Address of an existing Ray cluster."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in OUT."),
    strict: bool = typer.Option(False, "--strict", help="Missing or reshaped tensors are an error."),
    threads: int | None = typer.Option(
        None, "--threads", help="Torch threads per worker (default: the usable cores shared out between workers)."
    ),
    device: str = typer.Option("cpu", "--device", help="Where Δ and the ranks are computed: cpu, cuda[:N] or auto."),
) -> None:
    """How sparse and how high-rank the update from BASE to TUNED is, tensor by tensor."""
    from rldelta.api import diff as run_diff
    from rldelta.report.terminal import diff_table, experts_table

    result = run_diff(
        base,
        tuned,
        out,
        atol=atol,
        compare_dtype=compare_dtype,
        rank=rank,
        save_mask=save_mask,
        workers=workers,
        backend=backend,
        ray_address=ray_address,
        resume=resume,
        strict=strict,
        threads=threads,
        device=device,
        progress=True,
    )
    Console().print(diff_table(result))
    if (experts := experts_table(result)) is not None:
        Console().print(experts)
    console.print(f"wrote {out}")
