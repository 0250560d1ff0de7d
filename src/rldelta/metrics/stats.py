"""Uncertainty of the numbers a verdict reads: 95% intervals for accuracies (Wilson) and their differences
(Newcombe), the null distribution of a set overlap under random placement (exact hypergeometric moments, the
permutation null), the spread of a mean over seeds (Student t), a partial Spearman correlation, and how much more
data would decide a comparison that the present data leaves open. Pure functions of numbers; no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from rldelta.metrics.activations import average_ranks

# The two-sided 95% normal quantile (scipy.stats.norm.ppf(0.975)).
Z95 = 1.959963984540054
# Two-sided 95% Student t quantiles t(0.975, df) for df = 1..30 (scipy.stats.t.ppf); beyond 30 the normal one is
# within 4% and is used (the verdicts need two decimals of an interval, not more).
_T95 = (
    12.706204736174698,
    4.302652729749464,
    3.182446305284263,
    2.7764451051977934,
    2.570581835636314,
    2.446911851144969,
    2.3646242515927844,
    2.306004135204166,
    2.2621571628540993,
    2.2281388519649385,
    2.200985160082949,
    2.1788128296634177,
    2.1603686564610127,
    2.1447866879169273,
    2.131449545559323,
    2.1199052992210112,
    2.1098155778331806,
    2.10092204024096,
    2.093024054408263,
    2.0859634472658364,
    2.079613844727662,
    2.0738730679040147,
    2.0686576104190406,
    2.0638985616280205,
    2.059538552753294,
    2.055529438642871,
    2.0518305164802833,
    2.048407141795244,
    2.045229642132703,
    2.0422724563012373,
)


def t95(df: int) -> float:
    """The two-sided 95% Student t quantile for `df` degrees of freedom (the normal one beyond 30)."""
    if df < 1:
        raise ValueError(f"t95 needs df >= 1, not {df}")
    return _T95[df - 1] if df <= len(_T95) else Z95


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion successes/n; (0, 1) when n is 0 (nothing is known)."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie in [0, n={n}], not {successes}")
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy_interval(accuracy: float, n: int) -> tuple[float, float]:
    """The Wilson interval of an accuracy measured on n problems (accuracy·n correct, rounded to whole problems)."""
    return wilson_interval(round(accuracy * n), n)


def difference_interval(k1: float, n1: int, k2: float, n2: int, z: float = Z95) -> tuple[float, float]:
    """Newcombe's hybrid score interval for p1 − p2 of two independent proportions (his method 10, from the two
    Wilson intervals). Evaluations on the same test problems are paired, for which this is conservative."""
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson_interval(k1, n1, z)
    l2, u2 = wilson_interval(k2, n2, z)
    d = p1 - p2
    lo = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    hi = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return max(-1.0, lo), min(1.0, hi)


def n_to_decide(diff: float, half_width: float, n: int) -> int | None:
    """Eval n at which an interval of `half_width` at `n` would shrink below |diff| (the width goes as 1/√n);
    None when the difference is 0 (no n decides it)."""
    if diff == 0 or not math.isfinite(diff):
        return None
    return max(n + 1, math.ceil(n * (half_width / abs(diff)) ** 2))


def mean_interval(values: Sequence[float]) -> dict:
    """Mean, sample sd and the 95% t interval of the mean of `values` (NaN and None dropped); lo/hi None for fewer
    than two values."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    k = len(xs)
    if not k:
        return {"mean": None, "sd": None, "lo": None, "hi": None, "k": 0}
    m = sum(xs) / k
    if k < 2:
        return {"mean": m, "sd": None, "lo": None, "hi": None, "k": 1}
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (k - 1))
    half = t95(k - 1) * sd / math.sqrt(k)
    return {"mean": m, "sd": sd, "lo": m - half, "hi": m + half, "k": k}


def seeds_to_decide(mean: float, sd: float, threshold: float, have: int, most: int = 1000) -> int | None:
    """The fewest values (seeds) whose 95% t interval of the mean, at this sd, would clear `threshold`; None when
    the mean sits on the threshold or more than `most` would be needed."""
    gap = abs(mean - threshold)
    if gap == 0 or sd is None:
        return None
    if sd == 0:
        return have + 1
    for k in range(max(2, have + 1), most + 1):
        if t95(k - 1) * sd / math.sqrt(k) < gap:
            return k
    return None


def random_intersection_var(a: float, b: float, n: float) -> float:
    """Variance of |A ∩ B| when A (a entries) and B (b entries) are placed at random among n: hypergeometric,
    a·b·(n−a)·(n−b) / (n²·(n−1)). This is the permutation null of an overlap, exactly."""
    if n <= 1:
        return 0.0
    return a * b * (n - a) * (n - b) / (n * n * (n - 1))


def matched_intersection_var(count_a: torch.Tensor, count_b: torch.Tensor, total: torch.Tensor) -> float:
    """Variance of |A ∩ B| when both sets are placed at random within each cell (tensor × |w| bin) keeping their
    per-cell counts: the sum of the cells' hypergeometric variances (cells are independent)."""
    if not (count_a.shape == count_b.shape == total.shape):
        raise ValueError("count_a, count_b and total must have one shape")
    a, b, n = count_a.double(), count_b.double(), total.double()
    keep = n > 1
    a, b, n = a[keep], b[keep], n[keep]
    return float((a * b * (n - a) * (n - b) / (n * n * (n - 1))).sum())


def null_overlap_interval(expected: float, var: float, size_a: float, z: float = Z95) -> tuple[float, float]:
    """The central 95% range of the overlap |A ∩ B|/|A| under a null with this expected intersection and variance
    (normal approximation to a sum of many hypergeometric cells)."""
    if not size_a:
        return float("nan"), float("nan")
    half = z * math.sqrt(max(var, 0.0))
    return max(0.0, (expected - half) / size_a), min(1.0, (expected + half) / size_a)


def partial_spearman(x: Sequence[float], y: Sequence[float], z: Sequence[float]) -> dict:
    """Spearman correlation of x and y with z held fixed: the Pearson partial correlation of their average ranks,
    (r_xy − r_xz·r_yz) / √((1 − r_xz²)(1 − r_yz²)). Pairs with a non-finite value are dropped; NaN when a side
    is constant or fewer than three are left."""
    xa, ya, za = (np.asarray(v, dtype=np.float64).reshape(-1) for v in (x, y, z))
    if not (xa.shape == ya.shape == za.shape):
        raise ValueError(f"partial_spearman needs equal lengths, got {xa.size}, {ya.size}, {za.size}")
    ok = np.isfinite(xa) & np.isfinite(ya) & np.isfinite(za)
    n = int(ok.sum())
    if n < 3:
        return {"spearman": float("nan"), "n": n}
    with np.errstate(invalid="ignore", divide="ignore"):  # a constant side gives NaN, which is the answer
        r = np.corrcoef(np.vstack([average_ranks(xa[ok]), average_ranks(ya[ok]), average_ranks(za[ok])]))
    rxy, rxz, ryz = r[0, 1], r[0, 2], r[1, 2]
    den = math.sqrt(max((1 - rxz * rxz) * (1 - ryz * ryz), 0.0))
    return {"spearman": float((rxy - rxz * ryz) / den) if den > 1e-12 else float("nan"), "n": n}
