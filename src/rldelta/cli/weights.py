"""`rldelta diff`, `demo`, `overlap`, `explain`: what changed between two checkpoints, and what explains it."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from rldelta.cli.app import app, console, fail
from rldelta.errors import RldeltaError

# ---- diff (issue 3) -------------------------------------------------------------------------------------------


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

    try:
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
    except RldeltaError as e:
        fail(str(e))
    Console().print(diff_table(result))
    if (experts := experts_table(result)) is not None:
        Console().print(experts)
    console.print(f"wrote {out}")


@app.command()
def demo(out: Path = typer.Option(Path("demo-out"), "-o", "--out", help="Output directory.")) -> None:
    """Build a small Llama-shaped pair with a planted update, diff it, and check the diff found what was planted."""

    from rldelta.api import diff as run_diff
    from rldelta.api import planted_pair
    from rldelta.demo import LOW_RANK_TENSOR
    from rldelta.report.terminal import diff_table

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


@app.command()
def overlap(
    inputs: list[Path] = typer.Argument(..., help="Two or more masks or diff dirs (with mask.safetensors)."),
    out: Path = typer.Option(..., "-o", "--out", help="Output directory."),
) -> None:
    """One-sided overlap |A∩B|/|A|, Jaccard and the random expectation for every ordered pair."""
    from rldelta.api import overlap as run_overlap
    from rldelta.report.terminal import expert_overlap_table, overlap_table

    try:
        result = run_overlap(inputs, out, progress=True)
    except RldeltaError as e:
        fail(str(e))
    Console().print(overlap_table(result))
    if (experts := expert_overlap_table(result)) is not None:
        Console().print(experts)
    console.print(f"wrote {out}")


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

    try:
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
    except RldeltaError as e:
        fail(str(e))
    Console().print(explain_table(res))
    console.print(f"wrote {out}")
