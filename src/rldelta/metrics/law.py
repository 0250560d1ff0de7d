"""The update-sparsity law, pure: where each entry's rounding boundaries are, and how many entries a drift crosses.

An entry of the stored copy (bf16 by default) changes when its fp32 master value leaves the rounding cell of the
stored value: the interval of reals that round to it (round to nearest, ties to even). From the base's own values
the two distances to the cell's edges are exact per entry: ½ ULP each way for a base already stored in that dtype
(¼ ULP toward zero at a power of two), anywhere in [0, ½ ULP] for an fp32 base.

The drift is Adam's: each step moves an entry by lr·m̂/(√v̂+ε). Step 1 moves every entry with a nonzero gradient by
exactly lr (m̂/√v̂ = g/|g|); later steps by lr times a factor that is near 1 where the gradient's sign is consistent
and shrinks where it is not. The law: after T steps an active entry has drifted |D| = ρ·s(T), s(T) = Λ(T)·T^(β−1)
with Λ(T) the summed learning rates, ρ lognormal (μ, σ) over the entries and independent of the entry's place in its
cell (Adam's normalisation removes the gradient's scale), its sign either way with probability ½. A share q of the
entries is active (a row of an unused token never gets a gradient). So the changed fraction is

    F(T) = q · mean over entries of ½·P(ρ·s(T) > d_out) + ½·P(ρ·s(T) > d_in)

with d_out, d_in the entry's exact distances to the cell's edges away from and toward zero (AdamW's weight decay
shortens d_in by Λ(T)·wd·|w|). Per step, an entry whose place in its cell is uniform changes with probability
min(1, ρ_step·lr_t / ULP): ρ_step lognormal (μ_step, σ). q comes from step 1 alone (every active entry moved exactly
lr); μ, σ, β, μ_step are calibrated from a run's first steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.special import erfc, ndtr

BINS_PER_OCTAVE = 64  # distances of an fp32 base are binned in log2 (1/64 octave: ≤ 1.1 % off); bf16's are exact
STORED = ("bf16", "fp16")


def _cells_bf16(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stored value, its two neighbours (toward +inf, toward -inf) and whether its last mantissa bit is set."""
    bits = w.astype(np.float32).view(np.uint32)
    b16 = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint32)  # round to nearest, ties to even
    neg = (b16 & 0x8000) != 0
    mag = b16 & 0x7FFF
    up = np.where(neg, np.where(mag == 0, 0x0001, b16 - 1), b16 + 1)
    dn = np.where(neg, b16 + 1, np.where(mag == 0, 0x8001, b16 - 1))

    def val(x: np.ndarray) -> np.ndarray:
        return (x.astype(np.uint32) << 16).view(np.float32).astype(np.float64)

    return val(b16), val(up), val(dn), (b16 & 1) == 1


def _cells_fp16(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    b = w.astype(np.float32).astype(np.float16)
    odd = (b.view(np.uint16) & 1) == 1
    up, dn = np.nextafter(b, np.float16(np.inf)), np.nextafter(b, np.float16(-np.inf))
    return b.astype(np.float64), up.astype(np.float64), dn.astype(np.float64), odd


def cell_edges(w: np.ndarray, stored: str = "bf16") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lower edge, upper edge, odd) of each entry's rounding cell in the stored dtype, exact in float64: the
    midpoints to the neighbours. A value exactly on an edge rounds to the even side: away from an odd stored value."""
    if stored not in STORED:
        raise ValueError(f"stored dtype must be one of {', '.join(STORED)}, not {stored!r}")
    b, up, dn, odd = (_cells_bf16 if stored == "bf16" else _cells_fp16)(np.asarray(w))
    with np.errstate(invalid="ignore", over="ignore"):
        return (b + dn) / 2, (b + up) / 2, odd


def changed_under_drift(w: np.ndarray, drift: np.ndarray, stored: str = "bf16") -> np.ndarray:
    """Exactly which entries of the stored copy a given fp32 drift changes (drift added in exact arithmetic)."""
    lo, hi, odd = cell_edges(w, stored)
    x = np.asarray(w, np.float64) + np.asarray(drift, np.float64)
    return (x > hi) | (x < lo) | (((x == hi) | (x == lo)) & odd)


def distances(w: np.ndarray, stored: str = "bf16") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per entry: the distance to the cell's edge away from zero (d_out), toward zero (d_in), and the cell's width."""
    lo, hi, _ = cell_edges(w, stored)
    w64 = np.asarray(w, np.float64)
    pos = w64 >= 0
    d_out = np.where(pos, hi - w64, w64 - lo)
    d_in = np.where(pos, w64 - lo, hi - w64)
    return d_out, d_in, hi - lo


def _key(d: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.round(np.log2(np.maximum(d, 1e-45)) * BINS_PER_OCTAVE).astype(np.int64)


def _hist(keys: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    uniq, inv, counts = np.unique(keys, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=weights, minlength=uniq.size) if weights is not None else np.zeros(uniq.size)
    return uniq, counts.astype(np.float64), sums


@dataclass
class Cells:
    """One group of entries (a tensor, a module kind, a layer) reduced to histograms of log2 distances.

    Finite entries only; a bf16 base's distances are exact powers of two, so its histograms are exact."""

    numel: int = 0
    out: dict[int, float] = field(default_factory=dict)  # log2-key of d_out -> count
    inn: dict[int, list[float]] = field(default_factory=dict)  # log2-key of d_in -> [count, sum of |w|]
    ulp: dict[int, float] = field(default_factory=dict)  # log2-key of the cell width -> count

    def add(self, w: np.ndarray, stored: str = "bf16") -> Cells:
        w = np.asarray(w, np.float32).reshape(-1)
        w = w[np.isfinite(w)]
        d_out, d_in, width = distances(w, stored)
        ok = np.isfinite(d_out) & np.isfinite(d_in)
        w, d_out, d_in, width = w[ok], d_out[ok], d_in[ok], width[ok]
        self.numel += int(w.size)
        for k, c, _ in zip(*_hist(_key(d_out)), strict=True):
            self.out[int(k)] = self.out.get(int(k), 0.0) + c
        for k, c, s in zip(*_hist(_key(d_in), np.abs(w).astype(np.float64)), strict=True):
            cur = self.inn.setdefault(int(k), [0.0, 0.0])
            cur[0] += c
            cur[1] += s
        for k, c, _ in zip(*_hist(_key(width)), strict=True):
            self.ulp[int(k)] = self.ulp.get(int(k), 0.0) + c
        return self

    def merge(self, other: Cells) -> Cells:
        self.numel += other.numel
        for k, c in other.out.items():
            self.out[k] = self.out.get(k, 0.0) + c
        for k, (c, s) in other.inn.items():
            cur = self.inn.setdefault(k, [0.0, 0.0])
            cur[0] += c
            cur[1] += s
        for k, c in other.ulp.items():
            self.ulp[k] = self.ulp.get(k, 0.0) + c
        return self

    def arrays(self) -> tuple[np.ndarray, ...]:
        """(d_out values, counts, d_in values, counts, mean |w| per d_in bin, ULP values, counts)."""

        def un(keys) -> np.ndarray:
            return np.exp2(np.fromiter(keys, np.float64) / BINS_PER_OCTAVE)

        inn = sorted(self.inn.items())
        return (
            un(self.out),
            np.fromiter(self.out.values(), np.float64),
            un(k for k, _ in inn),
            np.array([c for _, (c, _) in inn]),
            np.array([s / c if c else 0.0 for _, (c, s) in inn]),
            un(self.ulp),
            np.fromiter(self.ulp.values(), np.float64),
        )


@dataclass(frozen=True)
class Law:
    """The law's calibrated quantities (see the module docstring); q per group name, `default_q` elsewhere."""

    mu: float
    sigma: float
    beta: float
    mu_step: float
    q: dict[str, float] = field(default_factory=dict)
    default_q: float = 1.0


def exceed(d: np.ndarray, s: float, mu: float, sigma: float) -> np.ndarray:
    """P(ρ·s > d) for ρ lognormal (μ, σ); σ = 0 is a point mass at e^μ (an entry crosses iff e^μ·s > d)."""
    with np.errstate(divide="ignore"):
        z = np.log(np.maximum(d, 0) / s) - mu
    if sigma <= 0:
        return (z < 0).astype(np.float64)
    return 0.5 * erfc(z / (sigma * math.sqrt(2)))


def drift_scale(lrs: np.ndarray, t: int, beta: float) -> float:
    """s(t) = Λ(t)·t^(β−1): the summed learning rates, discounted where the gradient's sign wanders (β < 1)."""
    return float(np.sum(lrs[:t])) * t ** (beta - 1)


def changed_frac(arr: tuple[np.ndarray, ...], numel: int, law: Law, q: float, lrs: np.ndarray, t: int, wd: float = 0.0):
    """F(t): the expected share of the group's entries whose stored copy differs from the base after step t."""
    if numel == 0 or t <= 0:
        return 0.0
    d_out, c_out, d_in, c_in, w_in, _, _ = arr
    lam = float(np.sum(lrs[:t]))
    d_in = np.maximum(d_in - lam * wd * w_in, 0.0)
    if t == 1:  # Adam's first step: m̂/√v̂ = ±1, every active entry moves exactly lr
        mu, sigma, s = 0.0, 0.0, float(lrs[0])
    else:
        mu, sigma, s = law.mu, law.sigma, drift_scale(lrs, t, law.beta)
    hit = np.sum(c_out * exceed(d_out, s, mu, sigma)) + np.sum(c_in * exceed(d_in, s, mu, sigma))
    return q * hit / (2 * numel)


def step_frac(arr: tuple[np.ndarray, ...], numel: int, law: Law, q: float, lrs: np.ndarray, t: int, wd: float = 0.0):
    """The expected share changed at step t against step t−1: step 1 is F(1); later, an active entry at a uniform
    place in its cell changes with probability E[min(1, ρ_step·lr_t/ULP)], ρ_step lognormal (μ_step, σ)."""
    if numel == 0 or t <= 0:
        return 0.0
    if t == 1:
        return changed_frac(arr, numel, law, q, lrs, 1, wd)
    ulp, c_ulp = arr[5], arr[6]
    a = float(lrs[t - 1]) / ulp  # min(1, a·ρ): E = a·E[ρ; ρ < 1/a] + P(ρ > 1/a)
    mu, sig = law.mu_step, max(law.sigma, 1e-9)
    lnc = -np.log(a)
    below = a * math.exp(mu + sig**2 / 2) * ndtr((lnc - mu - sig**2) / sig)
    above = 1 - ndtr((lnc - mu) / sig)
    return q * float(np.sum(c_ulp * (below + above))) / numel


def active_share(arr: tuple[np.ndarray, ...], numel: int, lr1: float, observed: float) -> float:
    """q from step 1 alone: the observed share over the share that one move of exactly lr would cross."""
    reach = changed_frac(arr, numel, Law(0, 0, 1, 0), 1.0, np.array([lr1]), 1)
    return 1.0 if reach <= 0 else float(min(1.0, observed / reach))


__all__ = [
    "BINS_PER_OCTAVE",
    "Cells",
    "Law",
    "active_share",
    "cell_edges",
    "changed_frac",
    "changed_under_drift",
    "distances",
    "drift_scale",
    "exceed",
    "step_frac",
]
