"""Rank of an update matrix: numerical rank (as `torch.linalg.matrix_rank` counts it) and effective rank.

The rank is the published one: the number of singular values of Δ (fp32) above σ_max · max(m, n) · eps_fp32,
`torch.linalg.matrix_rank(delta.float())`'s default. The singular values come from the eigenvalues of the float64
Gram matrix (ΔᵀΔ or ΔΔᵀ, the smaller): two BLAS-3 passes instead of an SVD, about twice as fast on a CPU and
batchable on a GPU. Where an eigenvalue lies too close to the threshold for the two methods to be sure to agree,
that matrix falls back to the fp32 SVD itself, so the integer is `matrix_rank`'s on every matrix.

Why the answers agree, and the bound behind the fallback (u = 2⁻⁵³, ε = eps_fp32, Δ is m×n, k = min(m, n),
L = max(m, n), σ_i the exact singular values of the fp32 Δ):
1. Gram rounding (proven). Δ's fp32 entries are exact in float64 and so are their products (24 + 24 < 53
   bits); only the sums round. Whatever the summation order, |Ĝ − G| ≤ γ_L |Δ|ᵀ|Δ| entrywise, γ_L = Lu/(1 − Lu)
   (Higham, Accuracy and Stability, Lemma 3.1), so ‖Ĝ − G‖₂ ≤ γ_L ‖|Δ|‖₂² ≤ γ_L ‖Δ‖_F².
2. Symmetric eigensolver: LAPACK's documented bound for syevd, |λ̂_i − λ_i(Ĝ)| ≤ p(k) u ‖Ĝ‖₂ with p "a modestly
   growing function"; we take p(k) = k, well above what it shows in practice.
   With δ the sum of 1 and 2 (Weyl), |σ̂_i² − σ_i²| ≤ δ, hence |σ̂_i − σ_i| ≤ min(√δ, δ / σ̂_i).
3. The reference's own error. The fp32 SVD returns the singular values of Δ + E with ‖E‖ ≈ ε σ_max times a
   growing factor (measured: up to 1.6 √L ε σ_max at the largest values). Near the threshold its error is far
   smaller: first-order, σ_i moves by u_iᵀ E v_i, and for the small σ_i of these matrices that was at most
   0.26 ε σ_max for the 26 values within a factor 4 of the threshold on 24 RL-like and sparse square matrices of
   512 to 2048 rows, and at most 0.38 ε σ_max for the 8 smallest values of 16 Gaussian, RL-like and
   column-scaled ones). We take 0.1 √L ε σ_max (6.4 ε σ_max at L = 4096), over ten times that.
   Its threshold moves by L ε times its error of σ_max (the larger, 1.6 √L ε σ_max, is taken there).
A singular value farther than 1 + 2 + 3 from the threshold is on the same side for both methods; a matrix with
one closer is handed to the SVD, so the integer is `matrix_rank`'s whenever the reference errs by less than 3.
At 4096 × 4096 the band is ±0.16% of the threshold (the benchmark's agreement check covers the rest).

A clearly rectangular Δ (k ≤ 0.75 L) has its smallest singular value far above the threshold. There one float64
Cholesky factorization of Ĝ − s·I, with s the squared threshold plus every error above, proves all k singular
values are above it (Rump, "Verification of positive definiteness", BIT 2006: a factorization that runs to the end
in floating point proves definiteness once the shift also covers γ_{k+1} tr(Ĝ)). The spectrum for the effective
rank then comes from fp32 eigenvalues (0.6× the float64 cost; their error is far below what the effective rank
shows). Where the factorization fails, the float64 eigenvalues decide as above.

The certificate needs only the first h = 1.25 k of the L long-side vectors in float64: G = G_h + G_rest with
G_rest ⪰ 0, so λ_min(G) ≥ λ_min(G_h), and h ≥ k vectors of a clearly rectangular update already hold its smallest
singular value well above the threshold. The rest of the Gram, which only the effective rank's spectrum needs, is
summed in fp32 (twice the float64 speed). The threshold is then taken from an upper bound of σ_max that covers
the fp32 part's proven rounding error, γ^{fp32}_{L−h} ‖Δ_rest‖_F². On the benchmark's updates that raises the
threshold 1.14× at 11008 × 4096 and 2× at 32000 × 4096, and the smallest singular value of the first h rows still
lies 30× and 4× above it.
Where the factorization of Ĝ_h fails, the rest is summed in float64 and the whole Gram decides as above. The fp32
part is only taken where max |Δ| lies in [2⁻⁴⁰, 2⁴⁰]: no square overflows, and what underflows adds at most
k·L·2⁻¹⁴⁹ to the Gram, negligible against the squared threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

EPS32 = torch.finfo(torch.float32).eps
U64 = torch.finfo(torch.float64).eps / 2
# The reference fp32 SVD's error in units of √max(m, n) · eps_fp32 · σ_max: near the threshold, and at σ_max
# (point 3 of the module docstring).
SVD_ERROR = 0.1
SVD_ERROR_MAX = 1.6
# Gram: only the lower triangle is formed (what eigvalsh and cholesky read), halving diagonal blocks down to this
# size, so the float64 multiply costs ~53% of a full product; the long side is taken in slices of at most this many
# float64 entries so that no float64 copy of a whole embedding matrix is ever held.
BLOCK = 256
SLICE_ENTRIES = 1 << 23
# k ≤ RECTANGULAR · L: try the Cholesky certificate of full rank first, on the float64 Gram of the first
# CERTIFY_ROWS · k long-side vectors (the rest of the Gram in fp32).
RECTANGULAR = 0.75
CERTIFY_ROWS = 1.25
# The fp32 part of the Gram is only summed where every square is a normal fp32 number.
FP32_RANGE = (2.0**-40, 2.0**40)


@dataclass(frozen=True)
class RankStats:
    rank: int
    max_rank: int
    rank_frac: float
    effective_rank: float
    method: str = "gram"  # "gram", or "svd" where the Gram's answer was too close to call (or Δ too small)


def numerical_rank(s: torch.Tensor, shape: tuple[int, int]) -> int:
    """Count singular values above `matrix_rank`'s default tolerance, σ_max · max(m, n) · eps(fp32)."""
    if s.numel() == 0:
        return 0
    tol = s.max() * max(shape) * EPS32
    return int((s > tol).sum())


def effective_rank(s: torch.Tensor) -> float:
    """exp of the Shannon entropy of the singular values normalised to sum 1 (Roy & Vetterli 2007); 0 for Δ = 0."""
    s = s.double()
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s[s > 0] / total
    return float(math.exp(-(p * p.log()).sum()))


def gram_lower(a: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A·Aᵀ of a (batch, k, L) stack in `dtype`, summed over slices of L; only the lower triangle is valid."""
    batch, k, length = a.shape
    g = torch.zeros(batch, k, k, dtype=dtype, device=a.device)
    step = max(1, SLICE_ENTRIES // max(1, batch * k))
    for lo in range(0, length, step):
        _lower_into(g, a[:, :, lo : lo + step].to(dtype), 0, k)
    return g


def _lower_into(g: torch.Tensor, x: torch.Tensor, i0: int, i1: int) -> None:
    # The off-diagonal half of a diagonal block is one large product; the two diagonal halves recurse.
    if i1 - i0 <= BLOCK:
        g[:, i0:i1, i0:i1].baddbmm_(x[:, i0:i1], x[:, i0:i1].transpose(1, 2))
        return
    mid = (i0 + i1) // 2
    g[:, mid:i1, i0:mid].baddbmm_(x[:, mid:i1], x[:, i0:mid].transpose(1, 2))
    _lower_into(g, x, i0, mid)
    _lower_into(g, x, mid, i1)


def _svd_stats(delta: torch.Tensor) -> RankStats:
    m, n = delta.shape
    s = torch.linalg.svdvals(delta.float()).cpu()
    r = numerical_rank(s, (m, n))
    return RankStats(r, min(m, n), r / min(m, n), effective_rank(s), method="svd")


def _gram_error(fro_sq: float, lam_max: float, shape: tuple[int, int]) -> float:
    """δ: the bound on |λ̂_i − λ_i(ΔᵀΔ)| from the Gram's rounding and the eigensolver (points 1 and 2)."""
    long_side, k = max(shape), min(shape)
    gamma = long_side * U64 / (1 - long_side * U64)
    return gamma * fro_sq * (1 + gamma) + k * U64 * max(lam_max, 0.0)  # (1 + γ): fro_sq is itself a rounded trace


def _reference_band(sigma_max: float, delta: float, shape: tuple[int, int]) -> tuple[float, float]:
    """The threshold (for a σ_max known within √δ) and how far the reference may put a value near it (point 3)."""
    long_side = max(shape)
    root = math.sqrt(long_side) * EPS32
    tol = sigma_max * long_side * EPS32
    tol_err = long_side * EPS32 * (SVD_ERROR_MAX * root * (sigma_max + math.sqrt(delta)) + math.sqrt(delta))
    return tol, SVD_ERROR * root * (sigma_max + math.sqrt(delta)) + tol_err


def _undecided(lam: torch.Tensor, fro_sq: float, shape: tuple[int, int]) -> bool:
    """Whether any singular value from the Gram eigenvalues `lam` is within the agreement band of the threshold."""
    lam_max = float(lam[-1])
    if not lam_max > 0:
        return True
    delta = _gram_error(fro_sq, lam_max, shape)
    sigma = lam.clamp(min=0).sqrt()
    tol, band = _reference_band(float(sigma[-1]), delta, shape)
    gram_err = torch.minimum(torch.full_like(sigma, math.sqrt(delta)), delta / sigma.clamp(min=1e-300))
    return bool(((sigma - tol).abs() <= gram_err + band).any())


def _gamma(n: int, unit: float) -> float:
    return n * unit / (1 - n * unit)


def _full_rank_certified(
    g_head: torch.Tensor, rows: int, lam_max: float, fro_sq: float, shape: tuple[int, int]
) -> bool:
    """Whether one Cholesky factorization proves every singular value above the threshold and its band.

    `g_head` is the float64 Gram of the first `rows` long-side vectors (all of them, or fewer: its definiteness
    proves the whole Gram's); `lam_max` and `fro_sq` bound the whole Gram's largest eigenvalue and ‖Δ‖_F² from above."""
    k = min(shape)
    if not lam_max > 0:
        return False
    delta = _gram_error(fro_sq, lam_max, shape)
    tol, band = _reference_band(math.sqrt(lam_max), delta, shape)
    trace = float(torch.diagonal(g_head).sum())
    head_err = _gamma(rows, U64) * trace * 1.01  # this Gram's own rounding (point 1, over its rows)
    gamma = (k + 1) * U64 / (1 - 2 * (k + 1) * U64)
    shift = (tol + band) ** 2 + delta + head_err + gamma * trace * 1.01  # 1.01: the shift and tr(Ĝ) are rounded
    shifted = g_head.clone()
    shifted.diagonal().sub_(shift)
    return int(torch.linalg.cholesky_ex(shifted, check_errors=False).info) == 0


def rank_stats_batch(deltas: torch.Tensor) -> list[RankStats]:
    """Rank statistics of a (batch, m, n) stack of updates of one shape, on the stack's device."""
    if deltas.ndim != 3:
        raise ValueError(f"rank_stats_batch needs a (batch, m, n) stack, got shape {tuple(deltas.shape)}")
    _, m, n = deltas.shape
    k = min(m, n)
    if k == 0:
        return [RankStats(0, 0, float("nan"), 0.0)] * deltas.shape[0]
    a = deltas.float()
    a = a.transpose(1, 2) if n <= m else a  # (batch, k, L): the Gram on the short side
    amax = torch.maximum(a.amax(dim=(1, 2)), -a.amin(dim=(1, 2))).cpu()  # max |Δ| without an |Δ| copy
    zero = amax == 0
    if bool(zero.any()):  # Δ = 0 has rank 0
        out = rank_stats_batch(deltas[~zero]) if bool((~zero).any()) else []
        rest = iter(out)
        return [RankStats(0, k, 0.0, 0.0) if z else next(rest) for z in zero.tolist()]
    rest_rows = _rest_rows((m, n))
    lo, hi = FP32_RANGE
    if rest_rows and bool(((amax >= lo) & (amax <= hi)).all()):
        head = a.shape[2] - rest_rows
        g_head, g_rest = gram_lower(a[:, :, :head]), gram_lower(a[:, :, head:], torch.float32)
        return [_rectangular(g_head[i], g_rest[i], a[i], (m, n), deltas[i]) for i in range(deltas.shape[0])]
    g = gram_lower(a)
    fro_sq = torch.diagonal(g, dim1=1, dim2=2).sum(-1).cpu()
    return [_from_gram(g[i], float(fro_sq[i]), (m, n), deltas[i]) for i in range(deltas.shape[0])]


def _rectangular(
    g_head: torch.Tensor, g_rest: torch.Tensor, a: torch.Tensor, shape: tuple[int, int], delta: torch.Tensor
) -> RankStats:
    """One matrix whose Gram came in two parts: float64 over the first long-side vectors of `a` (its (k, L) view),
    fp32 over the rest. The certificate reads the float64 part; the spectrum, the two summed in fp32."""
    length = max(shape)
    head = length - _rest_rows(shape)
    fro_head = float(torch.diagonal(g_head).sum()) * (1 + _gamma(head, U64))
    fro_rest = float(torch.diagonal(g_rest).double().sum()) * (1 + 2 * _gamma(length - head, EPS32 / 2))  # bounds above
    fro_sq = fro_head + fro_rest
    try:
        lam32 = torch.linalg.eigvalsh(g_head.float() + g_rest, UPLO="L").double().cpu()
    except RuntimeError:
        return _svd_stats(delta)
    # ‖Ĝ₃₂ − G‖₂: each part's rounding (point 1 for its rows and precision), and the head and the sum rounded to fp32
    err = _gamma(length - head, EPS32 / 2) * fro_rest + _gamma(head, U64) * fro_head + EPS32 * fro_sq
    certified = _certified(g_head, head, lam32, err, fro_sq, shape)
    if certified is not None:
        return certified
    g = g_head + gram_lower(a[None, :, head:])[0]
    return _from_gram(g, float(torch.diagonal(g).sum()), shape, delta, (lam32, err))


def _certified(
    g_head: torch.Tensor, rows: int, lam32: torch.Tensor, err: float, fro_sq: float, shape: tuple[int, int]
) -> RankStats | None:
    """Full rank with the fp32 spectrum `lam32` (of a Gram within `err` of the exact one), where the Cholesky
    certificate on `g_head` proves it; else None."""
    k = min(shape)
    lam_max = float(lam32[-1]) * (1 + 2 * k * EPS32) + err  # p(k) = k for the fp32 eigensolver too
    if not _full_rank_certified(g_head, rows, lam_max, fro_sq, shape):
        return None
    return RankStats(k, k, 1.0, effective_rank(lam32.clamp(min=0).sqrt()))


def _rest_rows(shape: tuple[int, int]) -> int:
    """How many long-side vectors go into the fp32 part of the Gram (0: the whole Gram in float64)."""
    k, length = min(shape), max(shape)
    rest = length - min(length, math.ceil(CERTIFY_ROWS * k))
    return rest if k <= RECTANGULAR * length and rest * EPS32 < 0.1 else 0


def _from_gram(
    g: torch.Tensor,
    fro_sq: float,
    shape: tuple[int, int],
    delta: torch.Tensor,
    spectrum32: tuple[torch.Tensor, float] | None = None,
) -> RankStats:
    """One matrix from its whole float64 Gram; `spectrum32`: fp32 eigenvalues already taken, and their Gram's error."""
    # One matrix at a time: torch's batched CPU eigvalsh took 3.4 s where the 2-D call took 2.4 s (k = 4096).
    k = min(shape)
    try:
        if k <= RECTANGULAR * max(shape):
            lam32, err = spectrum32 or (torch.linalg.eigvalsh(g.float(), UPLO="L").double().cpu(), 0.0)
            certified = _certified(g, max(shape), lam32, err, fro_sq, shape)
            if certified is not None:
                return certified
        lam = torch.linalg.eigvalsh(g, UPLO="L").cpu()
    except RuntimeError:  # no convergence (LAPACK's rare failure): the SVD answers instead
        return _svd_stats(delta)
    if _undecided(lam, fro_sq, shape):
        return _svd_stats(delta)
    sigma = lam.clamp(min=0).sqrt()
    r = numerical_rank(sigma, shape)
    return RankStats(r, k, r / k, effective_rank(sigma))


def rank_stats(delta: torch.Tensor) -> RankStats:
    """Rank statistics of a 2-D update, with `matrix_rank(delta.float())`'s integer (see the module docstring)."""
    if delta.ndim != 2:
        raise ValueError(f"rank needs a 2-D tensor, got shape {tuple(delta.shape)}")
    return rank_stats_batch(delta.unsqueeze(0))[0]
