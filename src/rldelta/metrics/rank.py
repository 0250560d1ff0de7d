"""Rank of an update matrix: numerical rank (as `torch.linalg.matrix_rank` counts it) and effective rank."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class RankStats:
    rank: int
    max_rank: int
    rank_frac: float
    effective_rank: float


def numerical_rank(s: torch.Tensor, shape: tuple[int, int]) -> int:
    """Count singular values above `matrix_rank`'s default tolerance, σ_max · max(m, n) · eps(dtype).

    Using the same tolerance as `torch.linalg.matrix_rank(delta.float())` keeps results comparable with the
    published study, while one SVD serves both this and the effective rank.
    """
    if s.numel() == 0:
        return 0
    tol = s.max() * max(shape) * torch.finfo(s.dtype).eps
    return int((s > tol).sum())


def effective_rank(s: torch.Tensor) -> float:
    """exp of the Shannon entropy of the singular values normalised to sum 1 (Roy & Vetterli 2007); 0 for Δ = 0."""
    s = s.double()
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s[s > 0] / total
    return float(math.exp(-(p * p.log()).sum()))


def rank_stats(delta: torch.Tensor) -> RankStats:
    """Rank statistics of a 2-D update, computed in fp32 like `matrix_rank(delta.float())`."""
    if delta.ndim != 2:
        raise ValueError(f"rank needs a 2-D tensor, got shape {tuple(delta.shape)}")
    m, n = delta.shape
    max_rank = min(m, n)
    if max_rank == 0:
        return RankStats(0, 0, float("nan"), 0.0)
    s = torch.linalg.svdvals(delta.float())
    r = numerical_rank(s, (m, n))
    return RankStats(rank=r, max_rank=max_rank, rank_frac=r / max_rank, effective_rank=effective_rank(s))
