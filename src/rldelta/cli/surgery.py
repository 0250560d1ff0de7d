"""`rldelta surgery patch|revert`: graft a masked update onto the base, or cut it out of the tuned model."""

from __future__ import annotations

from pathlib import Path

import typer

from rldelta.cli.app import app, console

surgery_app = typer.Typer(
    no_args_is_help=True, help="Graft a masked part of the update onto BASE, or cut it out of TUNED."
)
app.add_typer(surgery_app, name="surgery")


def _surgery(kind: str, base: Path, tuned: Path, mask: Path, out: Path, control: str | None, seed: int) -> None:
    from rldelta.api import surgery as run_surgery

    res = run_surgery(kind, base, tuned, mask, out, control=control, seed=seed, progress=True)
    t = res.totals
    which = f"random control (seed {seed}) of {mask}" if control else str(mask)
    console.print(
        f"[bold]{kind}[/]: {t['masked']:,} of {t['numel']:,} entries ({100 * (t['masked_frac'] or 0):.3f}%) "
        f"masked by {which}; {t['from_tuned']:,} from TUNED, {t['from_base']:,} from BASE; wrote {out}",
        highlight=False,
        soft_wrap=True,
    )
    if res.absent_from_mask:
        side = "BASE" if kind == "patch" else "TUNED"
        console.print(
            f"[yellow]{len(res.absent_from_mask)} tensor(s) not in the mask, taken whole from {side}, "
            f"e.g. {res.absent_from_mask[0]}[/]",
            highlight=False,
            soft_wrap=True,
        )


_SURGERY_MASK = typer.Option(..., "--mask", "-m", help="Mask file or diff dir (with mask.safetensors).")
_SURGERY_OUT = typer.Option(..., "-o", "--out", help="Output model folder.")
_SURGERY_CONTROL = typer.Option(None, "--control", help="random: a seeded random mask with the same per-tensor counts.")
_SURGERY_SEED = typer.Option(0, "--seed", help="Seed of --control random.")


@surgery_app.command("patch")
def surgery_patch(
    base: Path = typer.Argument(..., help="Base checkpoint."),
    tuned: Path = typer.Argument(..., help="Tuned checkpoint."),
    mask: Path = _SURGERY_MASK,
    out: Path = _SURGERY_OUT,
    control: str | None = _SURGERY_CONTROL,
    seed: int = _SURGERY_SEED,
) -> None:
    """BASE plus TUNED's update on the masked entries only: is the subnetwork sufficient?"""
    _surgery("patch", base, tuned, mask, out, control, seed)


@surgery_app.command("revert")
def surgery_revert(
    base: Path = typer.Argument(..., help="Base checkpoint."),
    tuned: Path = typer.Argument(..., help="Tuned checkpoint."),
    mask: Path = _SURGERY_MASK,
    out: Path = _SURGERY_OUT,
    control: str | None = _SURGERY_CONTROL,
    seed: int = _SURGERY_SEED,
) -> None:
    """TUNED with the masked entries reset to BASE: is the subnetwork necessary?"""
    _surgery("revert", base, tuned, mask, out, control, seed)
