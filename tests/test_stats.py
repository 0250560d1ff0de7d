"""Every interval of metrics/stats.py against scipy or a direct computation (simulation, regression on ranks)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats as st

from rldelta.metrics import stats


def test_quantiles_match_scipy():
    assert stats.Z95 == pytest.approx(st.norm.ppf(0.975), abs=1e-12)
    for df in range(1, 31):
        assert stats.t95(df) == pytest.approx(st.t.ppf(0.975, df), abs=1e-9), df
    assert stats.t95(200) == pytest.approx(st.t.ppf(0.975, 200), rel=0.01)
    with pytest.raises(ValueError):
        stats.t95(0)


@pytest.mark.parametrize("k,n", [(0, 10), (3, 10), (10, 10), (35, 48), (24, 48), (1, 200), (150, 200)])
def test_wilson_matches_scipy(k, n):
    ci = st.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    lo, hi = stats.wilson_interval(k, n)
    assert lo == pytest.approx(ci.low, abs=1e-9) and hi == pytest.approx(ci.high, abs=1e-9)


def test_wilson_edge_cases():
    assert stats.wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        stats.wilson_interval(11, 10)
    assert stats.accuracy_interval(0.75, 48) == stats.wilson_interval(36, 48)


def test_newcombe_difference_by_definition_and_coverage():
    # Definition: the interval is built from the two Wilson intervals.
    k1, n1, k2, n2 = 35, 48, 33, 48
    l1, u1 = stats.wilson_interval(k1, n1)
    l2, u2 = stats.wilson_interval(k2, n2)
    d = k1 / n1 - k2 / n2
    lo, hi = stats.difference_interval(k1, n1, k2, n2)
    assert lo == pytest.approx(d - math.hypot(k1 / n1 - l1, u2 - k2 / n2))
    assert hi == pytest.approx(d + math.hypot(u1 - k1 / n1, k2 / n2 - l2))
    assert lo < 0 < hi  # the demo's 0.729 vs 0.688 at n = 48: no difference shown
    # Coverage: simulated pairs of binomials; the true difference lies inside ~95% of the time.
    rng = np.random.default_rng(0)
    p1, p2, n = 0.7, 0.55, 60
    a, b = rng.binomial(n, p1, 3000), rng.binomial(n, p2, 3000)
    inside = np.mean(
        [(lambda iv: iv[0] <= p1 - p2 <= iv[1])(stats.difference_interval(x, n, y, n)) for x, y in zip(a, b)]
    )
    assert 0.93 <= inside <= 0.975


def test_n_to_decide_shrinks_the_interval_below_the_difference():
    n = stats.n_to_decide(0.04, 0.19, 48)
    assert 0.19 * math.sqrt(48 / n) <= 0.04 < 0.19 * math.sqrt(48 / (n - 1))
    # and a Wilson interval at that n, at the same accuracy, is indeed about that narrow
    lo, hi = stats.accuracy_interval(0.7, n)
    lo48, hi48 = stats.accuracy_interval(0.7, 48)
    assert (hi - lo) / (hi48 - lo48) == pytest.approx(math.sqrt(48 / n), rel=0.1)
    assert stats.n_to_decide(0.0, 0.1, 48) is None


def test_mean_interval_matches_scipy():
    xs = [0.61, 0.66, 0.58, 0.70]
    r = stats.mean_interval(xs + [None, float("nan")])
    lo, hi = st.t.interval(0.95, len(xs) - 1, loc=np.mean(xs), scale=st.sem(xs))
    assert r["k"] == 4 and r["mean"] == pytest.approx(np.mean(xs))
    assert r["sd"] == pytest.approx(np.std(xs, ddof=1))
    assert r["lo"] == pytest.approx(lo) and r["hi"] == pytest.approx(hi)
    assert stats.mean_interval([0.5])["lo"] is None
    assert stats.mean_interval([])["mean"] is None


def test_seeds_to_decide_is_the_first_k_that_clears():
    k = stats.seeds_to_decide(0.12, 0.05, 0.09, have=3)
    assert st.t.ppf(0.975, k - 1) * 0.05 / math.sqrt(k) < 0.03
    assert st.t.ppf(0.975, k - 2) * 0.05 / math.sqrt(k - 1) >= 0.03
    assert stats.seeds_to_decide(0.09, 0.05, 0.09, have=3) is None


def test_random_intersection_var_is_hypergeometric():
    a, b, n = 30, 50, 400
    assert stats.random_intersection_var(a, b, n) == pytest.approx(st.hypergeom(n, b, a).var())


def test_matched_null_interval_against_permutations():
    # Two cells (e.g. small and large |w|); sets placed at random within each cell, many times.
    total = torch.tensor([300, 700])
    ca, cb = torch.tensor([60, 20]), torch.tensor([90, 35])
    var = stats.matched_intersection_var(ca, cb, total)
    exact = sum(st.hypergeom(int(n), int(b), int(a)).var() for a, b, n in zip(ca, cb, total))
    assert var == pytest.approx(exact)
    rng = np.random.default_rng(1)
    inters = []
    for _ in range(4000):
        s = 0
        for a, b, n in zip(ca.tolist(), cb.tolist(), total.tolist()):
            A = rng.permutation(n) < a
            B = rng.permutation(n) < b
            s += int(np.sum(A & B))
        inters.append(s)
    inters = np.array(inters)
    expected = float((ca * cb / total).sum())
    assert inters.mean() == pytest.approx(expected, rel=0.02)
    assert inters.var() == pytest.approx(var, rel=0.1)
    lo, hi = stats.null_overlap_interval(expected, var, float(ca.sum()))
    share_inside = np.mean((inters / float(ca.sum()) >= lo) & (inters / float(ca.sum()) <= hi))
    assert 0.93 <= share_inside <= 0.98


def test_partial_spearman_against_residual_regression():
    rng = np.random.default_rng(2)
    w = rng.normal(size=500)
    x = w + rng.normal(scale=0.5, size=500)
    y = w + rng.normal(scale=0.5, size=500)  # x and y related only through w
    plain = st.spearmanr(x, y).statistic
    part = stats.partial_spearman(x, y, w)
    # independent computation: regress the ranks of x and y on the ranks of w, correlate the residuals
    rx, ry, rw = (st.rankdata(v) for v in (x, y, w))
    design = np.c_[np.ones(500), rw]
    ex = rx - design @ np.linalg.lstsq(design, rx, rcond=None)[0]
    ey = ry - design @ np.linalg.lstsq(design, ry, rcond=None)[0]
    assert part["spearman"] == pytest.approx(np.corrcoef(ex, ey)[0, 1], abs=1e-9)
    assert plain > 0.5 and abs(part["spearman"]) < 0.15 and part["n"] == 500
    assert math.isnan(stats.partial_spearman([1, 2], [1, 2], [2, 1])["spearman"])
