"""PNG plots for `rldelta probe activations`. Each function takes the probe's tables and returns the PNG bytes."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from rldelta.plots.common import plt, png

_METRIC_LABELS = {
    "near_zero_frac": "near-zero fraction",
    "hoyer": "Hoyer sparsity",
    "top1_mass_share": "L1 share of top 1% units",
}


def sparsity_by_level_plot(table: pd.DataFrame) -> bytes:  # noqa: C901
    """Each metric against level, one line per layer (colour), residual and mlp panels; base solid, tuned dashed.

    Levels beyond the training range are shaded.
    """
    sites = [s for s in ("residual", "mlp") if s in set(table["site"])]
    metrics = list(_METRIC_LABELS)
    layers = sorted(table["layer"].unique())
    cmap = plt.get_cmap("viridis")
    fig, axes = plt.subplots(
        len(metrics),
        len(sites),
        figsize=(5.5 * len(sites), 3.2 * len(metrics)),
        squeeze=False,
        sharex=True,
        layout="constrained",
    )
    beyond = sorted(table.loc[table["beyond_training"], "level"].unique())
    for col, site in enumerate(sites):
        for row, metric in enumerate(metrics):
            ax = axes[row][col]
            if beyond:
                ax.axvspan(
                    beyond[0] - 0.5,
                    beyond[-1] + 0.5,
                    color="0.9",
                    zorder=0,
                    label="beyond training" if row == col == 0 else None,
                )
            for model, style in (("base", "-"), ("tuned", "--")):
                sub = table[(table["site"] == site) & (table["model"] == model)]
                for layer in layers:
                    ln = sub[sub["layer"] == layer].sort_values("level")
                    if ln.empty:
                        continue
                    colour = cmap(layer / max(len(layers) - 1, 1))
                    ax.plot(ln["level"], ln[metric], style, color=colour, lw=1.2, marker="o", ms=2.5)
            ax.set_title(f"{site}: {_METRIC_LABELS[metric]}", fontsize=9)
            if col == 0:
                ax.set_ylabel(_METRIC_LABELS[metric], fontsize=8)
            if row == len(metrics) - 1:
                ax.set_xlabel("level (difficulty)")
    levels = sorted(table["level"].unique())
    for ax in axes[-1]:
        ax.set_xticks(levels)
    handles = [plt.Line2D([], [], color="k", ls="-", label="base")]
    if "tuned" in set(table["model"]):
        handles.append(plt.Line2D([], [], color="k", ls="--", label="tuned"))
    if beyond:
        handles.append(plt.Rectangle((0, 0), 1, 1, color="0.9", label="beyond training"))
    fig.legend(handles=handles, loc="outside upper center", ncol=len(handles), fontsize=8)
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(min(layers), max(layers)))
    fig.colorbar(sm, ax=axes, shrink=0.6, label="layer")
    return png(fig)


def neuron_scatter_plot(neurons: pd.DataFrame, spearman: float) -> bytes:
    """Each MLP neuron's activation frequency (base, on the task) against the fraction of its weights RL changed."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    layers = neurons["layer"].to_numpy()
    sc = ax.scatter(
        neurons["activation_freq"], neurons["changed_frac"], c=layers, cmap="viridis", s=6, alpha=0.6, linewidths=0
    )
    if len(np.unique(layers)) > 1:
        fig.colorbar(sc, ax=ax, label="layer")
    rho = "undefined" if spearman is None or not math.isfinite(spearman) else f"{spearman:+.3f}"
    ax.set_title(f"does RL edit the neurons the task uses?  Spearman {rho}", fontsize=10)
    ax.set_xlabel("activation frequency on the task (base model)")
    ax.set_ylabel("fraction of the neuron's weights changed")
    return png(fig)
