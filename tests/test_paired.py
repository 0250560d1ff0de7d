"""Paired statistics against scipy, exact enumeration and simulation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from rldelta.metrics.paired import (
    POWER,
    gain_share,
    mcnemar_exact,
    n_to_decide,
    paired_difference,
    power_difference,
    power_equivalence,
    sign_flip_p,
    tost,
)
from rldelta.runtime.errors import RldeltaError


def test_sign_flip_p_is_scipys_exact_permutation_test():
    rng = np.random.default_rng(1)
    for n in (5, 9, 12):
        d = rng.normal(0.4, 1.0, n)
        ref = stats.permutation_test(
            (d,), np.mean, permutation_type="samples", n_resamples=np.inf, alternative="two-sided"
        ).pvalue
        assert sign_flip_p(d) == pytest.approx(ref, abs=1e-12)


def test_sign_flip_p_by_hand_enumeration():
    d = np.array([1.0, 2.0, -0.5, 3.0])
    means = [abs(np.dot(s, d)) / 4 for s in itertools.product((1, -1), repeat=4)]
    assert sign_flip_p(d) == pytest.approx(np.mean([m >= abs(d.mean()) - 1e-12 for m in means]))


def test_sign_flip_p_monte_carlo_tracks_the_t_test_for_large_n():
    d = np.random.default_rng(2).normal(0.3, 1.0, 60)
    assert sign_flip_p(d) == pytest.approx(stats.ttest_1samp(d, 0).pvalue, abs=0.02)


def test_paired_difference_interval_against_scipy_bootstrap():
    rng = np.random.default_rng(3)
    a = rng.normal(0, 1, 80)
    b = a - 0.3 + rng.normal(0, 0.5, 80)
    r = paired_difference(a, b)
    ref = stats.bootstrap((a - b,), np.mean, method="percentile", n_resamples=20_000, random_state=0)
    assert r["difference"] == pytest.approx(np.mean(a - b))
    assert r["lo"] == pytest.approx(ref.confidence_interval.low, abs=0.015)
    assert r["hi"] == pytest.approx(ref.confidence_interval.high, abs=0.015)
    assert r["sd"] == pytest.approx(np.std(a - b, ddof=1))
    assert r["p"] < 0.01 and r["n"] == 80


def test_pairing_decides_where_unpaired_intervals_straddle():
    """Problems of very different difficulty, model a a little better on each: the unpaired (Welch) interval
    straddles 0, the paired one does not."""
    rng = np.random.default_rng(4)
    difficulty = rng.normal(0, 3, 40)
    a = difficulty + 0.5 + rng.normal(0, 0.2, 40)
    b = difficulty + rng.normal(0, 0.2, 40)
    welch = stats.ttest_ind(a, b, equal_var=False).confidence_interval()
    assert welch.low < 0 < welch.high
    r = paired_difference(a, b)
    assert r["lo"] > 0 and r["p"] < 0.001


def test_gain_share_is_the_ratio_of_mean_paired_gains():
    base = np.array([-3.0, -2.0, -4.0, -1.0, -2.5] * 8)
    tuned = base + 2.0
    patch = base + 1.5
    r = gain_share(patch, base, tuned)
    assert r["share"] == pytest.approx(0.75) and r["lo"] == pytest.approx(0.75) and r["hi"] == pytest.approx(0.75)
    noisy = patch + np.random.default_rng(5).normal(0, 0.5, 40)
    r = gain_share(noisy, base, tuned)
    assert r["lo"] < r["share"] < r["hi"]
    assert math.isnan(gain_share(patch, base, base)["share"])


def test_mcnemar_exact_against_scipy_binomtest():
    a = np.array([1] * 9 + [0] * 2 + [1] * 20 + [0] * 10)
    b = np.array([0] * 9 + [1] * 2 + [1] * 20 + [0] * 10)
    r = mcnemar_exact(a, b)
    assert (r["only_a"], r["only_b"]) == (9, 2)
    assert r["p"] == pytest.approx(stats.binomtest(9, 11, 0.5).pvalue)
    assert mcnemar_exact(a, a)["p"] == 1.0
    with pytest.raises(RldeltaError, match="0/1"):
        mcnemar_exact(a * 0.5, b)


def test_tost_against_two_scipy_one_sided_tests():
    rng = np.random.default_rng(6)
    a = rng.normal(0, 1, 50)
    b = a + rng.normal(0.05, 0.3, 50)
    r = tost(a, b, 0.2)
    d = a - b
    p_low = stats.ttest_1samp(d, -0.2, alternative="greater").pvalue
    p_high = stats.ttest_1samp(d, 0.2, alternative="less").pvalue
    assert r["p"] == pytest.approx(max(p_low, p_high))
    ci = stats.ttest_1samp(d, 0).confidence_interval(confidence_level=0.9)
    assert (r["lo"], r["hi"]) == pytest.approx((ci.low, ci.high))
    assert r["equivalent"] is True
    assert tost(a, b, 0.02)["equivalent"] is False


def _simulated_power(n, effect, sd, test, sims=4000):
    rng = np.random.default_rng(7)
    d = rng.normal(effect, sd, size=(sims, n))
    return float(np.mean([test(row) for row in d]))


def test_power_of_the_paired_t_test_matches_simulation():
    n, effect, sd = 20, 0.5, 1.0
    sim = _simulated_power(n, effect, sd, lambda r: stats.ttest_1samp(r, 0).pvalue < 0.05)
    assert power_difference(n, effect, sd) == pytest.approx(sim, abs=0.03)


def test_power_of_tost_matches_simulation():
    n, effect, sd, margin = 30, 0.1, 1.0, 0.6
    zeros = np.zeros(n)
    sim = _simulated_power(n, effect, sd, lambda r: tost(r, zeros, margin)["equivalent"])
    assert power_equivalence(n, effect, sd, margin) == pytest.approx(sim, abs=0.03)


def test_n_to_decide_is_the_first_n_with_enough_power():
    need = n_to_decide(lambda n: power_difference(n, 0.3, 1.0), 10)
    assert power_difference(need, 0.3, 1.0) >= POWER > power_difference(need - 1, 0.3, 1.0)
    assert n_to_decide(lambda n: power_difference(n, 0.0, 1.0), 10) is None


def test_bad_paired_input_is_one_error():
    with pytest.raises(RldeltaError, match="one value per problem"):
        paired_difference([1, 2], [1, 2, 3])
    with pytest.raises(RldeltaError, match="finite"):
        paired_difference([1, float("nan")], [1, 2])
