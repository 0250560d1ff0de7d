"""PNG plot for `rldelta probe formats`: the share of each output format per RL step. Returns the PNG bytes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rldelta.plots.common import plt, png

# Fixed colours per format, so runs compared side by side read the same.
_COLOURS = {"code": "tab:blue", "plain": "tab:orange", "boxed": "tab:green", "other": "0.75"}


def format_shares_plot(
    steps: Sequence[int],
    shares: dict[str, Sequence[float]],
    *,
    threshold: float | None = None,
    dominance_step: int | None = None,
    pretrain_shares: dict[str, float] | None = None,
    title: str = "format shares during RL",
) -> bytes:
    """Stacked areas of each format's share of the sampled completions per step; the dominance threshold and step
    as dashed lines, and the pretraining corpus shares as a bar at step 0 when given."""
    fig, ax = plt.subplots(figsize=(7, 4))
    names = list(shares)
    x = np.asarray(steps, dtype=float)
    ys = np.array([np.asarray(shares[n], dtype=float) for n in names])
    colours = [_COLOURS.get(n) for n in names]
    width = max(0.6, 0.03 * (float(x.max()) if len(x) else 1.0))  # bars stay visible over hundreds of steps
    if len(x) == 1:  # a single step draws no area: show it as a stacked bar
        bottom = 0.0
        for n, y, c in zip(names, ys[:, 0], colours):
            ax.bar(x[0], y, bottom=bottom, width=width, color=c, label=n)
            bottom += y
    else:
        ax.stackplot(x, ys, labels=names, colors=colours, alpha=0.85)
    if pretrain_shares:
        bottom = 0.0
        for n, c in zip(names, colours):
            v = float(pretrain_shares.get(n) or 0.0)
            ax.bar(0, v, bottom=bottom, width=width, color=c, edgecolor="k", lw=0.5)
            bottom += v
        ax.annotate("corpus", (0, 1.0), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=7)
    if threshold is not None:
        ax.axhline(threshold, color="k", ls="--", lw=1)
    if dominance_step is not None:
        ax.axvline(dominance_step, color="k", ls=":", lw=1.5, label=f"dominant from step {dominance_step}")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("RL step")
    ax.set_ylabel("share of sampled completions")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return png(fig)
