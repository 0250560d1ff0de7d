"""Paired statistics: two models scored on the same problems, compared problem by problem.

Every evaluated model of a study answers the same test problems, so the comparisons are paired and the per-problem
differences carry the evidence (the problems' own difficulty cancels out). Here: the mean difference with a paired
bootstrap interval and a sign-flip permutation p-value; a share of a paired gain (how much of RL's gain a patched
model keeps) with its bootstrap interval; the exact McNemar test for 0/1 outcomes; the paired equivalence test
(TOST) within a margin; and the number of problems that would decide a comparison at 80% power, from the observed
paired spread and the noncentral t. Pure functions of arrays; no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

from rldelta.runtime.errors import RldeltaError

# Resamples of the paired bootstrap and of the Monte Carlo sign-flip test; above EXACT_FLIPS problems the 2^n
# sign patterns are sampled instead of enumerated.
RESAMPLES = 10_000
EXACT_FLIPS = 16
POWER = 0.8
ALPHA = 0.05


def _pairs(a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(a, dtype=np.float64).reshape(-1), np.asarray(b, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise RldeltaError(f"paired scores need one value per problem on both sides, got {x.size} and {y.size}")
    if not x.size:
        raise RldeltaError("paired scores need at least one problem")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise RldeltaError("paired scores must be finite (a NaN or inf score was given)")
    return x, y


def _indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """Bootstrap resamples of problem indices; the same seed gives the same resamples to every comparison."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def sign_flip_p(d: np.ndarray, *, resamples: int = RESAMPLES, seed: int = 0) -> float:
    """Two-sided p of the mean of paired differences `d` under the sign-flip null (each difference as likely
    positive as negative): exact enumeration of the 2^n patterns up to EXACT_FLIPS problems, Monte Carlo above."""
    d = np.asarray(d, dtype=np.float64)
    n = d.size
    observed = abs(d.mean())
    if n <= EXACT_FLIPS:
        signs = 1 - 2 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)
    else:
        signs = 1 - 2 * np.random.default_rng(seed).integers(0, 2, size=(resamples, n))
    means = np.abs(signs @ d) / n
    tol = 1e-12 * max(1.0, observed)  # equal means that differ only by summation order count as equal
    p = float((means >= observed - tol).mean())
    return p if n <= EXACT_FLIPS else (p * resamples + 1) / (resamples + 1)


def paired_difference(a: Sequence[float], b: Sequence[float], *, resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """Mean of a − b over problems, its 95% paired bootstrap (percentile) interval, the sign-flip p-value, the sd
    of the per-problem differences and n."""
    x, y = _pairs(a, b)
    d = x - y
    boot = d[_indices(d.size, resamples, seed)].mean(axis=1)
    lo, hi = np.quantile(boot, [0.025, 0.975])
    return {
        "difference": float(d.mean()),
        "lo": float(lo),
        "hi": float(hi),
        "p": sign_flip_p(d, resamples=resamples, seed=seed),
        "sd": float(d.std(ddof=1)) if d.size > 1 else 0.0,
        "n": int(d.size),
    }


def gain_share(
    model: Sequence[float],
    base: Sequence[float],
    tuned: Sequence[float],
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> dict:
    """The share of RL's paired gain that `model` keeps: mean(model − base) / mean(tuned − base), with its 95%
    paired bootstrap interval (the same problems resampled in numerator and denominator). A revert's share of the
    gain it removes is 1 − this. NaN where the tuned model gained nothing."""
    m, b = _pairs(model, base)
    _, t = _pairs(model, tuned)
    num, den = m - b, t - b
    if abs(den.mean()) < 1e-12:
        return {"share": float("nan"), "lo": float("nan"), "hi": float("nan"), "n": int(m.size)}
    idx = _indices(m.size, resamples, seed)
    bn, bd = num[idx].mean(axis=1), den[idx].mean(axis=1)
    ok = np.abs(bd) > 1e-12
    lo, hi = np.quantile(bn[ok] / bd[ok], [0.025, 0.975])
    return {"share": float(num.mean() / den.mean()), "lo": float(lo), "hi": float(hi), "n": int(m.size)}


def mcnemar_exact(a: Sequence[float], b: Sequence[float]) -> dict:
    """The exact McNemar test of two 0/1 outcomes on the same problems: b01 = problems only `b` solved, b10 = only
    `a` solved; p = two-sided binomial test of b10 among the discordant pairs at 1/2."""
    x, y = _pairs(a, b)
    if not (np.isin(x, (0, 1)).all() and np.isin(y, (0, 1)).all()):
        raise RldeltaError("McNemar's test needs 0/1 outcomes")
    only_a, only_b = int(((x == 1) & (y == 0)).sum()), int(((x == 0) & (y == 1)).sum())
    k = only_a + only_b
    p = 1.0 if k == 0 else float(min(1.0, 2 * stats.binom.cdf(min(only_a, only_b), k, 0.5)))
    return {"only_a": only_a, "only_b": only_b, "p": p, "n": int(x.size)}


def tost(a: Sequence[float], b: Sequence[float], margin: float, *, alpha: float = ALPHA) -> dict:
    """Paired two one-sided t tests of |mean(a − b)| < margin: equivalent when both one-sided p < alpha, which is
    the (1 − 2·alpha) t interval of the mean difference lying inside ±margin."""
    if not margin > 0:
        raise RldeltaError(f"an equivalence margin must be > 0, not {margin}")
    x, y = _pairs(a, b)
    d = x - y
    n, m = d.size, float(d.mean())
    if n < 2:
        return {"difference": m, "lo": float("nan"), "hi": float("nan"), "p": 1.0, "equivalent": False, "n": n}
    se = float(d.std(ddof=1)) / math.sqrt(n)
    half = stats.t.ppf(1 - alpha, n - 1) * se
    if se == 0:
        p = 0.0 if abs(m) < margin else 1.0
    else:
        p = float(max(stats.t.sf((m + margin) / se, n - 1), stats.t.cdf((m - margin) / se, n - 1)))
    return {"difference": m, "lo": m - half, "hi": m + half, "p": p, "equivalent": p < alpha, "n": n}


def power_difference(n: int, effect: float, sd: float, *, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t test at level alpha to detect a mean difference `effect` with per-problem
    sd `sd` on n problems (noncentral t)."""
    if n < 2 or sd <= 0:
        return float("nan")
    df, nc = n - 1, abs(effect) / sd * math.sqrt(n)
    crit = stats.t.ppf(1 - alpha / 2, df)
    return float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))


def power_equivalence(n: int, effect: float, sd: float, margin: float, *, alpha: float = ALPHA) -> float:
    """Power of the paired TOST within ±margin when the true difference is `effect` (noncentral t, both sides)."""
    if n < 2 or sd <= 0 or abs(effect) >= margin:
        return 0.0 if n >= 2 and sd > 0 else float("nan")
    df, se = n - 1, sd / math.sqrt(n)
    crit = stats.t.ppf(1 - alpha, df)
    upper = stats.nct.cdf(-crit, df, (effect - margin) / se)  # P(reject "d >= margin")
    lower = stats.nct.sf(crit, df, (effect + margin) / se)  # P(reject "d <= -margin")
    return float(max(0.0, upper + lower - 1))


def n_to_decide(power_at, have: int, *, most: int = 100_000) -> int | None:
    """The fewest problems (more than `have`) at which power_at(n) reaches POWER; None when none up to `most`."""
    if not power_at(most) >= POWER:
        return None
    lo, hi = max(2, have + 1), most
    while lo < hi:  # power grows with n in both tests: bisect
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if power_at(mid) < POWER else (lo, mid)
    return lo
