"""The headline numbers, each with its 95% interval where one exists (one builder per group of rows), and the
evidence the claims of study/claims.py are judged on. Pure functions of the study's tables."""

from __future__ import annotations

import pandas as pd

from rldelta.columns import is_missing
from rldelta.metrics.stats import accuracy_interval, mean_interval
from rldelta.study.claims import Acc, Evidence, claims_table
from rldelta.study.config import StudyConfig
from rldelta.study.folders import Run
from rldelta.study.paired_evidence import SCORE_NAMES, removed_share, retrain_evidence, surgery_evidence

# Spread over runs (or seed pairs) is reported from this many values on; below it a mean has no interval.
MIN_FOR_SPREAD = 3


def mean(xs: list) -> float | None:
    """The mean of the values that are neither None nor NaN; None when none is left."""
    xs = [x for x in xs if not is_missing(x)]
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
        ok = d is not None and not is_missing(d[value])  # a share is NaN where RL changed nothing
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


class HeadlineRows:
    """The headline table as it is built: its rows, and what the claims' rules read besides a row's value (the
    spread over runs a mean came from, the raw value before NaN became None)."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.spread: dict[str, dict] = {}

    def add(self, key, label, value, fmt, lo=None, hi=None, interval="") -> None:
        self.rows.append(
            {"key": key, "label": label, "value": value, "format": fmt, "lo": lo, "hi": hi, "interval": interval}
        )

    def add_spread(self, key, label, values, fmt) -> None:
        s = self.spread[key] = _spread(values)
        self.add(key, label, s["mean"], fmt, s["lo"], s["hi"], f"t, {s['k']} runs" if s["lo"] is not None else "")

    def add_acc(self, key, label, a: Acc | None) -> None:
        lo, hi = accuracy_interval(a.value, a.n) if a else (None, None)
        self.add(key, label, a.value if a else None, "acc", lo, hi, f"Wilson, n={a.n}" if a else "")

    def numbers(self) -> dict:
        # straight from the rows: a DataFrame would turn a missing number (None) into NaN, which no rule tests for
        return {r["key"]: None if is_missing(r["value"]) else r["value"] for r in self.rows}


def _col(df, c):
    return df[c].tolist() if c in df and len(df) else []


def _change_rows(h: HeadlineRows, cfg: StudyConfig, grid: pd.DataFrame, mods: pd.DataFrame) -> None:
    """How much of the model changed, and how high-rank the change is."""
    h.add_spread(
        "changed_frac", "changed fraction, bitwise in bf16 (mean over runs)", _col(grid, "changed_frac"), "pct"
    )
    h.add_spread(
        "changed_atol_frac",
        f"changed fraction, |Δ| > {cfg.atol:g} (mean over runs)",
        _col(grid, "changed_atol_frac"),
        "pct",
    )
    h.add_spread(
        "fp32_changed_frac",
        "changed fraction of the fp32 master weights (mean over fp32 runs)",
        _col(grid, "fp32_changed_frac"),
        "pct",
    )
    h.add_spread(
        "lost_to_rounding_frac",
        "share of fp32 updates lost when rounding to bf16",
        _col(grid, "lost_to_rounding_frac"),
        "pct",
    )
    h.add_spread(
        "auc_small_weights", "AUC of −|w| for the changed set (0.5 = chance)", _col(grid, "auc_small_weights"), "num"
    )
    h.add_spread(
        "mean_rank_frac", "rank / max rank of Δ, mean over 2-D tensors and runs", _col(grid, "mean_rank_frac"), "num"
    )
    h.add(
        "null_rank_frac",
        "same for random sparse matrices of the same density",
        mean(_col(mods, "null_rank_frac")),
        "num",
    )


def _overlap_rows(h: HeadlineRows, ov: pd.DataFrame) -> None:
    """How much the changed sets of seeds, algorithms and precisions overlap, against chance."""
    seeds = ov[ov["kind"] == "seed"]
    so = h.spread["seed_overlap"] = _spread(_col(seeds, "overlap"))
    h.add(
        "seed_overlap",
        "seed overlap |A∩B|/|A| (mean over seed pairs)",
        so["mean"],
        "pct",
        so["lo"],
        so["hi"],
        f"t, {so['k']} seed pairs" if so["lo"] is not None else "",
    )
    r_lo, r_hi = mean(_col(seeds, "random_lo")), mean(_col(seeds, "random_hi"))
    m_lo, m_hi = mean(_col(seeds, "matched_lo")), mean(_col(seeds, "matched_hi"))
    h.add(
        "seed_overlap_random",
        "… expected at random (same per-tensor density)",
        mean(_col(seeds, "random_overlap")),
        "pct",
        r_lo,
        r_hi,
        "permutation null, 95% range" if r_hi is not None else "",
    )
    h.add(
        "seed_overlap_matched",
        "… expected at random within |w| bins (magnitude-matched)",
        mean(_col(seeds, "magnitude_matched_overlap")),
        "pct",
        m_lo,
        m_hi,
        "permutation null, 95% range" if m_hi is not None else "",
    )
    h.add(
        "algorithm_overlap",
        "overlap between algorithms (mean)",
        mean(_col(ov[ov["kind"] == "algorithm"], "overlap")),
        "pct",
    )
    h.add(
        "precision_overlap",
        "overlap between bf16- and fp32-trained runs (mean)",
        mean(_col(ov[ov["kind"] == "precision"], "overlap")),
        "pct",
    )


def _accuracy_rows(h: HeadlineRows, acc: pd.DataFrame, cross: pd.DataFrame, tuned_models: list[str], mname: str):
    """The accuracies of the base, the tuned models and the surgery's patched and reverted models."""
    base = Acc(float(acc["accuracy"].iloc[0]), int(acc["n"].iloc[0]))
    tuned = _pooled(acc[acc["model"].isin(tuned_models)])
    h.add_acc("base_accuracy", "base accuracy", base)
    h.add_acc("tuned_accuracy", "RL-tuned accuracy of the models whose update the surgery used", tuned)
    for kind, ctl, label in (
        ("patch", "none", f"base + the other seed's update on {mname}"),
        ("patch", "random", "… on random masks of the same per-tensor density"),
        ("revert", "none", f"the other seed's model with {mname} reset to base"),
        ("revert", "random", "… with random masks of the same density reset"),
    ):
        sub = cross[(cross["kind"] == kind) & (cross["control"].str.startswith(ctl))] if len(cross) else cross
        h.add_acc(
            f"{kind}_accuracy" if ctl == "none" else f"{kind}_random_accuracy",
            label,
            _pooled(sub) if len(sub) else None,
        )


def _retrain_rows(h: HeadlineRows, ret: dict) -> None:
    """The subnetwork-only retrain against the full run: accuracy, coverage, direction, equal entries."""
    full = Acc(ret["accuracy_full"], ret["n"]) if ret else None
    retr = Acc(ret["accuracy_retrain"], ret["n"]) if ret else None
    h.add_acc("retrain_accuracy", "subnetwork-only retraining accuracy", retr)
    h.add_acc("retrain_full_accuracy", "the full run it retrains", full)
    h.add(
        "retrain_coverage",
        "share of the full run's changed entries the retrain also changed",
        ret.get("full_covered_by_retrain"),
        "pct",
    )
    h.add("retrain_cosine", "cosine of the retrain's Δ and the full run's Δ", ret.get("delta_cosine"), "num")
    for key, label in (
        ("bitwise", "bitwise"),
        ("1e-5", "within 1e-5 (published 94.0% DPO, 90.5% PRIME)"),
        ("1e-4", "within 1e-4 (published 100%)"),
    ):
        h.add(
            f"retrain_equal_{key.replace('-', '')}",
            f"entries of θ_sub equal to θ_full, {label}",
            ret.get(f"equal_{key}"),
            "pct",
        )


def _cause_rows(h: HeadlineRows, cause: pd.DataFrame) -> None:
    """The cause analysis's arms: changed fraction of each, in bf16 and in the fp32 master."""
    arms = {r["arm"]: r for r in cause.to_dict("records")}
    for arm, label in (
        ("sft_own", "SFT on the policy's own correct samples: changed fraction (bf16)"),
        ("sft_foreign", "SFT on the same answers in a foreign style: changed fraction (bf16)"),
        ("rl_kl", "RL with KL (β > 0): changed fraction (bf16)"),
        ("rl_no_kl", "RL without KL (β = 0): changed fraction (bf16)"),
    ):
        a = arms.get(arm, {})
        h.add(f"cause_{arm}", label, a.get("changed_frac"), "pct")
        h.add(f"cause_{arm}_fp32", label.replace("(bf16)", "(fp32 master)"), a.get("fp32_changed_frac"), "pct")


def headline(cfg: StudyConfig, t: dict[str, pd.DataFrame], runs: list[Run]) -> tuple[pd.DataFrame, Evidence]:
    """The headline table (key, label, value, format, lo, hi, interval), and the evidence the claims' rules read."""
    grid = t["runs"][t["runs"]["kind"] == "grid"]
    sur = t["surgery"]
    ret = t["retrain"].to_dict("records")[0] if len(t["retrain"]) else {}
    primary = runs[0].label
    others = [
        r.label for r in runs if r.algo == runs[0].algo and r.precision == runs[0].precision and r.label != primary
    ]
    cross = sur[sur["target"].isin(others)] if others else sur
    mname = mask_name(primary)
    h = HeadlineRows()
    _change_rows(h, cfg, grid, t["modules"][t["modules"]["run"].isin(grid["run"])])
    _overlap_rows(h, t["overlap"])
    _accuracy_rows(h, t["accuracy"], cross, others or [primary], mname)
    _retrain_rows(h, ret)
    score = cfg.paired_score
    sur_ev = {k: surgery_evidence(t["problems"], sur, k, others or [primary], score) for k in ("patch", "revert")}
    ret_ev = retrain_evidence(t["problems"], ret["full"], ret["retrain"], score) if ret else None
    _paired_rows(h.add, sur_ev, ret_ev, mname, score)
    _cause_rows(h, t.get("cause", pd.DataFrame(columns=["arm", "changed_frac", "fp32_changed_frac"])))
    evidence = Evidence(
        num=h.numbers(),
        spread=h.spread,
        bounds={r["key"]: (r["lo"], r["hi"]) for r in h.rows},
        raw={r["key"]: r["value"] for r in h.rows},
        surgery=sur_ev,
        retrain=ret_ev,
        mask_name=mname,
    )
    return pd.DataFrame(h.rows), evidence


def headline_and_claims(
    cfg: StudyConfig, t: dict[str, pd.DataFrame], runs: list[Run]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The headline table and the claims table (one verdict per claim of CLAIMS, with its comparison, null and
    what more data would decide it)."""
    head, evidence = headline(cfg, t, runs)
    return head, claims_table(evidence)
