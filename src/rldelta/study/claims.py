"""The headline numbers and the verdict on each published claim: pure functions of the study's tables, with the
thresholds of the verdict rules named below."""

from __future__ import annotations

import math

import pandas as pd

from rldelta.study.config import StudyConfig
from rldelta.study.layout import Run

# "RL updates only 5–30% of the parameters": the published range of the changed fraction.
SPARSITY_LOW, SPARSITY_HIGH = 0.05, 0.30
# Mean rank / max rank of Δ from which the update counts as full rank, and as partly so.
FULL_RANK, PARTLY_FULL_RANK = 0.99, 0.9
# Closer than this to the random sparse matrices' rank fraction: the rank follows from the sparsity alone.
RANK_NULL_MARGIN = 0.01
# Seed overlap above the random one by more than this reproduces; within this of the magnitude-matched one, |w|
# explains it.
OVERLAP_MARGIN = 0.01
# Share of the accuracy RL gained that the subnetwork patch must recover.
RECOVERED = 0.9
# Accuracy differences within this many test problems are noise (also: RL "barely moved" accuracy).
NOISE_PROBLEMS = 2
# The retrain matches the full run's accuracy within max(this, NOISE_PROBLEMS / eval_n) ...
RETRAIN_ACCURACY_TOLERANCE = 0.02
# ... and its Δ points the same way when their cosine is at least this.
RETRAIN_COSINE = 0.9


def mean(xs: list) -> float | None:
    """The mean of the values that are neither None nor NaN; None when none is left."""
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return sum(xs) / len(xs) if xs else None


def recovery(acc: float, base: float, tuned: float) -> float | None:
    """(acc − base) / (tuned − base): 1 = all of the accuracy RL gained; undefined when it gained nothing."""
    gain = tuned - base
    return (acc - base) / gain if abs(gain) > 1e-12 else None


def headline_and_claims(
    cfg: StudyConfig, t: dict[str, pd.DataFrame], runs: list[Run]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The headline table (key, label, value, format) and the claims table (one verdict per published claim)."""
    h = _headline(cfg, t, runs)
    head = pd.DataFrame([{"key": k, "label": lab, "value": v, "format": f} for k, lab, v, f in h])
    return head, _claims(cfg, {k: v for k, _, v, _ in h})


def _headline(cfg: StudyConfig, t: dict[str, pd.DataFrame], runs: list[Run]) -> list[tuple]:
    """(key, label, value, format) of every headline number, from the tables `t`."""
    grid = t["runs"][t["runs"]["kind"] == "grid"]
    ov = t["overlap"]
    seeds = ov[ov["kind"] == "seed"]
    sur = t["surgery"]
    ret = t["retrain"].to_dict("records")[0] if len(t["retrain"]) else {}
    mods = t["modules"][t["modules"]["run"].isin(grid["run"])]
    primary = runs[0].label
    others = [
        r.label for r in runs if r.algo == runs[0].algo and r.precision == runs[0].precision and r.label != primary
    ]
    cross = sur[sur["target"].isin(others)] if others else sur

    def sur_acc(kind: str, control: str) -> float | None:
        sub = cross[(cross["kind"] == kind) & (cross["control"].str.startswith(control))]
        return mean(sub["accuracy"].tolist()) if len(sub) else None

    def colmean(df, col) -> float | None:
        return mean(df[col].tolist()) if col in df and len(df) else None

    h = [
        ("changed_frac", "changed fraction, bitwise in bf16 (mean over runs)", colmean(grid, "changed_frac"), "pct"),
        (
            "changed_atol_frac",
            f"changed fraction, |Δ| > {cfg.atol:g} (mean over runs)",
            colmean(grid, "changed_atol_frac"),
            "pct",
        ),
        (
            "fp32_changed_frac",
            "changed fraction of the fp32 master weights (mean over fp32 runs)",
            colmean(grid, "fp32_changed_frac"),
            "pct",
        ),
        (
            "lost_to_rounding_frac",
            "share of fp32 updates lost when rounding to bf16",
            colmean(grid, "lost_to_rounding_frac"),
            "pct",
        ),
        (
            "mean_rank_frac",
            "rank / max rank of Δ, mean over 2-D tensors and runs",
            colmean(grid, "mean_rank_frac"),
            "num",
        ),
        (
            "null_rank_frac",
            "same for random sparse matrices of the same density",
            colmean(mods, "null_rank_frac"),
            "num",
        ),
        ("seed_overlap", "seed overlap |A∩B|/|A| (mean over seed pairs)", colmean(seeds, "overlap"), "pct"),
        (
            "seed_overlap_random",
            "… expected at random (same per-tensor density)",
            colmean(seeds, "random_overlap"),
            "pct",
        ),
        (
            "seed_overlap_matched",
            "… expected at random within |w| bins (magnitude-matched)",
            colmean(seeds, "magnitude_matched_overlap"),
            "pct",
        ),
        (
            "algorithm_overlap",
            "overlap between algorithms (mean)",
            colmean(ov[ov["kind"] == "algorithm"], "overlap"),
            "pct",
        ),
        (
            "precision_overlap",
            "overlap between bf16- and fp32-trained runs (mean)",
            colmean(ov[ov["kind"] == "precision"], "overlap"),
            "pct",
        ),
        ("base_accuracy", "base accuracy", t["accuracy"]["accuracy"].iloc[0], "acc"),
        ("tuned_accuracy", "RL-tuned accuracy (mean over runs)", colmean(grid, "accuracy"), "acc"),
        ("patch_accuracy", "base + other seed's update on the seed-1 subnetwork", sur_acc("patch", "none"), "acc"),
        ("patch_random_accuracy", "… on a random mask of the same size", sur_acc("patch", "random"), "acc"),
        (
            "revert_accuracy",
            "other seed's model with the seed-1 subnetwork reset to base",
            sur_acc("revert", "none"),
            "acc",
        ),
        ("revert_random_accuracy", "… with a random mask of the same size reset", sur_acc("revert", "random"), "acc"),
        ("retrain_accuracy", "subnetwork-only retraining accuracy", ret.get("accuracy_retrain"), "acc"),
        ("retrain_full_accuracy", "the full run it retrains", ret.get("accuracy_full"), "acc"),
        (
            "retrain_coverage",
            "share of the full run's changed entries the retrain also changed",
            ret.get("full_covered_by_retrain"),
            "pct",
        ),
        ("retrain_cosine", "cosine of the retrain's Δ and the full run's Δ", ret.get("delta_cosine"), "num"),
    ]
    return h


def _claims(cfg: StudyConfig, num: dict) -> pd.DataFrame:
    """One row per published claim: its verdict from the headline numbers `num` (by key), and the text."""
    # Verdict texts are templates: {key} is the headline number of that key, so the report shows the table's value.
    claims = []

    def claim(name: str, published: str, key: str, verdict: str, text: str) -> None:
        claims.append(
            {"claim": name, "published": published, "key": key, "value": num.get(key), "verdict": verdict, "text": text}
        )

    sparsity = "RL updates only 5–30% of the parameters"
    cf = num["changed_frac"]
    if cf is None:
        claim("sparsity", sparsity, "changed_frac", "not measured", "No run finished.")
    elif SPARSITY_LOW <= cf <= SPARSITY_HIGH:
        claim(
            "sparsity",
            sparsity,
            "changed_frac",
            "reproduces",
            "RL changed {changed_frac} of the entries (bitwise in bf16), inside the published 5–30%.",
        )
    else:
        side = "sparser" if cf < SPARSITY_LOW else "denser"
        claim(
            "sparsity",
            sparsity,
            "changed_frac",
            f"does not reproduce ({side})",
            "RL changed {changed_frac} of the entries (bitwise in bf16; {changed_atol_frac} with |Δ| > atol), "
            f"{'below' if cf < SPARSITY_LOW else 'above'} the published 5–30%.",
        )

    full_rank = "each update matrix is nearly full rank (>99%)"
    rk, nr = num["mean_rank_frac"], num["null_rank_frac"]
    if rk is None:
        claim("full rank", full_rank, "mean_rank_frac", "not measured", "No 2-D tensor changed.")
    else:
        v = "reproduces" if rk >= FULL_RANK else ("partly" if rk >= PARTLY_FULL_RANK else "does not reproduce")
        text = "Mean rank / max rank of Δ is {mean_rank_frac}"
        if nr is not None:
            text += "; random sparse matrices of the same density reach {null_rank_frac}"
            if nr >= rk - RANK_NULL_MARGIN:
                text += ", so the rank follows from the sparsity alone"
        claim("full rank", full_rank, "mean_rank_frac", v, text + ".")

    consistency = "different seeds update nearly the same entries"
    so, sr, sm = num["seed_overlap"], num["seed_overlap_random"], num["seed_overlap_matched"]
    if so is None:
        claim("seed consistency", consistency, "seed_overlap", "not measured", "Needs two or more seeds.")
    else:
        above = sr is not None and so > sr + OVERLAP_MARGIN
        explained = sm is not None and so <= sm + OVERLAP_MARGIN
        v = "reproduces, explained by |w|" if above and explained else ("reproduces" if above else "does not reproduce")
        text = "Seeds overlap by {seed_overlap}, vs {seed_overlap_random} at random"
        if sm is not None:
            text += " and {seed_overlap_matched} for random sets with the same |w| profile"
        text += "." + (" Weight magnitude alone predicts that much overlap." if explained else "")
        claim("seed consistency", consistency, "seed_overlap", v, text)

    sufficiency = "the update on the subnetwork alone recovers the tuned accuracy"
    pa_, tuned, b = num["patch_accuracy"], num["tuned_accuracy"], num["base_accuracy"]
    if pa_ is None:
        claim("subnetwork sufficiency", sufficiency, "patch_accuracy", "not measured", "Needs two or more seeds.")
    else:
        text = (
            "Base + the other seed's update on the seed-1 subnetwork scores {patch_accuracy} "
            "(random mask {patch_random_accuracy}) vs {tuned_accuracy} tuned and {base_accuracy} base"
        )
        if abs(tuned - b) < NOISE_PROBLEMS / cfg.eval_n:
            claim(
                "subnetwork sufficiency",
                sufficiency,
                "patch_accuracy",
                "inconclusive",
                text + ": RL barely moved accuracy, so there is nothing to recover.",
            )
        else:
            rec = recovery(pa_, b, tuned)
            claim(
                "subnetwork sufficiency",
                sufficiency,
                "patch_accuracy",
                "reproduces" if rec is not None and rec >= RECOVERED else "does not reproduce",
                text + ".",
            )

    subnet = "training only the subnetwork recovers the full run's accuracy and parameters"
    ra, fa, cos = num["retrain_accuracy"], num["retrain_full_accuracy"], num["retrain_cosine"]
    if ra is None:
        claim("subnetwork-only training", subnet, "retrain_accuracy", "not measured", "Retraining is off.")
    else:
        close = abs(ra - fa) <= max(RETRAIN_ACCURACY_TOLERANCE, NOISE_PROBLEMS / cfg.eval_n)
        same = cos is not None and cos >= RETRAIN_COSINE
        claim(
            "subnetwork-only training",
            subnet,
            "retrain_accuracy",
            "reproduces" if close and same else ("partly" if close or same else "does not reproduce"),
            "Retrained on the subnetwork only: {retrain_accuracy} vs {retrain_full_accuracy} for the full run; "
            "cosine of the two Δs {retrain_cosine}; it changed {retrain_coverage} of the full run's changed entries.",
        )
    return pd.DataFrame(claims)
