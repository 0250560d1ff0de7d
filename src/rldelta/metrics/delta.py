"""Every per-tensor number of `rldelta diff`, from one (base, tuned) pair of tensors."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from rldelta.metrics.rank import rank_stats
from rldelta.metrics.sparsity import changed_atol, changed_bitwise, coverage, nonfinite


@dataclass(frozen=True)
class DeltaStats:
    numel: int
    changed: int
    changed_frac: float
    changed_atol: int
    nonfinite: int
    rank: int | None
    max_rank: int | None
    rank_frac: float | None
    effective_rank: float | None
    delta_fro: float
    base_fro: float
    rel_norm: float
    row_coverage: float | None
    col_coverage: float | None

    def as_row(self) -> dict:
        return asdict(self)


def delta_stats(
    base: torch.Tensor,
    tuned: torch.Tensor,
    *,
    compare_dtype: torch.dtype,
    atol: float,
    rank: bool = True,
) -> tuple[DeltaStats, torch.Tensor]:
    """Numbers for one tensor pair, and the bitwise-changed mask they were counted from.

    Δ is tuned.float() − base.float(), the form the published study took its rank of.
    """
    if base.shape != tuned.shape:
        raise ValueError(f"shapes differ: base {tuple(base.shape)} vs tuned {tuple(tuned.shape)}")
    mask = changed_bitwise(base, tuned, compare_dtype)
    delta = tuned.to(torch.float32, copy=True)  # a copy even when tuned is fp32: the caller's tensor stays intact
    delta -= base.float()
    numel = base.numel()
    changed = int(mask.sum())
    n_atol = int(changed_atol(delta, atol).sum())
    delta_fro = float(torch.linalg.vector_norm(delta, dtype=torch.float64))
    base_fro = float(torch.linalg.vector_norm(base, dtype=torch.float64))
    rs = rank_stats(delta) if (rank and delta.ndim == 2) else None
    cov = coverage(mask) if mask.ndim == 2 else (None, None)
    stats = DeltaStats(
        numel=numel,
        changed=changed,
        changed_frac=changed / numel if numel else float("nan"),
        changed_atol=n_atol,
        nonfinite=nonfinite(tuned),
        rank=rs.rank if rs else None,
        max_rank=rs.max_rank if rs else (min(base.shape) if base.ndim == 2 else None),
        rank_frac=rs.rank_frac if rs else None,
        effective_rank=rs.effective_rank if rs else None,
        delta_fro=delta_fro,
        base_fro=base_fro,
        rel_norm=delta_fro / base_fro if base_fro > 0 else float("inf") if delta_fro > 0 else 0.0,
        row_coverage=cov[0],
        col_coverage=cov[1],
    )
    return stats, mask
