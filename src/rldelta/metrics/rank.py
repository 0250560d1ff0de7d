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
3. The reference's own error: the fp32 SVD returns the exact singular values of a matrix within a backward error
   of Δ, so each of its values is off by at most that error's norm (Weyl). LAPACK states it as p(m, n) ε σ_max; we
   take 4 √L ε σ_max, about three times the largest deviation measured between fp32 and float64 SVDs of Gaussian,
   RL-like and column-scaled matrices from 512 to 2752 rows (at most 1.44 √L ε σ_max, at any singular value).
   Its threshold moves by L ε times that error of σ_max.
A singular value farther than 1 + 2 + 3 from the threshold is on the same side for both methods; a matrix with
one closer is handed to the SVD. At 4096 × 4096 the band is ±6% of the threshold: square updates, whose smallest
singular values sit near it, take the SVD now and then; rectangular ones (far above it) never.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

EPS32 = torch.finfo(torch.float32).eps
U64 = torch.finfo(torch.float64).eps / 2
# The reference fp32 SVD's error, in units of √max(m, n) · eps_fp32 · σ_max (point 3 of the module docstring).
SVD_ERROR = 4.0
# Gram blocks: only the lower triangle is formed (what eigvalsh reads), in blocks of this many rows, which saves
# 3/8 of the float64 multiply at k = 4096; the long side is taken in slices of at most this many float64 entries
# so that no float64 copy of a whole embedding matrix is ever held.
BLOCK = 1024
SLICE_ENTRIES = 1 << 23


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


def gram_lower(a: torch.Tensor) -> torch.Tensor:
    """float64 A·Aᵀ of a (batch, k, L) stack, summed over slices of L; only the lower triangle is valid."""
    batch, k, length = a.shape
    g = torch.zeros(batch, k, k, dtype=torch.float64, device=a.device)
    blocks = [(i, min(i + BLOCK, k)) for i in range(0, k, BLOCK)]
    step = max(1, SLICE_ENTRIES // max(1, batch * k))
    for lo in range(0, length, step):
        x = a[:, :, lo : lo + step].double()
        for bi, (i0, i1) in enumerate(blocks):
            for j0, j1 in blocks[: bi + 1]:
                g[:, i0:i1, j0:j1].baddbmm_(x[:, i0:i1], x[:, j0:j1].transpose(1, 2))
    return g


def _svd_stats(delta: torch.Tensor) -> RankStats:
    m, n = delta.shape
    s = torch.linalg.svdvals(delta.float()).cpu()
    r = numerical_rank(s, (m, n))
    return RankStats(r, min(m, n), r / min(m, n), effective_rank(s), method="svd")


def _undecided(lam: torch.Tensor, fro_sq: float, shape: tuple[int, int]) -> bool:
    """Whether any singular value from the Gram eigenvalues `lam` is within the agreement band of the threshold."""
    long_side, k = max(shape), min(shape)
    lam_max = float(lam[-1])
    if not lam_max > 0:
        return True
    gamma = long_side * U64 / (1 - long_side * U64)
    delta = gamma * fro_sq * (1 + gamma) + k * U64 * lam_max  # 1 + 2; (1 + γ): fro_sq is itself a rounded trace
    sigma = lam.clamp(min=0).sqrt()
    sigma_max = float(sigma[-1])
    gram_err = torch.minimum(torch.full_like(sigma, math.sqrt(delta)), delta / sigma.clamp(min=1e-300))
    svd_err = SVD_ERROR * math.sqrt(long_side) * EPS32 * (sigma_max + math.sqrt(delta))
    tol = sigma_max * long_side * EPS32
    tol_err = long_side * EPS32 * (svd_err + math.sqrt(delta))
    return bool(((sigma - tol).abs() <= gram_err + svd_err + tol_err).any())


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
    g = gram_lower(a)
    fro_sq = torch.diagonal(g, dim1=1, dim2=2).sum(-1).cpu()
    if not bool((fro_sq > 0).all()):  # a sum of exact squares is 0 only for Δ = 0, whose rank is 0
        zero = fro_sq == 0
        out = rank_stats_batch(deltas[~zero]) if bool((~zero).any()) else []
        rest = iter(out)
        return [RankStats(0, k, 0.0, 0.0) if z else next(rest) for z in zero.tolist()]
    out = []
    for i in range(deltas.shape[0]):
        # one matrix at a time: torch's batched CPU eigvalsh took 3.4 s where the 2-D call took 2.4 s (k = 4096)
        try:
            lam = torch.linalg.eigvalsh(g[i], UPLO="L").cpu()
        except RuntimeError:  # no convergence (LAPACK's rare failure): the SVD answers instead
            out.append(_svd_stats(deltas[i]))
            continue
        if _undecided(lam, float(fro_sq[i]), (m, n)):
            out.append(_svd_stats(deltas[i]))
            continue
        sigma = lam.clamp(min=0).sqrt()
        r = numerical_rank(sigma, (m, n))
        out.append(RankStats(r, k, r / k, effective_rank(sigma)))
    return out


def rank_stats(delta: torch.Tensor) -> RankStats:
    """Rank statistics of a 2-D update, with `matrix_rank(delta.float())`'s integer (see the module docstring)."""
    if delta.ndim != 2:
        raise ValueError(f"rank needs a 2-D tensor, got shape {tuple(delta.shape)}")
    return rank_stats_batch(delta.unsqueeze(0))[0]
