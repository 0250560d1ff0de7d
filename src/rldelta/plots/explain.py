"""PNG plots for `rldelta explain`. Each function returns the PNG bytes; callers write them."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from rldelta.plots.common import num, plt, png, short


def decile_plot(overall: Sequence[float], by_module: dict[str, Sequence[float]]) -> bytes:
    """Changed fraction per |w| decile (smallest first), overall and per module kind."""
    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(1, len(overall) + 1)
    for mod, vals in sorted(by_module.items()):
        ax.plot(x, [num(v) for v in vals], lw=1, alpha=0.6, label=mod)
    ax.plot(x, [num(v) for v in overall], "k-o", lw=2.5, label="all")
    ax.set_xlabel("|w| decile (1 = smallest)")
    ax.set_ylabel("changed fraction")
    ax.set_xticks(x)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("changed fraction by weight magnitude")
    return png(fig)


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
    return png(fig)


def overlap_null_plot(observed: float, random: float, matched: float, labels: tuple[str, str]) -> bytes:
    """Observed overlap next to its random and magnitude-matched expectations."""
    fig, ax = plt.subplots(figsize=(5, 4))
    vals = [num(observed), num(random), num(matched)]
    ax.bar(["observed", "random\n(same density)", "magnitude-\nmatched"], vals, color=["C0", "C7", "C1"])
    for i, v in enumerate(vals):
        if not math.isnan(v):
            ax.text(i, v, f"{v:.3f}", ha="center", va="bottom")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("one-sided overlap |A∩B|/|A|")
    ax.set_title(f"{short(labels[0], 20)} → {short(labels[1], 20)}", fontsize=9)
    return png(fig)


def rank_null_plot(modules: Sequence[str], observed: Sequence[float | None], null: Sequence[float | None]) -> bytes:
    """Observed rank fraction of Δ per module kind vs that of random sparse matrices of the same density."""
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(modules) + 2), 4))
    x = np.arange(len(modules))
    ax.bar(x - 0.2, [num(v) for v in observed], 0.4, label="observed Δ")
    ax.bar(x + 0.2, [num(v) for v in null], 0.4, label="random sparse, same density")
    ax.set_xticks(x, modules, rotation=45, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("rank / max rank")
    ax.legend(fontsize=8)
    ax.set_title("sparse yet full rank: is it just the density?")
    return png(fig)
