"""Every per-tensor number of `rldelta diff`, from one (base, tuned) pair of tensors."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from rldelta.metrics.rank import rank_stats
from rldelta.metrics.sparsity import as_bits, coverage
from rldelta.runtime.errors import RldeltaError

# Elementwise work runs over slices of this many entries: temporaries stay a few MiB (cache-sized) instead of
# several copies of the whole tensor, which is what bounds memory on an embedding matrix of a large vocabulary.
CHUNK = 1 << 20


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
    rank_method: str | None  # "gram" or "svd" (metrics/rank.py)
    delta_fro: float | None
    base_fro: float | None
    rel_norm: float | None
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

    changed: bits differ after casting both sides to `compare_dtype` (round-to-nearest-even).
    changed_atol: |Δ| > atol with Δ = tuned.float() − base.float(), the form the published study took its rank of.
    Norms accumulate in float64 across chunks. NaN in the same place on both sides is no change. A NaN in either
    norm makes rel_norm NaN too (never 0.0 beside a NaN delta_fro).

    Integer and bool tensors (step counters, masks, quantized codes) are compared bitwise in their own dtype only:
    `changed` and `changed_atol` are the count of differing entries, and every float column (norms, rank) is null.
    The two sides must then have the same dtype (pairing lists a float/int pair as a dtype mismatch instead).

    An RL update touches a minority of entries, so the float work runs only where the value changed: both sides
    are widened to the wider dtype (exact), compared bitwise, and Δ is formed on the gathered changed entries.
    """
    if base.shape != tuned.shape:
        raise RldeltaError(f"shapes differ: base {tuple(base.shape)} vs tuned {tuple(tuned.shape)}")
    numel = base.numel()
    if not (base.is_floating_point() and tuned.is_floating_point()):
        return _bitwise_only(base, tuned)
    wide = torch.promote_types(base.dtype, tuned.dtype)
    b_flat, t_flat = base.reshape(-1), tuned.reshape(-1)
    mask = torch.empty(numel, dtype=torch.bool)
    want_rank = rank and base.ndim == 2
    delta = torch.zeros(numel, dtype=torch.float32) if want_rank else None
    changed = n_atol = n_nonfinite = 0
    delta_sq = base_sq = 0.0
    for lo in range(0, numel, CHUNK):
        hi = min(lo + CHUNK, numel)
        b, t = b_flat[lo:hi], t_flat[lo:hi]
        bw, tw = b.to(wide), t.to(wide)
        if compare_dtype == wide == b.dtype == t.dtype:
            idx = torch.from_numpy(np.flatnonzero(_bits_differ(bw, tw, out=mask[lo:hi])))
            changed += idx.numel()  # the changed entries are the moved ones: no second pass to count them
        else:
            changed += int(np.count_nonzero(_bits_differ(b.to(compare_dtype), t.to(compare_dtype), out=mask[lo:hi])))
            # value changed: widening is exact, so bits differ iff values do
            idx = torch.from_numpy(np.flatnonzero(_bits_differ(bw, tw)))
        t_moved = tw.index_select(0, idx)
        d = t_moved.to(torch.float32) - bw.index_select(0, idx).to(torch.float32)
        if delta is not None:
            delta[lo:hi].index_copy_(0, idx, d)
        n_atol += int(torch.count_nonzero(d.abs() > atol))  # NaN compares False; non-finite is counted apart
        d64 = d.to(torch.float64)
        chunk_dsq = float(torch.dot(d64, d64))
        delta_sq += chunk_dsq
        # upcasts inside the reduction (float64 weights keep their own precision: a norm may not narrow)
        chunk_sq = float(torch.linalg.vector_norm(b, dtype=torch.promote_types(b.dtype, torch.float32))) ** 2
        base_sq += chunk_sq
        if t.is_floating_point():
            if not math.isfinite(chunk_sq):
                n_nonfinite += int(torch.count_nonzero(~torch.isfinite(t)))
            elif not math.isfinite(chunk_dsq):  # base finite here: tuned is finite wherever Δ is
                n_nonfinite += int(torch.count_nonzero(~torch.isfinite(t_moved)))
    mask = mask.reshape(base.shape)
    delta_fro, base_fro = math.sqrt(delta_sq), math.sqrt(base_sq)
    # An SVD of a non-finite Δ is undefined (LAPACK refuses it): such a tensor gets null rank columns.
    rs = rank_stats(delta.reshape(base.shape)) if delta is not None and math.isfinite(delta_sq) else None
    cov = coverage(mask) if mask.ndim == 2 else (None, None)
    stats = DeltaStats(
        numel=numel,
        changed=changed,
        changed_frac=changed / numel if numel else float("nan"),
        changed_atol=n_atol,
        nonfinite=n_nonfinite,
        rank=rs.rank if rs else None,
        max_rank=rs.max_rank if rs else (min(base.shape) if base.ndim == 2 else None),
        rank_frac=rs.rank_frac if rs else None,
        effective_rank=rs.effective_rank if rs else None,
        rank_method=rs.method if rs else None,
        delta_fro=delta_fro,
        base_fro=base_fro,
        rel_norm=_rel_norm(delta_fro, base_fro),
        row_coverage=cov[0],
        col_coverage=cov[1],
    )
    return stats, mask


def _rel_norm(delta_fro: float, base_fro: float) -> float:
    if math.isnan(delta_fro) or math.isnan(base_fro):
        return float("nan")
    return delta_fro / base_fro if base_fro > 0 else (float("inf") if delta_fro > 0 else 0.0)


def _bitwise_only(base: torch.Tensor, tuned: torch.Tensor) -> tuple[DeltaStats, torch.Tensor]:
    """Integer/bool pairs: no float arithmetic is meaningful (an int8 code is not a weight), so only bits count."""
    if base.dtype != tuned.dtype:
        raise RldeltaError(f"dtypes differ: base {base.dtype} vs tuned {tuned.dtype}; only floats are compared across")
    numel = base.numel()
    mask = torch.from_numpy(_bits_differ(base.reshape(-1), tuned.reshape(-1))).reshape(base.shape)
    changed = int(np.count_nonzero(mask.numpy()))
    cov = coverage(mask) if mask.ndim == 2 else (None, None)
    stats = DeltaStats(
        numel=numel,
        changed=changed,
        changed_frac=changed / numel if numel else float("nan"),
        changed_atol=changed,
        nonfinite=0,
        rank=None,
        max_rank=None,
        rank_frac=None,
        effective_rank=None,
        rank_method=None,
        delta_fro=None,
        base_fro=None,
        rel_norm=None,
        row_coverage=cov[0],
        col_coverage=cov[1],
    )
    return stats, mask


def _bits_differ(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> np.ndarray:
    """Where the bits of `a` and `b` differ, as a numpy bool array (written into the bool tensor `out`, if given).

    numpy, not torch: on one core torch's `ne` and `nonzero` take 0.5 ms and 1.7 ms per 1M entries, numpy's
    `not_equal` and `flatnonzero` 0.06 ms and 0.45 ms; they are most of the --no-rank time.
    """
    return np.not_equal(as_bits(a).numpy(), as_bits(b).numpy(), out=None if out is None else out.numpy())


def cosine_parts(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float, float]:
    """(Σ a·b, Σ a², Σ b²) in float64. Summed over tensors, they give the cosine of two whole-model updates
    (Σab / √(Σa²·Σb²)) without holding either update whole."""
    a, b = a.double().reshape(-1), b.double().reshape(-1)
    return float(a @ b), float(a @ a), float(b @ b)
