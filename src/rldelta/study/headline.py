"""The headline numbers, each with its 95% interval where one exists, and the claims table: the verdict rules of
study/claims.py applied to them. Pure functions of the study's tables."""

from __future__ import annotations

import math

import pandas as pd

from rldelta.metrics.stats import accuracy_interval, mean_interval
from rldelta.study.claims import (
    Acc,
    cause_rule,
    overlap_rule,
    rank_rule,
    retrain_rule,
    sparsity_rule,
    surgery_rule,
)
from rldelta.study.config import StudyConfig
from rldelta.study.layout import Run
from rldelta.study.paired_evidence import SCORE_NAMES, removed_share, retrain_evidence, surgery_evidence

# Spread over runs (or seed pairs) is reported from this many values on; below it a mean has no interval.
MIN_FOR_SPREAD = 3


def mean(xs: list) -> float | None:
    """The mean of the values that are neither None nor NaN; None when none is left."""
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return sum(xs) / len(xs) if xs else None


def recovery(acc: float, base: float, tuned: float) -> float | None:
    """(acc − base) / (tuned − base): 1 = all of the accuracy RL gained; undefined when it gained nothing."""
    gain = tuned - base
    return (acc - base) / gain if abs(gain) > 1e-12 else None


def mask_name(label: str) -> str:
    """The one name of a run's changed-set mask, everywhere (report, README, tables)."""
    return f"the {label} mask"


def _spread(values: list) -> dict:
    """Mean over runs, with the t interval once there are MIN_FOR_SPREAD values."""
    s = mean_interval(values)
    if s["k"] < MIN_FOR_SPREAD:
        s.update(lo=None, hi=None, sd=None)
    return s


def _pooled(df: pd.DataFrame) -> Acc | None:
    """Accuracies of several evaluations pooled: all their problems together."""
    if not len(df):
        return None
    n = int(df["n"].sum())
    return Acc(float((df["accuracy"] * df["n"]).sum() / n), n) if n else None


def _paired_rows(add, sur_ev: dict, ret_ev, mname: str, score: str) -> None:
    """The headline rows of the paired comparisons the surgery and retrain verdicts rest on."""
    name = SCORE_NAMES[score]

    def row(key, label, d, value="difference", fmt="num"):
        ok = d is not None and d[value] == d[value]  # a share is NaN where RL changed nothing
        ends = (d["lo"], d["hi"]) if ok else (None, None)
        add(key, label, d[value] if ok else None, fmt, *ends, f"paired bootstrap, n={d['n']}" if ok else "")

    p, r = sur_ev["patch"], sur_ev["revert"]
    first = p or r
    row("paired_gain", f"RL's change on {name}, tuned − base (paired)", first.gain if first else None)
    row("patch_share", f"share of that change kept by base + the update on {mname}", p and p.share, "share", "pct")
    row("patch_random_share", "… on random masks of the same density", p and p.control_share, "share", "pct")
    row("patch_vs_random", f"{mname} − random masks, patched ({name})", p and p.vs_control)
    removed = f"share of the change removed by resetting {mname}"
    row("revert_share", removed, r and removed_share(r.share), "share", "pct")
    row("revert_random_share", "… by resetting random masks", r and removed_share(r.control_share), "share", "pct")
    row("revert_vs_random", f"random masks − {mname}, reset ({name})", r and r.vs_control)
    row("retrain_full_gain", f"the full run's gain over the base ({name})", ret_ev and ret_ev.gain)
    row("retrain_vs_full", f"subnetwork-only retrain − full run ({name})", ret_ev and ret_ev.vs_full)


def headline_and_claims(
    cfg: StudyConfig, t: dict[str, pd.DataFrame], runs: list[Run]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The headline table (key, label, value, format, lo, hi, interval) and the claims table (one verdict per
    published claim, with its comparison, null and what more data would decide it)."""
    grid = t["runs"][t["runs"]["kind"] == "grid"]
    ov = t["overlap"]
    seeds = ov[ov["kind"] == "seed"]
    sur = t["surgery"]
    acc = t["accuracy"]
    ret = t["retrain"].to_dict("records")[0] if len(t["retrain"]) else {}
    mods = t["modules"][t["modules"]["run"].isin(grid["run"])]
    cause = t.get("cause", pd.DataFrame(columns=["arm", "changed_frac", "fp32_changed_frac"]))
    primary = runs[0].label
    others = [
        r.label for r in runs if r.algo == runs[0].algo and r.precision == runs[0].precision and r.label != primary
    ]
    cross = sur[sur["target"].isin(others)] if others else sur
    rows: list[dict] = []

    def add(key, label, value, fmt, lo=None, hi=None, interval=""):
        rows.append(
            {"key": key, "label": label, "value": value, "format": fmt, "lo": lo, "hi": hi, "interval": interval}
        )

    def add_spread(key, label, values, fmt):
        s = _spread(values)
        add(key, label, s["mean"], fmt, s["lo"], s["hi"], f"t, {s['k']} runs" if s["lo"] is not None else "")
        return s

    def add_acc(key, label, a: Acc | None):
        lo, hi = accuracy_interval(a.value, a.n) if a else (None, None)
        add(key, label, a.value if a else None, "acc", lo, hi, f"Wilson, n={a.n}" if a else "")

    def col(df, c):
        return df[c].tolist() if c in df and len(df) else []

    bf16 = add_spread(
        "changed_frac", "changed fraction, bitwise in bf16 (mean over runs)", col(grid, "changed_frac"), "pct"
    )
    add_spread(
        "changed_atol_frac",
        f"changed fraction, |Δ| > {cfg.atol:g} (mean over runs)",
        col(grid, "changed_atol_frac"),
        "pct",
    )
    fp32 = add_spread(
        "fp32_changed_frac",
        "changed fraction of the fp32 master weights (mean over fp32 runs)",
        col(grid, "fp32_changed_frac"),
        "pct",
    )
    add_spread(
        "lost_to_rounding_frac",
        "share of fp32 updates lost when rounding to bf16",
        col(grid, "lost_to_rounding_frac"),
        "pct",
    )
    add_spread(
        "auc_small_weights", "AUC of −|w| for the changed set (0.5 = chance)", col(grid, "auc_small_weights"), "num"
    )
    rank = add_spread(
        "mean_rank_frac", "rank / max rank of Δ, mean over 2-D tensors and runs", col(grid, "mean_rank_frac"), "num"
    )
    add(
        "null_rank_frac",
        "same for random sparse matrices of the same density",
        mean(col(mods, "null_rank_frac")),
        "num",
    )
    so = _spread(col(seeds, "overlap"))
    add(
        "seed_overlap",
        "seed overlap |A∩B|/|A| (mean over seed pairs)",
        so["mean"],
        "pct",
        so["lo"],
        so["hi"],
        f"t, {so['k']} seed pairs" if so["lo"] is not None else "",
    )
    r_lo, r_hi = mean(col(seeds, "random_lo")), mean(col(seeds, "random_hi"))
    m_lo, m_hi = mean(col(seeds, "matched_lo")), mean(col(seeds, "matched_hi"))
    add(
        "seed_overlap_random",
        "… expected at random (same per-tensor density)",
        mean(col(seeds, "random_overlap")),
        "pct",
        r_lo,
        r_hi,
        "permutation null, 95% range" if r_hi is not None else "",
    )
    add(
        "seed_overlap_matched",
        "… expected at random within |w| bins (magnitude-matched)",
        mean(col(seeds, "magnitude_matched_overlap")),
        "pct",
        m_lo,
        m_hi,
        "permutation null, 95% range" if m_hi is not None else "",
    )
    add(
        "algorithm_overlap",
        "overlap between algorithms (mean)",
        mean(col(ov[ov["kind"] == "algorithm"], "overlap")),
        "pct",
    )
    add(
        "precision_overlap",
        "overlap between bf16- and fp32-trained runs (mean)",
        mean(col(ov[ov["kind"] == "precision"], "overlap")),
        "pct",
    )

    base = Acc(float(acc["accuracy"].iloc[0]), int(acc["n"].iloc[0]))
    tuned = _pooled(acc[acc["model"].isin(others or [primary])])
    add_acc("base_accuracy", "base accuracy", base)
    add_acc("tuned_accuracy", "RL-tuned accuracy of the models whose update the surgery used", tuned)
    mname = mask_name(primary)
    sur_acc = {}
    for kind, ctl, label in (
        ("patch", "none", f"base + the other seed's update on {mname}"),
        ("patch", "random", "… on random masks of the same per-tensor density"),
        ("revert", "none", f"the other seed's model with {mname} reset to base"),
        ("revert", "random", "… with random masks of the same density reset"),
    ):
        sub = cross[(cross["kind"] == kind) & (cross["control"].str.startswith(ctl))] if len(cross) else cross
        sur_acc[kind, ctl] = _pooled(sub) if len(sub) else None
        add_acc(f"{kind}_accuracy" if ctl == "none" else f"{kind}_random_accuracy", label, sur_acc[kind, ctl])
    full = Acc(ret["accuracy_full"], ret["n"]) if ret else None
    retr = Acc(ret["accuracy_retrain"], ret["n"]) if ret else None
    add_acc("retrain_accuracy", "subnetwork-only retraining accuracy", retr)
    add_acc("retrain_full_accuracy", "the full run it retrains", full)
    add(
        "retrain_coverage",
        "share of the full run's changed entries the retrain also changed",
        ret.get("full_covered_by_retrain"),
        "pct",
    )
    add("retrain_cosine", "cosine of the retrain's Δ and the full run's Δ", ret.get("delta_cosine"), "num")
    for key, label in (
        ("bitwise", "bitwise"),
        ("1e-5", "within 1e-5 (published 94.0% DPO, 90.5% PRIME)"),
        ("1e-4", "within 1e-4 (published 100%)"),
    ):
        add(
            f"retrain_equal_{key.replace('-', '')}",
            f"entries of θ_sub equal to θ_full, {label}",
            ret.get(f"equal_{key}"),
            "pct",
        )
    score = cfg.paired_score
    sur_ev = {k: surgery_evidence(t["problems"], sur, k, others or [primary], score) for k in ("patch", "revert")}
    ret_ev = retrain_evidence(t["problems"], ret["full"], ret["retrain"], score) if ret else None
    _paired_rows(add, sur_ev, ret_ev, mname, score)
    arms = {r["arm"]: r for r in cause.to_dict("records")}
    for arm, label in (
        ("sft_own", "SFT on the policy's own correct samples: changed fraction (bf16)"),
        ("sft_foreign", "SFT on the same answers in a foreign style: changed fraction (bf16)"),
        ("rl_kl", "RL with KL (β > 0): changed fraction (bf16)"),
        ("rl_no_kl", "RL without KL (β = 0): changed fraction (bf16)"),
    ):
        a = arms.get(arm, {})
        add(f"cause_{arm}", label, a.get("changed_frac"), "pct")
        add(f"cause_{arm}_fp32", label.replace("(bf16)", "(fp32 master)"), a.get("fp32_changed_frac"), "pct")
    head = pd.DataFrame(rows)
    # straight from the rows: a DataFrame would turn a missing number (None) into NaN, which no rule tests for
    num = {r["key"]: None if r["value"] is None or r["value"] != r["value"] else r["value"] for r in rows}

    claims = [
        sparsity_rule(bf16["mean"], bf16["lo"], bf16["hi"], sd=bf16["sd"], runs=bf16["k"], fp32=fp32["mean"]).row(
            "sparsity", "RL updates only 5–30% of the parameters", "changed_frac", num["changed_frac"]
        ),
        rank_rule(rank["mean"], num["null_rank_frac"], rank["lo"], rank["hi"], sd=rank["sd"], runs=rank["k"]).row(
            "full rank", "each update matrix is nearly full rank (>99%)", "mean_rank_frac", num["mean_rank_frac"]
        ),
        overlap_rule(
            so["mean"],
            r_hi if r_hi is not None else num["seed_overlap_random"],
            m_hi,
            so["lo"],
            so["hi"],
            sd=so["sd"],
            pairs=so["k"],
        ).row(
            "seed consistency", "different seeds update nearly the same entries", "seed_overlap", num["seed_overlap"]
        ),
        surgery_rule("patch", sur_ev["patch"], mname).row(
            "subnetwork sufficiency",
            "the update on the subnetwork alone recovers the tuned accuracy",
            "patch_share",
            num["patch_share"],
        ),
        surgery_rule("revert", sur_ev["revert"], mname).row(
            "subnetwork necessity",
            "resetting the subnetwork to base loses the tuned accuracy",
            "revert_share",
            num["revert_share"],
        ),
        retrain_rule(ret_ev, ret.get("delta_cosine")).row(
            "subnetwork-only training",
            "training only the subnetwork recovers the full run's accuracy and parameters",
            "retrain_vs_full",
            num["retrain_vs_full"],
        ),
        cause_rule(num["cause_sft_own"], num["cause_sft_foreign"], num["cause_rl_kl"], num["cause_rl_no_kl"]).row(
            "in-distribution data",
            "training on data close to the policy's own distribution makes the update sparse",
            "cause_sft_own",
            num["cause_sft_own"],
        ),
    ]
    return head, pd.DataFrame(claims)
