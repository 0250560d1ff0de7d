"""The mixture-of-experts figure: a layer x expert heat map of the changed fraction for each run, and the routers'
changed fraction per layer beside them (tables in, PNG bytes out)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rldelta.plots.common import plt, png, short


def expert_heatmaps(experts: pd.DataFrame, routers: pd.DataFrame) -> bytes:
    """One panel per run: rows are layers, columns experts, colour the expert's changed fraction (one colour scale
    for all panels); the last panel the router's changed fraction per layer, one bar per run and router module."""
    runs = list(dict.fromkeys(experts["run"]))
    layers = sorted(experts["layer"].unique())
    n_experts = int(experts["expert"].max()) + 1
    vmax = max(1e-9, float(experts["changed_frac"].max()))
    fig, axes = plt.subplots(
        1,
        len(runs) + 1,
        figsize=(3.2 * len(runs) + 3.6, 0.45 * len(layers) + 2.2),
        gridspec_kw={"width_ratios": [1] * len(runs) + [0.9]},
        squeeze=False,
    )
    im = None
    for ax, run in zip(axes[0], runs):
        m = np.full((len(layers), n_experts), np.nan)
        for row in experts[experts["run"] == run].itertuples():
            m[layers.index(row.layer), int(row.expert)] = row.changed_frac
        im = ax.imshow(m, aspect="auto", cmap="magma", vmin=0, vmax=vmax)
        ax.set_xticks(range(n_experts), [str(e) for e in range(n_experts)], fontsize=7)
        ax.set_yticks(range(len(layers)), [str(v) for v in layers], fontsize=7)
        ax.set_xlabel("expert")
        ax.set_ylabel("layer")
        ax.set_title(short(run), fontsize=9)
    if im is not None:
        fig.colorbar(im, ax=axes[0][: len(runs)].tolist(), shrink=0.8, label="changed fraction")
    ax = axes[0][-1]
    groups = list(routers.groupby(["run", "module"], sort=False))
    height = 0.8 / max(1, len(groups))
    for k, ((run, module), sub) in enumerate(groups):
        sub = sub.sort_values("layer")
        ys = [layers.index(v) - 0.4 + (k + 0.5) * height for v in sub["layer"]]
        ax.barh(ys, sub["changed_frac"], height=height, label=f"{short(run, 18)} {module}")
    ax.set_ylim(len(layers) - 0.5, -0.5)  # layer 0 on top, as in the heat maps
    ax.set_yticks(range(len(layers)), [str(v) for v in layers], fontsize=7)
    ax.set_xlabel("router changed fraction")
    ax.set_title("routers", fontsize=9)
    ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.25))
    return png(fig)
