"""The activation probe's summaries and verdicts: sparsity per level and its trend, and whether RL edits the MLP
neurons the task uses (within a layer, with the neuron's |w| held fixed, pooled). Pure functions of the probe's
rows; probes/activations.py measures them."""

from __future__ import annotations

import math

import numpy as np

from rldelta.metrics.activations import correlation
from rldelta.metrics.stats import partial_spearman

SITES = ("residual", "mlp")
METRICS = ("near_zero_frac", "hoyer", "top1_mass_share")
# The verdict names a direction when |Spearman| of activation frequency vs changed fraction reaches both this
# size and VERDICT_SIGMAS null standard errors (1/sqrt(n-1) for independent ranks): with few neurons (a tiny
# model) a 0.1 correlation is chance, with tens of thousands (a real model) the size limit decides.
VERDICT_SPEARMAN = 0.1
VERDICT_SIGMAS = 3.0
# A per-level slope of a sparsity metric (averaged over layers) below this in size counts as flat.
FLAT_SLOPE = 1e-3


def _slope(levels: list[int], values: list[float]) -> float:
    x, y = np.asarray(levels, dtype=np.float64), np.asarray(values, dtype=np.float64)
    ok = np.isfinite(y)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(x[ok], y[ok], 1)[0])


def summary_by_level(rows: list[dict]) -> dict:
    """model -> site -> metric -> {"by_level": {level: mean over layers}, "slope": per level}."""
    out: dict = {}
    for model in sorted({r["model"] for r in rows}):
        for site in SITES:
            sub = [r for r in rows if r["model"] == model and r["site"] == site]
            levels = sorted({r["level"] for r in sub})
            for metric in METRICS:
                means = [float(np.nanmean([r[metric] for r in sub if r["level"] == lv] or [np.nan])) for lv in levels]
                out.setdefault(model, {}).setdefault(site, {})[metric] = {
                    "by_level": dict(zip(map(str, levels), means)),
                    "slope": _slope(levels, means),
                }
    return out


def _trend(slope: float) -> str:
    if not math.isfinite(slope):
        return "is undefined"
    if abs(slope) < FLAT_SLOPE:
        return "is flat"
    return "rises" if slope > 0 else "falls"


def sparsity_verdict(by_level: dict) -> str:
    """One line: do near_zero_frac and Hoyer rise or fall with level (mean over layers), and tuned − base."""
    parts = []
    for metric, label in (("near_zero_frac", "near-zero fraction"), ("hoyer", "Hoyer")):
        b = by_level["base"]
        trends = ", ".join(
            f"{site} {_trend(b[site][metric]['slope'])} ({b[site][metric]['slope']:+.4f}/level)" for site in SITES
        )
        parts.append(f"{label}: {trends}")
    line = "base with difficulty — " + "; ".join(parts)
    if "tuned" in by_level:
        diffs = []
        for metric in ("near_zero_frac", "hoyer"):
            for site in SITES:
                t = by_level["tuned"][site][metric]["by_level"]
                b = by_level["base"][site][metric]["by_level"]
                d = float(np.nanmean([t[k] - b[k] for k in b]))
                diffs.append(f"{metric} {site} {d:+.4f}")
        line += "; tuned − base (mean over layers and levels): " + ", ".join(diffs)
    return line


def verdict_threshold(n: int) -> float:
    """The |Spearman| a verdict needs over `n` neurons: VERDICT_SPEARMAN, or VERDICT_SIGMAS chance sds if larger."""
    return max(VERDICT_SPEARMAN, VERDICT_SIGMAS / math.sqrt(n - 1)) if n > 1 else float("inf")


def neuron_verdict(spearman: float, n: int, where: str = "") -> str:
    """Which neurons RL edited, from the Spearman correlation of activation frequency and changed fraction."""
    if not math.isfinite(spearman):
        return "undetermined (Spearman undefined: activation frequency or changed fraction is constant)"
    limit = verdict_threshold(n)
    rho = f"Spearman {where + ' ' if where else ''}{spearman:+.2f}"
    if spearman >= limit:
        return f"RL edited the neurons the task uses more ({rho}, n={n})"
    if spearman <= -limit:
        return f"RL edited the rarely used neurons more ({rho}, n={n})"
    return f"neither: RL's edits do not follow how often the task uses a neuron ({rho}, n={n}, |rho| < {limit:.2f})"


def neuron_link(neurons: list[dict], n_layers: int) -> tuple[dict, str]:
    """activations.json's correlation and verdict: does RL edit the neurons the task uses?"""
    overall = correlation([r["activation_freq"] for r in neurons], [r["changed_frac"] for r in neurons])
    by_layer = {}
    for layer in range(n_layers):
        sub = [r for r in neurons if r["layer"] == layer]
        by_layer[str(layer)] = correlation([r["activation_freq"] for r in sub], [r["changed_frac"] for r in sub])
    # Pooled over layers, a correlation can come from layers that differ in both quantities; the mean of the
    # per-layer Spearmans (weighted by neurons) is the within-layer reading.
    weighted = [(c["spearman"], c["n"]) for c in by_layer.values() if math.isfinite(c["spearman"])]
    within = sum(r * n for r, n in weighted) / sum(n for _, n in weighted) if weighted else float("nan")
    # Weight magnitude alone decides which bf16 entries change (small |w|, small ULP): the same within-layer
    # reading with each neuron's mean |w| held fixed says what activity adds beyond it.
    partial = []
    for layer in range(n_layers):
        sub = [r for r in neurons if r["layer"] == layer]
        p = partial_spearman(
            [r["activation_freq"] for r in sub], [r["changed_frac"] for r in sub], [r["mean_abs_w"] for r in sub]
        )
        if math.isfinite(p["spearman"]):
            partial.append((p["spearman"], p["n"]))
    controlled = sum(r * n for r, n in partial) / sum(n for _, n in partial) if partial else float("nan")
    correlation_summary = {
        "overall": overall,
        "by_layer": by_layer,
        "mean_within_layer_spearman": within,
        "magnitude_controlled": {
            "spearman": controlled,
            "method": "partial Spearman given the neuron's mean |w| (base), within each layer, mean weighted "
            "by neurons",
        },
        "changed_frac_mean": float(np.mean([r["changed_frac"] for r in neurons])),
        "activation_freq_mean": float(np.nanmean([r["activation_freq"] for r in neurons])),
        "verdict_threshold": verdict_threshold(overall["n"]),
    }
    # The within-layer reading leads: pooled over layers, a layer that is both busier and more edited can make
    # the whole correlation.
    lead = within if math.isfinite(within) else overall["spearman"]
    verdict = neuron_verdict(lead, overall["n"], "within a layer" if math.isfinite(within) else "")
    if math.isfinite(controlled):
        verdict += f"; with mean |w| held fixed (partial Spearman) {controlled:+.2f}"
    verdict += f"; pooled over layers {overall['spearman']:+.2f}"
    return correlation_summary, verdict
