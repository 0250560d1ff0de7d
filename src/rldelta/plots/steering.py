"""PNG plots of the steering sweeps ("Selection or creation?"): the chosen format's share per intervention beside
RL's share over its steps, and each intervention's compute against the share it reached. Return the PNG bytes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rldelta.plots.common import plt, png

# One colour and marker per intervention method, RL in black.
_STYLE = {
    "prompt": ("tab:purple", "s"),
    "activation": ("tab:cyan", "^"),
    "sft": ("tab:red", "o"),
    "rl": ("k", "*"),
}


def _style(method: str) -> tuple[str, str]:
    return _STYLE.get(method, ("0.5", "x"))


def share_over_steps_plot(
    steps: Sequence[int],
    rl_share: Sequence[float],
    rows: Sequence[Mapping[str, Any]],
    *,
    target: str,
    title: str,
) -> bytes:
    """RL's share of `target` at every RL step (line), and each intervention's share (`rows`: steering rows, the
    RL row left out) as a level with its 95% interval band, named in the legend with its method and setting."""
    fig, ax = plt.subplots(figsize=(9, 4.2))
    ax.plot(steps, rl_share, color="k", lw=1.8, label="RL (GRPO), share at each step")
    end = float(max(steps)) if len(steps) else 1.0
    dashes = {"prompt": (0, (5, 2)), "activation": (0, (2, 2)), "sft": (0, (6, 2, 1, 2))}
    for r in rows:
        if r["method"] == "rl":
            continue
        colour, _ = _style(r["method"])
        ls = dashes.get(r["method"], "--")
        label = f"{r['method']}: {r['setting']} ({r['share']:.2f})"
        ax.plot([0, end], [r["share"], r["share"]], color=colour, ls=ls, lw=1.2, alpha=0.9, label=label)
        ax.fill_between([0, end], r["share_low"], r["share_high"], color=colour, alpha=0.05)
    if rows:
        base = rows[0]["baseline_share"]
        ax.axhline(base, color="0.5", ls=":", lw=1.2, label=f"no intervention ({base:.2f})")
    ax.set_xlim(0, end)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("RL step")
    ax.set_ylabel(f"share of completions in {target}")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return png(fig)


def compute_share_plot(
    rows: Sequence[Mapping[str, Any]],
    *,
    target: str,
    rl_curve: tuple[Sequence[float], Sequence[float]] | None = None,
    title: str,
) -> bytes:
    """Each intervention's FLOPs (log scale) against the share of `target` it reached, with 95% intervals; RL's
    share over its steps as a curve at the FLOPs spent up to each step (`rl_curve`: FLOPs, shares)."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    flops = [float(r["flops"]) for r in rows if r["flops"]]
    floor = min(flops) / 10 if flops else 1.0  # an intervention that costs nothing is drawn at the axis's left edge
    if rl_curve is not None and len(rl_curve[0]):
        ax.plot(rl_curve[0], rl_curve[1], color="k", lw=1, alpha=0.6, label="RL over its steps")
    seen: set[str] = set()
    for r in rows:
        colour, marker = _style(r["method"])
        x = max(float(r["flops"] or 0.0), floor)
        err = np.array([[r["share"] - r["share_low"]], [r["share_high"] - r["share"]]])
        ax.errorbar(
            x,
            r["share"],
            yerr=err,
            fmt=marker,
            color=colour,
            ms=9 if r["method"] == "rl" else 6,
            label=None if r["method"] in seen else r["method"],
        )
        seen.add(r["method"])
    if rows:
        ax.axhline(rows[0]["baseline_share"], color="0.5", ls=":", lw=1.2, label="no intervention")
    ax.axhline(0.5, color="0.8", ls="-", lw=0.8)
    ax.set_xscale("log")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("FLOPs spent (forward + backward, log scale)")
    ax.set_ylabel(f"share of completions in {target}")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="best")
    return png(fig)
