"""Every verdict rule of study/claims.py and study/why.py on planted numbers, one case per outcome it can give;
each case also checks that the verdict names its comparison and its null or control."""

from __future__ import annotations

import pytest

from rldelta.metrics.stats import difference_interval
from rldelta.study import claims as c
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


# ---- surgery --------------------------------------------------------------------------------------------------

BASE = c.Acc(0.30, 200)
TUNED = c.Acc(0.70, 200)


@pytest.mark.parametrize(
    "kind, mask, control, tuned, expected",
    [
        ("patch", 0.69, 0.35, TUNED, c.REPRODUCES),
        ("patch", 0.55, 0.35, TUNED, c.PARTLY),  # beats random masks but recovers ~62% of the gain
        ("patch", 0.35, 0.60, TUNED, c.DOES_NOT),  # random masks do better
        ("patch", 0.729, 0.688, TUNED, c.INCONCLUSIVE),  # the demo's gap, far inside the interval
        ("patch", 0.70, 0.30, c.Acc(0.31, 200), c.INCONCLUSIVE),  # RL gained nothing beyond noise
        ("revert", 0.31, 0.69, TUNED, c.REPRODUCES),  # resetting the mask loses the gain, random resets do not
        ("revert", 0.50, 0.69, TUNED, c.PARTLY),
        ("revert", 0.69, 0.40, TUNED, c.DOES_NOT),
        ("revert", 0.66, 0.69, TUNED, c.INCONCLUSIVE),
        ("patch", None, None, TUNED, c.NOT_MEASURED),
    ],
)
def test_surgery_rule(kind, mask, control, tuned, expected):
    m = c.Acc(mask, 200) if mask is not None else None
    k = c.Acc(control, 200) if control is not None else None
    v = c.surgery_rule(kind, m, k, tuned, BASE, "the grpo-s0-fp32 mask")
    assert v.verdict == expected, v.text
    _named(v)
    assert "random masks" in v.null and "grpo-s0-fp32" in v.comparison
    assert (
        v.comparison
        == (
            "base + the update on the grpo-s0-fp32 mask vs the same on random masks"
            if kind == "patch"
            else "the tuned model with the grpo-s0-fp32 mask reset vs with random masks reset instead"
        )
        + ", and vs the tuned model whose update was used"
    )
    if expected == c.INCONCLUSIVE:
        assert "test problems" in v.more_data


def test_surgery_inconclusive_names_the_eval_n_that_would_decide():
    v = c.surgery_rule("patch", c.Acc(0.729, 48), c.Acc(0.688, 48), c.Acc(0.70, 48), c.Acc(0.40, 48), "m")
    assert v.verdict == c.INCONCLUSIVE
    lo, hi = difference_interval(round(0.729 * 48), 48, round(0.688 * 48), 48)
    d = round(0.729 * 48) / 48 - round(0.688 * 48) / 48
    need = int(v.more_data.split("about ")[1].split(" ")[0])
    assert need == pytest.approx(48 * ((hi - lo) / 2 / d) ** 2, rel=0.01, abs=1)
    # and at that n the same accuracies would decide it
    big = c.surgery_rule(
        "patch", c.Acc(0.729, need * 2), c.Acc(0.688, need * 2), c.Acc(0.70, need * 2), c.Acc(0.40, need * 2), "m"
    )
    assert big.verdict != c.INCONCLUSIVE


# ---- retrain --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "retrain, full, n, cos, expected",
    [
        (0.70, 0.70, 2000, 0.95, c.REPRODUCES),
        (0.70, 0.70, 2000, 0.50, c.PARTLY),
        (0.40, 0.70, 2000, 0.95, c.PARTLY),
        (0.40, 0.70, 2000, 0.50, c.DOES_NOT),
        (0.70, 0.70, 48, 0.95, c.INCONCLUSIVE),  # equal, but the interval is wider than ±0.1
        (None, None, 48, None, c.NOT_MEASURED),
    ],
)
def test_retrain_rule(retrain, full, n, cos, expected):
    r = c.Acc(retrain, n) if retrain is not None else None
    f = c.Acc(full, n) if full is not None else None
    v = c.retrain_rule(r, f, cos)
    assert v.verdict == expected
    _named(v)


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
        c.surgery_rule("revert", c.Acc(0.3, 10), c.Acc(0.3, 10), TUNED, BASE, "m"),
        c.retrain_rule(None, None, None),
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
