"""Every verdict rule of study/claims.py and study/why.py on planted numbers, one case per outcome it can give;
each case also checks that the verdict names its comparison and its null or control."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from rldelta.study import claims as c
from rldelta.study import paired_evidence as pe
from rldelta.study import why as w


def _named(v: c.Verdict) -> None:
    assert v.comparison and v.null and v.text


# ---- sparsity -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bf16, lo, hi, fp32, expected",
    [
        (0.12, None, None, 0.15, c.REPRODUCES),
        (0.0885, None, None, 0.9992, c.PARTLY),  # the demo: sparse in bf16, dense in the fp32 master
        (0.02, None, None, None, c.DOES_NOT),
        (0.45, None, None, None, c.DOES_NOT),
        (0.06, 0.03, 0.09, None, c.INCONCLUSIVE),  # three runs whose spread straddles 5%
        (None, None, None, None, c.NOT_MEASURED),
    ],
)
def test_sparsity_rule(bf16, lo, hi, fp32, expected):
    v = c.sparsity_rule(bf16, lo, hi, sd=0.012 if lo is not None else None, runs=3, fp32=fp32)
    assert v.verdict == expected
    _named(v)
    if expected == c.PARTLY:
        assert (
            "{fp32_changed_frac}" in v.text and "{lost_to_rounding_frac}" in v.text and "{auc_small_weights}" in v.text
        )
    if expected == c.INCONCLUSIVE:
        assert "runs" in v.more_data and any(ch.isdigit() for ch in v.more_data)
    if expected == c.DOES_NOT:
        assert ("below" in v.text) == (bf16 < c.SPARSITY_LOW)


# ---- rank -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rank, null, lo, hi, expected, follows",
    [
        (0.995, 0.996, None, None, c.REPRODUCES, True),
        (0.995, 0.90, None, None, c.REPRODUCES, False),
        (0.95, 0.96, None, None, c.PARTLY, True),
        (0.50, 0.97, None, None, c.DOES_NOT, False),
        (0.985, 0.99, 0.97, 1.0, c.INCONCLUSIVE, True),
        (None, None, None, None, c.NOT_MEASURED, False),
    ],
)
def test_rank_rule(rank, null, lo, hi, expected, follows):
    v = c.rank_rule(rank, null, lo, hi, sd=0.01 if lo else None, runs=3)
    assert v.verdict == expected
    _named(v)
    assert ("density alone" in v.text) == follows


# ---- seed overlap ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "obs, r_hi, m_hi, lo, hi, expected, by_w",
    [
        (0.60, 0.10, 0.30, None, None, c.REPRODUCES, False),
        (0.60, 0.10, 0.65, None, None, c.REPRODUCES, True),  # |w| alone predicts it
        (0.101, 0.105, 0.11, None, None, c.DOES_NOT, False),
        (0.12, 0.10, None, 0.08, 0.16, c.INCONCLUSIVE, False),  # spread over seed pairs straddles the null's top
        (None, 0.1, None, None, None, c.NOT_MEASURED, False),
    ],
)
def test_overlap_rule(obs, r_hi, m_hi, lo, hi, expected, by_w):
    v = c.overlap_rule(obs, r_hi, m_hi, lo, hi, sd=0.03 if lo else None, pairs=3)
    assert v.verdict == expected
    _named(v)
    assert ("weight magnitude alone" in v.text) == by_w
    if expected == c.INCONCLUSIVE:
        assert v.more_data


# ---- surgery: planted per-problem tables ----------------------------------------------------------------------

N = 40
TARGET = "grpo-s1-fp32"


def _planted(gain, mask_share, ctl_share, *, n=N, noise=0.05, spread=1.0, kind="patch", seed=0):
    """Per-problem scores of base, tuned, and the mask's and one control's surgery model of `kind`: the models keep
    `mask_share` / `ctl_share` of RL's per-problem gain (a revert keeps 1 − the share it removes), plus noise."""
    rng = np.random.default_rng(seed)
    base = rng.normal(-3, spread, n)
    g = gain + rng.normal(0, noise, n)
    scores = {
        "base": base,
        TARGET: base + g,
        f"{kind}:{TARGET}:none": base + mask_share * g + rng.normal(0, noise, n),
        f"{kind}:{TARGET}:random:0": base + ctl_share * g + rng.normal(0, noise, n),
    }
    correct = {m: (v > -3).astype(float) for m, v in scores.items()}
    rows = [
        {"model": m, "problem": f"p{i}", "ref_logprob": v[i], "correct": correct[m][i]}
        for m, v in scores.items()
        for i in range(n)
    ]
    sur = pd.DataFrame(
        [{"kind": kind, "target": TARGET, "control": ctl} for ctl in ("none", "random:0")],
    )
    return pd.DataFrame(rows), sur


def _surgery(kind, gain, mask_share, ctl_share, **kw):
    problems, sur = _planted(gain, mask_share, ctl_share, kind=kind, **kw)
    ev = pe.surgery_evidence(problems, sur, kind, [TARGET], "ref_logprob")
    return ev, c.surgery_rule(kind, ev, "the grpo-s0-fp32 mask")


@pytest.mark.parametrize(
    "kind, gain, mask_share, ctl_share, noise, expected",
    [
        ("patch", 1.0, 0.97, 0.10, 0.05, c.REPRODUCES),
        ("patch", -1.0, 0.97, 0.10, 0.05, c.REPRODUCES),  # RL lowered the score: the mask follows it down
        ("revert", -1.0, 0.95, 0.30, 0.05, c.DOES_NOT),
        ("patch", 1.0, 0.60, 0.10, 0.05, c.PARTLY),  # beats random masks but keeps ~60% of the gain
        ("patch", 1.0, 0.10, 0.60, 0.05, c.DOES_NOT),  # random masks do better
        ("patch", 1.0, 0.50, 0.50, 0.50, c.INCONCLUSIVE),  # mask and controls alike, noisy
        ("patch", 0.0, 0.90, 0.10, 0.50, c.INCONCLUSIVE),  # RL gained nothing beyond noise
        ("revert", 1.0, 0.03, 0.95, 0.05, c.REPRODUCES),  # resetting the mask removes the gain, random resets do not
        ("revert", 1.0, 0.50, 0.95, 0.05, c.PARTLY),
        ("revert", 1.0, 0.95, 0.30, 0.05, c.DOES_NOT),
        ("revert", 1.0, 0.60, 0.60, 0.50, c.INCONCLUSIVE),
    ],
)
def test_surgery_rule_on_planted_problems(kind, gain, mask_share, ctl_share, noise, expected):
    ev, v = _surgery(kind, gain, mask_share, ctl_share, noise=noise)
    assert v.verdict == expected, v.text
    _named(v)
    assert "random masks" in v.null and "grpo-s0-fp32" in v.comparison and "paired" in v.comparison
    assert (v.score, v.n) == ("ref_logprob", N)
    assert (v.difference, v.lo, v.hi) == (
        ev.vs_control["difference"],
        ev.vs_control["lo"],
        ev.vs_control["hi"],
    )
    if expected == c.INCONCLUSIVE:
        assert "test problems" in v.more_data


def test_surgery_evidence_against_numpy():
    problems, sur = _planted(1.0, 0.7, 0.2, noise=0.3)
    w = problems.pivot(index="problem", columns="model", values="ref_logprob")
    ev = pe.surgery_evidence(problems, sur, "patch", [TARGET], "ref_logprob")
    b, t, m, k = (w[x].to_numpy() for x in ("base", TARGET, f"patch:{TARGET}:none", f"patch:{TARGET}:random:0"))
    assert ev.gain["difference"] == pytest.approx(np.mean(t - b))
    assert ev.share["share"] == pytest.approx(np.mean(m - b) / np.mean(t - b))
    assert ev.control_share["share"] == pytest.approx(np.mean(k - b) / np.mean(t - b))
    assert ev.vs_control["difference"] == pytest.approx(np.mean(m - k))
    flipped = problems.assign(ref_logprob=-problems["ref_logprob"])  # RL lowered the score: the same evidence
    ev2 = pe.surgery_evidence(flipped, sur, "patch", [TARGET], "ref_logprob")
    assert ev2.vs_control["difference"] == pytest.approx(ev.vs_control["difference"])
    assert ev2.share["share"] == pytest.approx(ev.share["share"])


def test_paired_decides_where_unpaired_intervals_straddle():
    """Problems of very different difficulty (sd 3 nats across problems), a modest gain on each: the unpaired
    intervals of the two means overlap, the paired difference decides."""
    problems, sur = _planted(1.0, 0.95, 0.05, noise=0.2, spread=3.0)
    w = problems.pivot(index="problem", columns="model", values="ref_logprob")
    mask, ctl = w[f"patch:{TARGET}:none"], w[f"patch:{TARGET}:random:0"]
    welch = stats.ttest_ind(mask, ctl, equal_var=False).confidence_interval()
    assert welch.low < 0 < welch.high
    v = c.surgery_rule("patch", pe.surgery_evidence(problems, sur, "patch", [TARGET], "ref_logprob"), "m")
    assert v.verdict == c.REPRODUCES and v.lo > 0


def test_a_mask_no_better_than_random_stays_inconclusive_or_does_not_reproduce():
    """Mask and controls drawn alike: no seed makes the mask reproduce."""
    for seed in range(8):
        _, v = _surgery("patch", 1.0, 0.5, 0.5, noise=0.4, seed=seed)
        assert v.verdict in (c.INCONCLUSIVE, c.DOES_NOT), v.text


def test_surgery_inconclusive_names_the_n_a_power_calculation_gives():
    ev, v = _surgery("patch", 1.0, 0.55, 0.45, noise=0.6)
    assert v.verdict == c.INCONCLUSIVE
    d = ev.vs_control
    need = int(v.more_data.split("about ")[1].split(" ")[0])
    # an independent power calculation: the noncentral t at the observed effect and sd, smallest n with power 0.8
    df = np.arange(N, 20_000) - 1
    nc = abs(d["difference"]) / d["sd"] * np.sqrt(df + 1)
    crit = stats.t.ppf(0.975, df)
    power = stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc)
    assert need == int(df[np.argmax(power >= 0.8)] + 1)


def test_surgery_not_measured_without_controls():
    problems, sur = _planted(1.0, 0.9, 0.1)
    ev = pe.surgery_evidence(problems, sur[sur["control"] == "none"], "patch", [TARGET], "ref_logprob")
    assert ev is None and c.surgery_rule("patch", ev, "m").verdict == c.NOT_MEASURED


# ---- retrain --------------------------------------------------------------------------------------------------


def _retrain(gain, retrain_share, noise, n=N, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.normal(-3, 1, n)
    g = gain + rng.normal(0, 0.05, n)
    scores = {"base": base, "full": base + g, "retrain": base + retrain_share * g + rng.normal(0, noise, n)}
    rows = [
        {"model": m, "problem": f"p{i}", "ref_logprob": v[i], "correct": float(v[i] > -3)}
        for m, v in scores.items()
        for i in range(n)
    ]
    return pe.retrain_evidence(pd.DataFrame(rows), "full", "retrain", "ref_logprob")


@pytest.mark.parametrize(
    "gain, share, noise, cos, expected",
    [
        (1.0, 1.0, 0.05, 0.95, c.REPRODUCES),
        (1.0, 1.0, 0.05, 0.50, c.PARTLY),  # equivalent scores, Δs apart
        (1.0, 0.3, 0.05, 0.95, c.PARTLY),  # Δs alike, scores not
        (1.0, 0.3, 0.05, 0.50, c.DOES_NOT),
        (1.0, 1.0, 1.50, 0.95, c.INCONCLUSIVE),  # equal on average, too noisy for the ±20% margin
        (0.0, 1.0, 0.05, 0.95, c.INCONCLUSIVE),  # no gain to set the margin by
    ],
)
def test_retrain_rule_on_planted_problems(gain, share, noise, cos, expected):
    v = c.retrain_rule(_retrain(gain, share, noise), cos)
    assert v.verdict == expected, v.text
    _named(v)
    assert "TOST" in v.test and v.n == N
    if expected == c.INCONCLUSIVE:
        assert "test problems" in v.more_data


def test_retrain_not_measured():
    assert c.retrain_rule(None, None).verdict == c.NOT_MEASURED


# ---- cause ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "own, foreign, kl, no_kl, expected",
    [
        (0.05, 0.20, 0.10, 0.10, c.REPRODUCES),
        (0.05, 0.20, None, 0.10, c.REPRODUCES),
        (0.05, 0.20, 0.05, 0.10, c.PARTLY),  # KL halves it too
        (0.30, 0.20, 0.10, 0.10, c.DOES_NOT),
        (0.19, 0.20, None, None, c.INCONCLUSIVE),
        (None, 0.20, None, None, c.NOT_MEASURED),
    ],
)
def test_cause_rule(own, foreign, kl, no_kl, expected):
    v = c.cause_rule(own, foreign, kl, no_kl)
    assert v.verdict == expected
    _named(v)
    if expected == c.INCONCLUSIVE:
        assert "seeds" in v.more_data


def test_every_verdict_is_one_of_the_vocabulary():
    vs = [
        c.sparsity_rule(0.1),
        c.rank_rule(0.5, None),
        c.overlap_rule(0.5, 0.1, None),
        c.surgery_rule("revert", None, "m"),
        c.retrain_rule(None, None),
        c.cause_rule(0.1, 0.1, None, None),
    ]
    assert {v.verdict for v in vs} <= set(c.VERDICTS)


# ---- the "why" table ------------------------------------------------------------------------------------------


def _why(**num):
    return {r["explanation"].split(" (")[0]: r for r in w.why_rows(num, num.pop("probes", {}))}


def test_why_rounding_share_and_verdicts():
    rows = _why(changed_frac=0.0885, fp32_changed_frac=0.9992)
    r = rows["storage precision"]
    assert r["share"] == pytest.approx((0.9992 - 0.0885) / (1 - 0.0885))
    assert r["verdict"] == w.SUPPORTED
    assert _why(changed_frac=0.2, fp32_changed_frac=0.3)["storage precision"]["verdict"] == w.NOT_SUPPORTED
    assert _why()["storage precision"]["verdict"] == w.NOT_MEASURED


def test_why_weight_magnitude_share_with_its_interval():
    rows = _why(
        seed_overlap=0.6,
        seed_overlap_random=0.1,
        seed_overlap_matched=0.5,
        seed_overlap_matched_lo=0.48,
        seed_overlap_matched_hi=0.52,
        auc_small_weights=0.95,
    )
    r = rows["weight magnitude"]
    assert (
        r["share"] == pytest.approx(0.8)
        and r["share_lo"] == pytest.approx(0.76)
        and r["share_hi"] == pytest.approx(0.84)
    )
    assert r["verdict"] == w.INCONCLUSIVE  # the interval straddles the 80% bar
    low_auc = _why(seed_overlap=0.6, seed_overlap_random=0.1, seed_overlap_matched=0.55, auc_small_weights=0.6)
    assert low_auc["weight magnitude"]["verdict"] == w.PARTLY
    assert (
        _why(seed_overlap=0.6, seed_overlap_random=0.1, seed_overlap_matched=0.12)["weight magnitude"]["verdict"]
        == w.NOT_SUPPORTED
    )


def test_why_density_cause_suppression_and_neurons():
    rows = _why(
        mean_rank_frac=0.99,
        null_rank_frac=0.995,
        cause_sft_own=0.05,
        cause_sft_foreign=0.2,
        probes={
            "suppression": 3.0,
            "amplification": 1.0,
            "within_layer_spearman": 0.07,
            "partial_spearman": 0.01,
            "spearman_threshold": 0.1,
        },
    )
    assert (
        rows["density alone"]["share"] == pytest.approx(1 - 0.005 / 0.99)
        and rows["density alone"]["verdict"] == w.SUPPORTED
    )
    assert (
        rows["in-distribution data"]["share"] == pytest.approx(0.75)
        and rows["in-distribution data"]["verdict"] == w.PARTLY
    )
    assert rows["suppression of wrong answers"]["share"] == pytest.approx(0.75)
    assert rows["activation sparsity"]["verdict"] == w.NOT_SUPPORTED  # within-layer +0.07 below the 0.1 bar
    assert w._neuron_verdict(0.3, 0.02, 0.1) == w.PARTLY  # a link |w| accounts for
    assert w._neuron_verdict(0.3, 0.25, 0.1) == w.SUPPORTED
    assert w._neuron_verdict(None, None, None) == w.NOT_MEASURED
    assert w._neuron_verdict(0.065, 0.119, 0.1) == w.PARTLY  # the demo: only with |w| held fixed
    # a log p(correct) that fell is no amplification: all of the effect is suppression
    both_fell = _why(probes={"suppression": 5.7, "amplification": -3.2})
    assert both_fell["suppression of wrong answers"]["share"] == 1.0
