"""The "Why sparse, yet full-rank?" table: one row per candidate explanation, with the measured evidence for and
against it, the share of the observed effect it accounts for (observed vs its null, with an interval where the
data give one) and its verdict. Pure: numbers in (the headline numbers, by key), rows out.

Texts are templates like the claims': {key} is that headline number, so every number in a sentence is a table's.
"""

from __future__ import annotations

import pandas as pd

from rldelta.columns import is_missing

SUPPORTED, PARTLY, NOT_SUPPORTED, INCONCLUSIVE, NOT_MEASURED = (
    "supported",
    "partly",
    "not supported",
    "inconclusive",
    "not measured",
)
# An explanation that accounts for at least this share of the effect is supported; from PARTLY_SHARE on, partly.
SUPPORTED_SHARE, PARTLY_SHARE = 0.8, 0.3
# −|w| predicts the changed set when its AUC reaches this.
AUC_PREDICTS = 0.7


def _ok(*xs) -> bool:
    return not any(is_missing(x) for x in xs)


def _by_share(share: float | None, lo: float | None = None, hi: float | None = None) -> str:
    if share is None:
        return NOT_MEASURED
    for edge in (SUPPORTED_SHARE, PARTLY_SHARE):
        if lo is not None and hi is not None and lo < edge < hi:
            return INCONCLUSIVE
    return SUPPORTED if share >= SUPPORTED_SHARE else (PARTLY if share >= PARTLY_SHARE else NOT_SUPPORTED)


def _row(name, effect, evidence_for, evidence_against, share=None, lo=None, hi=None, verdict=None) -> dict:
    return {
        "explanation": name,
        "effect": effect,
        "evidence_for": evidence_for,
        "evidence_against": evidence_against,
        "share": share,
        "share_lo": lo,
        "share_hi": hi,
        "verdict": verdict or _by_share(share, lo, hi),
    }


def why_rows(num: dict, probes: dict | None = None) -> list[dict]:
    """The rows of the table from the headline numbers `num` (by key) and the probes' numbers and verdicts."""
    probes = probes or {}
    g = num.get
    rows = []

    bf16, fp32 = g("changed_frac"), g("fp32_changed_frac")
    share = (fp32 - bf16) / (1 - bf16) if _ok(bf16, fp32) and bf16 < 1 else None
    rows.append(
        _row(
            "storage precision (bf16 rounding)",
            "sparsity",
            "the fp32 master weights changed {fp32_changed_frac}, the bf16 checkpoint {changed_frac}; rounding "
            "removed {lost_to_rounding_frac} of the updates",
            "entries the fp32 master left untouched are unchanged at any precision",
            share,
        )
    )
    auc, so, sr, sm = g("auc_small_weights"), g("seed_overlap"), g("seed_overlap_random"), g("seed_overlap_matched")
    share = lo = hi = None
    if _ok(so, sr, sm) and so - sr > 1e-12:
        share = (sm - sr) / (so - sr)
        if _ok(g("seed_overlap_matched_lo"), g("seed_overlap_matched_hi")):
            lo = (g("seed_overlap_matched_lo") - sr) / (so - sr)
            hi = (g("seed_overlap_matched_hi") - sr) / (so - sr)
    verdict = None
    if share is not None and _ok(auc) and auc < AUC_PREDICTS:
        verdict = PARTLY if share >= PARTLY_SHARE else NOT_SUPPORTED
    rows.append(
        _row(
            "weight magnitude (small |w| change first)",
            "which entries change, and the seed overlap",
            "−|w| predicts the changed set with AUC {auc_small_weights}; random sets with the same |w| profile "
            "overlap by {seed_overlap_matched}",
            "seeds overlap by {seed_overlap}; at random {seed_overlap_random}",
            share,
            lo,
            hi,
            verdict if share is not None else None,
        )
    )
    rk, nr = g("mean_rank_frac"), g("null_rank_frac")
    rows.append(
        _row(
            "density alone (for the rank)",
            "full rank",
            "random sparse matrices of the same density reach rank fraction {null_rank_frac}",
            "Δ reaches {mean_rank_frac}",
            # 1 when random matrices of the density reach Δ's rank exactly; less the further apart they are
            max(0.0, 1 - abs(nr - rk) / rk) if _ok(rk, nr) and rk > 0 else None,
        )
    )
    own, foreign = g("cause_sft_own"), g("cause_sft_foreign")
    rows.append(
        _row(
            "in-distribution data (arXiv:2505.11711)",
            "sparsity",
            "SFT on the policy's own samples changed {cause_sft_own} (fp32 master {cause_sft_own_fp32})",
            "SFT on the same answers in a foreign style changed {cause_sft_foreign} (fp32 master "
            "{cause_sft_foreign_fp32}); RL with KL {cause_rl_kl}, without {cause_rl_no_kl}",
            (foreign - own) / foreign if _ok(own, foreign) and foreign > 0 else None,
        )
    )
    sup, amp = probes.get("suppression"), probes.get("amplification")
    # Only a fall of log p(wrong) is suppression and only a rise of log p(correct) amplification; a negative one
    # is neither, so each counts with its positive part.
    share = None
    if _ok(sup, amp) and max(sup, 0) + max(amp, 0) > 0:
        share = max(sup, 0) / (max(sup, 0) + max(amp, 0))
    rows.append(
        _row(
            "suppression of wrong answers",
            "what the sparse update does",
            "log p(wrong) fell by {probe_suppression} nats",
            "log p(correct) rose by {probe_amplification} nats (negative: it fell too)",
            share,
        )
    )
    fv = probes.get("format_verdict")
    rows.append(
        _row(
            "format selection",
            "what the sparse update does",
            fv or "not measured",
            "the winner's share at the end: {probe_format_winner_share}",
            probes.get("format_winner_share"),
        )
    )
    rows.append(_law_row(num))
    rows.append(_neuron_row(probes))
    return rows


def _law_row(num: dict) -> dict:
    """The update-sparsity law's row: the share of the measured changed fraction its held-out prediction gets right."""
    meas, err = num.get("law_measured"), num.get("law_abs_err")
    return _row(
        "the update-sparsity law (bf16 rounding of a calibrated Adam drift)",
        "how many entries change",
        "calibrated on one run's first steps, it predicts the other runs' changed fraction {law_predicted} "
        "against {law_measured} measured",
        "absolute error {law_abs_err}; per-step changed fraction off by {law_step_err} (median)",
        max(0.0, 1 - err / meas) if _ok(meas, err) and meas > 0 else None,
    )


def _neuron_row(probes: dict) -> dict:
    """Activation sparsity's row: decided by the activation probe's Spearman correlations, not by a share."""
    within, partial = probes.get("within_layer_spearman"), probes.get("partial_spearman")
    return _row(
        "activation sparsity (RL edits the neurons the task uses)",
        "which entries change",
        "within-layer Spearman of activation frequency vs changed fraction {probe_within_spearman}",
        "with the neuron's mean |w| held fixed: {probe_partial_spearman}",
        None,
        verdict=_neuron_verdict(within, partial, probes.get("spearman_threshold")),
    )


def _neuron_verdict(within: float | None, partial: float | None, threshold: float | None) -> str:
    if not _ok(within, threshold):
        return NOT_MEASURED
    if abs(within) < threshold:
        # below the bar within a layer, unless the link appears once |w| is held fixed
        return PARTLY if _ok(partial) and abs(partial) >= threshold else NOT_SUPPORTED
    if _ok(partial) and abs(partial) < threshold:
        return PARTLY  # a within-layer link that weight magnitude accounts for
    return SUPPORTED


def why_table(tables: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The headline with the probes' numbers appended, and the "Why sparse, yet full-rank?" table from both."""
    head = tables["headline"]
    for extra in (tables.get("probe_numbers"), tables.get("law_numbers")):
        if extra is not None and len(extra):
            head = pd.concat([head, extra], ignore_index=True)
    num = dict(zip(head["key"], head["value"]))
    for rec in head.to_dict("records"):
        num[f"{rec['key']}_lo"], num[f"{rec['key']}_hi"] = rec.get("lo"), rec.get("hi")
    num = {k: (None if is_missing(v) else v) for k, v in num.items()}
    pv = tables.get("probe_verdicts")
    fv = (
        [r["verdict"] for r in pv.to_dict("records") if r["probe"].startswith("format selection")]
        if pv is not None
        else []
    )
    probes = {
        "suppression": num.get("probe_suppression"),
        "amplification": num.get("probe_amplification"),
        "within_layer_spearman": num.get("probe_within_spearman"),
        "partial_spearman": num.get("probe_partial_spearman"),
        "spearman_threshold": num.get("probe_spearman_threshold"),
        "format_winner_share": num.get("probe_format_winner_share"),
        "format_verdict": "; ".join(fv) or None,
    }
    return head, pd.DataFrame(why_rows(num, probes))
