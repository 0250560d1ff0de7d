"""`rldelta mask ...`: build, combine and inspect changed-masks."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from rldelta.cli.app import app, console, fail

mask_app = typer.Typer(no_args_is_help=True, help="Build, combine and inspect changed-masks (mask.safetensors).")
app.add_typer(mask_app, name="mask")


def _mask_done(counts, out: Path) -> None:
    console.print(
        f"wrote {out}: {counts.total_count:,} of {counts.total_numel:,} entries "
        f"({100 * counts.total_density:.3f}%) in {len(counts.count)} tensors",
        highlight=False,
    )


def _save_built(build, out: Path, reads: tuple[Path, ...] = ()) -> None:
    """Run a mask builder and stream its result to OUT, turning bad input into a one-line error. OUT may not be one
    of the masks it `reads`: the input would be replaced by the result."""
    from rldelta.masks import mask_target, resolve_mask_path, save_mask

    for src in reads:
        if resolve_mask_path(src).resolve() == mask_target(out).resolve():
            fail(f"{out}: is the input mask {src}; write the result to another file")
    counts = save_mask(build(), out)
    _mask_done(counts, out)


@mask_app.command("from-diff")
def mask_from_diff_cmd(
    diff_dir: Path = typer.Argument(..., help="Output directory of `rldelta diff --save-mask`."),
    out: Path = typer.Option(..., "-o", "--out", help="Mask file (.safetensors) or directory."),
) -> None:
    """Copy the changed-mask of a diff into its own file."""
    from rldelta.masks import mask_from_diff

    _save_built(lambda: mask_from_diff(diff_dir), out, reads=(diff_dir,))


@mask_app.command("threshold")
def mask_threshold_cmd(
    ckpt: Path = typer.Argument(..., help="Base checkpoint (or the only one, for a threshold on |W|)."),
    tuned: Path | None = typer.Argument(None, help="Tuned checkpoint: threshold |tuned - base| instead of |W|."),
    threshold: float = typer.Option(1e-5, "--threshold", "-t", help="Entries with |Δ| (or |W|) above this."),
    below: bool = typer.Option(False, "--below", help="For |W|: entries below the threshold instead."),
    out: Path = typer.Option(..., "-o", "--out", help="Mask file (.safetensors) or directory."),
) -> None:
    """Mask of |Δ| > threshold (two checkpoints) or of |W| > threshold (one checkpoint)."""
    from rldelta.checkpoint import open_checkpoint
    from rldelta.masks import threshold_delta_mask, threshold_weight_mask

    if tuned is not None and below:
        fail("--below applies to a threshold on |W| (one checkpoint), not on |Δ|")
    _save_built(
        lambda: (
            threshold_delta_mask(open_checkpoint(ckpt), open_checkpoint(tuned), threshold)
            if tuned is not None
            else threshold_weight_mask(open_checkpoint(ckpt), threshold, below=below)
        ),
        out,
    )


@mask_app.command("topk")
def mask_topk_cmd(
    base: Path = typer.Argument(..., help="Base checkpoint."),
    tuned: Path = typer.Argument(..., help="Tuned checkpoint."),
    frac: float = typer.Option(..., "--frac", help="Fraction of each tensor's entries to keep, largest |Δ| first."),
    out: Path = typer.Option(..., "-o", "--out", help="Mask file (.safetensors) or directory."),
) -> None:
    """Per tensor, the FRAC of entries with the largest |tuned - base|."""
    from rldelta.checkpoint import open_checkpoint
    from rldelta.masks import topk_delta_mask

    _save_built(lambda: topk_delta_mask(open_checkpoint(base), open_checkpoint(tuned), frac), out)


@mask_app.command("random")
def mask_random_cmd(
    like: Path = typer.Argument(..., help="Mask or diff dir whose names, shapes and per-tensor counts to copy."),
    seed: int = typer.Option(0, help="Seed; the same seed gives the same mask."),
    density: float | None = typer.Option(None, help="One density for every tensor instead of LIKE's counts."),
    out: Path = typer.Option(..., "-o", "--out", help="Mask file (.safetensors) or directory."),
) -> None:
    """Random mask with exactly LIKE's number of entries per tensor (seeded, reproducible)."""
    from rldelta.masks import load_mask, random_mask

    _save_built(lambda: random_mask(load_mask(like), seed, density=density), out, reads=(like,))


@mask_app.command("combine")
def mask_combine_cmd(
    a: Path = typer.Argument(..., help="Mask A (file or diff dir)."),
    b: Path = typer.Argument(..., help="Mask B (file or diff dir)."),
    op: str = typer.Option(..., "--op", help="and (A∩B), or (A∪B), minus (A∖B)."),
    out: Path = typer.Option(..., "-o", "--out", help="Mask file (.safetensors) or directory."),
) -> None:
    """Intersection, union or difference of two masks."""
    from rldelta.masks import difference, intersection, load_mask, union

    ops = {"and": intersection, "or": union, "minus": difference}
    if op not in ops:
        fail(f"--op must be one of and, or, minus; not {op!r}")
    _save_built(lambda: ops[op](load_mask(a), load_mask(b)), out, reads=(a, b))


@mask_app.command("info")
def mask_info_cmd(mask: Path = typer.Argument(..., help="Mask file or diff dir.")) -> None:
    """Density per tensor and in total."""
    from rldelta.masks import load_mask, mask_counts
    from rldelta.report.terminal import mask_table

    counts = mask_counts(load_mask(mask))
    Console().print(mask_table(counts, str(mask)))
