"""PNG plots for `rldelta overlap` and `rldelta explain`. Each function returns the PNG bytes; callers write them."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _short(label: str, width: int = 28) -> str:
    return label if len(label) <= width else "…" + label[-(width - 1) :]


def _nan(x) -> float:
    return float("nan") if x is None else float(x)


def overlap_heatmap(
    labels: Sequence[str], overlap: Sequence[Sequence[float]], random: Sequence[Sequence[float]]
) -> bytes:
    """Observed one-sided overlap o(row→col) beside the overlap expected by chance."""
    k = len(labels)
    obs = np.array([[_nan(v) for v in row] for row in overlap])
    rnd = np.array([[_nan(v) for v in row] for row in random])
    size = 1.2 + 0.7 * k
    # Shared rows: labels only on the left panel, so long run names cannot run into the left heat-map.
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 2.5, size + 1), sharey=True, layout="constrained")
    axes[0].set_yticks(range(k), [_short(x) for x in labels])
    axes[0].set_ylabel("A")
    for ax, m, title in ((axes[0], obs, "observed |A∩B|/|A|"), (axes[1], rnd, "random expectation")):
        im = ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
        ax.set_title(title)
        ax.set_xticks(range(k), [_short(x) for x in labels], rotation=45, ha="right")
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
    return _png(fig)


def decile_plot(overall: Sequence[float], by_module: dict[str, Sequence[float]]) -> bytes:
    """Changed fraction per |w| decile (smallest first), overall and per module kind."""
    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(1, len(overall) + 1)
    for mod, vals in sorted(by_module.items()):
        ax.plot(x, [_nan(v) for v in vals], lw=1, alpha=0.6, label=mod)
    ax.plot(x, [_nan(v) for v in overall], "k-o", lw=2.5, label="all")
    ax.set_xlabel("|w| decile (1 = smallest)")
    ax.set_ylabel("changed fraction")
    ax.set_xticks(x)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("changed fraction by weight magnitude")
    return _png(fig)


def roc_plot(fpr: np.ndarray, tpr: np.ndarray, auc: float) -> bytes:
    """ROC of −|w| as predictor of the changed set."""
    if len(fpr) > 4000:  # thin the curve for plotting only
        idx = np.unique(np.linspace(0, len(fpr) - 1, 4000).astype(int))
        fpr, tpr = fpr[idx], tpr[idx]
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(fpr, tpr, lw=2, label=f"−|w|, AUC = {auc:.3f}")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="chance")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("do the smallest weights change?")
    ax.legend(loc="lower right")
    return _png(fig)


def overlap_null_plot(observed: float, random: float, matched: float, labels: tuple[str, str]) -> bytes:
    """Observed overlap next to its random and magnitude-matched expectations."""
    fig, ax = plt.subplots(figsize=(5, 4))
    vals = [_nan(observed), _nan(random), _nan(matched)]
    ax.bar(["observed", "random\n(same density)", "magnitude-\nmatched"], vals, color=["C0", "C7", "C1"])
    for i, v in enumerate(vals):
        if not math.isnan(v):
            ax.text(i, v, f"{v:.3f}", ha="center", va="bottom")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("one-sided overlap |A∩B|/|A|")
    ax.set_title(f"{_short(labels[0], 20)} → {_short(labels[1], 20)}", fontsize=9)
    return _png(fig)


def rank_null_plot(modules: Sequence[str], observed: Sequence[float | None], null: Sequence[float | None]) -> bytes:
    """Observed rank fraction of Δ per module kind vs that of random sparse matrices of the same density."""
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(modules) + 2), 4))
    x = np.arange(len(modules))
    ax.bar(x - 0.2, [_nan(v) for v in observed], 0.4, label="observed Δ")
    ax.bar(x + 0.2, [_nan(v) for v in null], 0.4, label="random sparse, same density")
    ax.set_xticks(x, modules, rotation=45, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("rank / max rank")
    ax.legend(fontsize=8)
    ax.set_title("sparse yet full rank: is it just the density?")
    return _png(fig)
