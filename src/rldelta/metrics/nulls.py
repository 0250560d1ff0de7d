"""Null models: what a structureless update of the same sparsity would look like."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch

from rldelta.metrics.rank import rank_stats


def derive_seed(seed: int, key: str) -> int:
    """A 63-bit seed from (seed, key), stable across processes (Python's hash() is salted per process)."""
    digest = hashlib.sha256(f"{int(seed)}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def random_sparse_matrix(
    shape: tuple[int, int], density: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """fp32 matrix with exactly round(density·numel) N(0, 1) entries at uniformly random positions, zeros elsewhere."""
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density must lie in [0, 1], not {density}")
    m, n = (int(d) for d in shape)
    numel = m * n
    k = round(density * numel)
    out = torch.zeros(numel, dtype=torch.float32)
    if k:
        idx = torch.randperm(numel, generator=generator)[:k]
        out[idx] = torch.randn(k, generator=generator, dtype=torch.float32)
    return out.reshape(m, n)


@dataclass(frozen=True)
class RankNull:
    """Ranks of `samples` random sparse matrices of one shape and density."""

    shape: tuple[int, int]
    density: float
    ranks: tuple[int, ...]
    max_rank: int

    @property
    def rank_frac_mean(self) -> float:
        if not self.ranks or self.max_rank == 0:
            return float("nan")
        return sum(self.ranks) / len(self.ranks) / self.max_rank

    @property
    def rank_frac_std(self) -> float:
        if len(self.ranks) < 2 or self.max_rank == 0:
            return 0.0 if self.ranks else float("nan")
        fr = [r / self.max_rank for r in self.ranks]
        mu = sum(fr) / len(fr)
        return math.sqrt(sum((f - mu) ** 2 for f in fr) / (len(fr) - 1))


def random_sparse_rank_null(shape: tuple[int, int], density: float, *, samples: int = 3, seed: int = 0) -> RankNull:
    """Numerical rank (same tolerance as the diff's) of `samples` random matrices of this shape and density.

    If these are already full-rank, a sparse update being full-rank says nothing beyond its sparsity.
    """
    if len(shape) != 2:
        raise ValueError(f"rank null needs a 2-D shape, got {tuple(shape)}")
    if samples < 1:
        raise ValueError(f"samples must be >= 1, not {samples}")
    g = torch.Generator().manual_seed(int(seed))
    max_rank = min(int(shape[0]), int(shape[1]))
    ranks = []
    for _ in range(samples):
        if round(density * shape[0] * shape[1]) == 0:
            ranks.append(0)  # the zero matrix; no SVD needed
            continue
        ranks.append(rank_stats(random_sparse_matrix(shape, density, g)).rank)
    return RankNull(shape=(int(shape[0]), int(shape[1])), density=float(density), ranks=tuple(ranks), max_rank=max_rank)
