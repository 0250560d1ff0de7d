"""PNG plots of a study, drawn from its exported tables (pandas DataFrames in, PNG bytes out)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from rldelta.columns import is_missing
from rldelta.plots.common import plt, png, short
from rldelta.plots.explain import rank_null_plot
from rldelta.plots.overlap import overlap_heatmap


def _num(x) -> float:
    return float("nan") if is_missing(x) else float(x)


def layer_module_heatmap(tensors: pd.DataFrame, run: str) -> bytes:
    """Changed fraction of each (module, layer) of one run; tensors outside the blocks in the last column."""
    df = tensors[tensors["run"] == run].copy()
    df["col"] = df["layer"].map(lambda v: "other" if is_missing(v) else str(int(v)))
    layers = sorted({c for c in df["col"] if c != "other"}, key=int) + (
        ["other"] if (df["col"] == "other").any() else []
    )
    mods = sorted(df["module"].unique())
    m = np.full((len(mods), len(layers)), np.nan)
    for row in df.itertuples():
        m[mods.index(row.module), layers.index(row.col)] = row.changed_frac
    fig, ax = plt.subplots(figsize=(max(5.0, 0.5 * len(layers) + 3.5), 0.35 * len(mods) + 1.8))
    im = ax.imshow(m, aspect="auto", cmap="magma", vmin=0, vmax=max(1e-9, float(np.nanmax(m)) if m.size else 1))
    ax.set_xticks(range(len(layers)), layers, fontsize=7, rotation=90 if len(layers) > 20 else 0)
    ax.set_yticks(range(len(mods)), mods, fontsize=8)
    ax.set_xlabel("layer")
    ax.set_title(f"changed fraction (bitwise bf16) per layer and module — {run}", fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return png(fig)


def rank_per_module(modules: pd.DataFrame, run: str) -> bytes:
    """Observed rank fraction per module of one run next to the random-sparse null (plots.explain.rank_null_plot)."""
    df = modules[(modules["run"] == run) & modules["mean_rank_frac"].notna()]
    return rank_null_plot(
        list(df["module"]), [_num(v) for v in df["mean_rank_frac"]], [_num(v) for v in df["null_rank_frac"]]
    )


def overlap_matrix(overlap: pd.DataFrame) -> bytes:
    """Heat map of the one-sided overlap of every pair of final changed sets (plots.overlap.overlap_heatmap)."""
    labels = list(dict.fromkeys(list(overlap["a"]) + list(overlap["b"])))
    k = len(labels)
    obs = [[1.0 if i == j else math.nan for j in range(k)] for i in range(k)]
    rnd = [[1.0 if i == j else math.nan for j in range(k)] for i in range(k)]
    for row in overlap.itertuples():
        i, j = labels.index(row.a), labels.index(row.b)
        obs[i][j], rnd[i][j] = _num(row.overlap), _num(row.random_overlap)
    return overlap_heatmap(labels, obs, rnd)


def decile_lines(deciles: pd.DataFrame) -> bytes:
    """Changed fraction per global |w| decile, per run: bf16 (solid) and fp32 master (dashed)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (run, df) in enumerate(deciles.groupby("run", sort=False)):
        c = f"C{i % 10}"
        ax.plot(df["decile"], [_num(v) for v in df["changed_frac"]], "-o", color=c, lw=1.8, ms=3, label=f"{run} bf16")
        if df["fp32_changed_frac"].notna().any():
            ax.plot(
                df["decile"],
                [_num(v) for v in df["fp32_changed_frac"]],
                "--",
                color=c,
                lw=1.2,
                label=f"{run} fp32 master",
            )
    ax.set_xlabel("|w| decile (1 = smallest weights)")
    ax.set_ylabel("changed fraction")
    ax.set_xticks(range(1, 11))
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("changed fraction by weight magnitude")
    return png(fig)


def dynamics(dyn: pd.DataFrame) -> bytes:
    """Changed fraction, rank fraction and overlap with the final changed set at every saved step, per run."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    panels = (
        ("changed_frac", "changed fraction (bf16)"),
        ("mean_rank_frac", "mean rank / max rank"),
        ("still_changed_at_end", "share still changed at the end"),
    )
    for i, (run, df) in enumerate(dyn.groupby("run", sort=False)):
        for ax, (col, title) in zip(axes, panels):
            ax.plot(df["step"], [_num(v) for v in df[col]], "-o", color=f"C{i % 10}", ms=4, label=short(run, 24))
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("step")
    for ax in axes:
        ax.set_ylim(0, 1.05)
    axes[0].legend(fontsize=7)
    return png(fig)


def step_dynamics(steps: pd.DataFrame) -> bytes:
    """Every optimizer step, per run: the changed fraction (since the previous step, since the base), the overlap of
    each step's set with the previous step's and with the union so far, the share of the final set reached
    (saturation), and the per-step changed fraction against the learning rate."""
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    for i, (run, df) in enumerate(steps.groupby("run", sort=False)):
        c, label = f"C{i % 10}", short(run, 24)
        axes[0].plot(df["step"], df["changed_step_frac"], "-", color=c, label=f"{label}: since previous step")
        axes[0].plot(df["step"], df["changed_base_frac"], "--", color=c, label=f"{label}: since base")
        axes[1].plot(df["step"], df["overlap_prev_step"], "-", color=c, label=f"{label}: previous step's set")
        axes[1].plot(df["step"], df["overlap_union"], "--", color=c, label=f"{label}: union so far")
        axes[2].plot(df["step"], df["share_of_final_set"], "-", color=c, label=label)
        axes[3].plot(df["learning_rate"], df["changed_step_frac"], "o", color=c, ms=3, label=label)
    titles = (
        "changed fraction (bf16)",
        "overlap of a step's set with ...",
        "share of the final set reached",
        "per-step changed fraction vs learning rate",
    )
    for ax, title in zip(axes, titles):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
    axes[3].set_xlabel("learning rate")
    axes[2].axhline(0.9, color="grey", lw=0.8, ls=":")
    for ax in axes[1:3]:
        ax.set_ylim(0, 1.05)
    axes[0].legend(fontsize=6)
    axes[1].legend(fontsize=6)
    return png(fig)


def accuracy_curves(curves: pd.DataFrame, accuracy: pd.DataFrame, surgery: pd.DataFrame) -> bytes:
    """Training accuracy per step per run, and greedy test accuracy of every model the study scored."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 4), gridspec_kw={"width_ratios": [1, 1.3]})
    for i, (run, df) in enumerate(curves.groupby("run", sort=False)):
        ax.plot(
            df["step"], [_num(v) for v in df["train_accuracy"]], "-", color=f"C{i % 10}", lw=1.5, label=short(run, 24)
        )
    ax.set_xlabel("step")
    ax.set_ylabel("accuracy on the training batch")
    ax.set_title("training curves", fontsize=10)
    if len(curves):
        ax.legend(fontsize=7)
    names = list(accuracy["model"])
    vals = [_num(v) for v in accuracy["accuracy"]]
    colors = ["C7"] + ["C0" if k == "grid" else "C2" for k in accuracy["kind"][1:]]
    for row in surgery.itertuples():
        ctl = "" if row.control == "none" else f" ({row.control})"
        names.append(f"{row.kind} {row.target}{ctl}")
        vals.append(_num(row.accuracy))
        colors.append("C1" if row.control == "none" else "C8")
    y = np.arange(len(names))
    bx.barh(y, vals, color=colors)
    for yi, v in zip(y, vals):
        if not math.isnan(v):
            bx.text(v, yi, f" {v:.3f}", va="center", fontsize=7)
    bx.set_yticks(y, [short(n, 40) for n in names], fontsize=7)
    bx.invert_yaxis()
    bx.set_xlabel("greedy test accuracy")
    bx.set_title("base, RL runs, surgery (orange: subnetwork, grey: random) and retrain (green)", fontsize=9)
    return png(fig)


def law_steps(steps: pd.DataFrame) -> bytes:
    """Per run: the changed fraction since the base and the one of each step, measured (dots) and predicted by the
    law (line); the calibration steps of the calibration run hollow."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    for i, (run, df) in enumerate(steps.groupby("run", sort=False)):
        c, label, held = f"C{i % 10}", short(run, 24), df["held_out"].astype(bool)
        for ax, meas, pred in (
            (axes[0], "changed_base_frac", "law_base_frac"),
            (axes[1], "changed_step_frac", "law_step_frac"),
        ):
            ax.plot(df["step"][held], df[meas][held], "o", color=c, ms=3, label=f"{label}: measured")
            if (~held).any():
                ax.plot(
                    df["step"][~held], df[meas][~held], "o", color=c, ms=4, mfc="none", label=f"{label}: calibration"
                )
            ax.plot(df["step"], df[pred], "-", color=c, label=f"{label}: law")
    axes[0].set_title("changed since the base (bf16, bitwise)", fontsize=10)
    axes[1].set_title("changed by the step itself", fontsize=10)
    for ax in axes:
        ax.set_xlabel("step")
    axes[0].legend(fontsize=6)
    return png(fig)
