"""PNG plot for `rldelta overlap`: the overlap matrix of changed sets. Returns the PNG bytes; callers write them."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from rldelta.plots.common import num, plt, png, short


def overlap_heatmap(
    labels: Sequence[str], overlap: Sequence[Sequence[float]], random: Sequence[Sequence[float]]
) -> bytes:
    """Observed one-sided overlap o(row→col) beside the overlap expected by chance."""
    k = len(labels)
    obs = np.array([[num(v) for v in row] for row in overlap])
    rnd = np.array([[num(v) for v in row] for row in random])
    size = 1.2 + 0.7 * k
    # Shared rows: labels only on the left panel, so long run names cannot run into the left heat-map.
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 2.5, size + 1), sharey=True, layout="constrained")
    axes[0].set_yticks(range(k), [short(x) for x in labels])
    axes[0].set_ylabel("A")
    for ax, m, title in ((axes[0], obs, "observed |A∩B|/|A|"), (axes[1], rnd, "random expectation")):
        im = ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
        ax.set_title(title)
        ax.set_xticks(range(k), [short(x) for x in labels], rotation=45, ha="right")
        ax.set_xlabel("B")
        for i in range(k):
            for j in range(k):
                if not math.isnan(m[i, j]):
                    ax.text(
                        j,
                        i,
                        f"{m[i, j]:.2f}",
                        ha="center",
                        va="center",
                        color="white" if m[i, j] < 0.6 else "black",
                        fontsize=8,
                    )
    fig.colorbar(im, ax=list(axes), shrink=0.8)
    return png(fig)
