"""PNG plots of the log-probability probe (DataFrames in, PNG bytes out)."""

from __future__ import annotations

import pandas as pd

from rldelta.plots.common import plt, png

_STYLE = {"all": "-", "positive": "--", "negative": ":"}


def logprob_curves(df: pd.DataFrame) -> bytes:
    """Left: amplification (rise of log p(correct)) and suppression (fall of log p(wrong)) per saved step, per run.
    Right: the policy's mean entropy on the probe set."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for run, sub in df.groupby("run", sort=False):
        ls = _STYLE.get(run, "-.")
        ax.plot(sub["step"], sub["amplification"], ls, color="C2", marker="o", ms=3, label=f"amplification ({run})")
        ax.plot(sub["step"], sub["suppression"], ls, color="C3", marker="s", ms=3, label=f"suppression ({run})")
        ax2.plot(sub["step"], sub["probe_entropy"], ls, color="C0", marker="o", ms=3, label=run)
    ax.axhline(0, color="#999", lw=0.8)
    ax.set_xlabel("training step")
    ax.set_ylabel("nats per completion, vs base")
    ax.set_title("Δ log p(correct) ↑ = amplification;  −Δ log p(wrong) ↑ = suppression", fontsize=9)
    ax.legend(fontsize=7)
    ax2.set_xlabel("training step")
    ax2.set_ylabel("nats per token")
    ax2.set_title("policy entropy on the probe completions", fontsize=9)
    ax2.legend(fontsize=7)
    return png(fig)


def pass_at_k_curves(adv: pd.DataFrame) -> bytes:
    """pass@k against k for the base, the full run and the positive-/negative-advantage runs."""
    cols = sorted((c for c in adv.columns if c.startswith("pass@")), key=lambda c: int(c[5:]))
    ks = [int(c[5:]) for c in cols]
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    for i, rec in enumerate(adv.to_dict("records")):
        ax.plot(
            ks, [rec[c] for c in cols], _STYLE.get(rec["run"], "-"), marker="o", ms=3, color=f"C{i}", label=rec["run"]
        )
    ax.set_xlabel("k")
    ax.set_ylabel("pass@k (unbiased, from n samples)")
    ax.set_xticks(ks)
    ax.set_title("pass@k of the final checkpoints", fontsize=9)
    ax.legend(fontsize=8)
    return png(fig)
