"""Sparsity of activations and its link to an update: pure functions, tensors in, numbers out.

Activations are `[tokens, units]` matrices. Sums run in float64 so that a few thousand tokens of a wide layer
give the same numbers as an independent float64 computation. Rows (tokens) on which a per-row measure is
undefined (all zeros, or a single unit) are left out of its mean; a measure with no defined row is NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch


def _matrix(h: torch.Tensor, what: str) -> torch.Tensor:
    if h.ndim != 2:
        raise ValueError(f"{what} needs a [tokens, units] matrix, got shape {tuple(h.shape)}")
    return h.detach().to(torch.float64)


def rms(h: torch.Tensor) -> float:
    """Root mean square over all entries; NaN for an empty tensor."""
    if h.numel() == 0:
        return float("nan")
    return math.sqrt(float(h.detach().to(torch.float64).square().mean()))


def near_zero_frac(h: torch.Tensor, rel: float = 0.01) -> float:
    """Fraction of entries with |h| < rel · RMS(h), the RMS taken over all entries of `h`.

    An all-zero `h` counts as entirely near zero (1.0); an empty one gives NaN.
    """
    x = _matrix(h, "near_zero_frac")
    if x.numel() == 0:
        return float("nan")
    scale = rms(x)
    if scale == 0:
        return 1.0
    return int((x.abs() < rel * scale).sum()) / x.numel()


def hoyer(h: torch.Tensor) -> float:
    """Mean over rows of the Hoyer sparsity (√n − ‖x‖₁/‖x‖₂)/(√n − 1): 0 for a flat row, 1 for one nonzero unit."""
    x = _matrix(h, "hoyer")
    n = x.shape[1]
    if x.shape[0] == 0 or n < 2:
        return float("nan")
    l1 = x.abs().sum(dim=1)
    l2 = x.square().sum(dim=1).sqrt()
    ok = l2 > 0
    if not bool(ok.any()):
        return float("nan")
    root = math.sqrt(n)
    return float(((root - l1[ok] / l2[ok]) / (root - 1)).mean())


def top_mass_share(h: torch.Tensor, frac: float = 0.01) -> float:
    """Mean over rows of the share of the row's L1 mass held by its ceil(frac · n) largest |h| units (at least one)."""
    if not 0 < frac <= 1:
        raise ValueError(f"frac must lie in (0, 1], not {frac}")
    x = _matrix(h, "top_mass_share").abs()
    n = x.shape[1]
    if x.shape[0] == 0 or n == 0:
        return float("nan")
    k = max(1, math.ceil(frac * n))
    total = x.sum(dim=1)
    ok = total > 0
    if not bool(ok.any()):
        return float("nan")
    top = x[ok].topk(k, dim=1).values.sum(dim=1)
    return float((top / total[ok]).mean())


def activation_frequency(a: torch.Tensor, rel: float, *, scale: float | None = None) -> torch.Tensor:
    """Per unit (column): the fraction of tokens with |a| > rel · scale, float64 `[units]`.

    `scale` defaults to RMS(a) over all entries; pass the RMS of a larger token set to count a part of it
    against the threshold of the whole (the counts of the parts then add up).
    """
    x = _matrix(a, "activation_frequency")
    if x.shape[0] == 0:
        return torch.full((x.shape[1],), float("nan"), dtype=torch.float64)
    s = rms(x) if scale is None else float(scale)
    return (x.abs() > rel * s).sum(dim=0).to(torch.float64) / x.shape[0]


def neuron_changed_frac(gate_mask: torch.Tensor | None, up_mask: torch.Tensor, down_mask: torch.Tensor) -> torch.Tensor:
    """Per MLP intermediate neuron i, the fraction of its weights an update changed, float64 `[inter]`.

    Neuron i owns row i of gate_proj and up_proj (`[inter, hidden]`) and column i of down_proj (`[hidden, inter]`);
    `gate_mask` is None for a non-gated MLP.
    """
    if up_mask.ndim != 2 or down_mask.ndim != 2:
        raise ValueError(f"up/down masks must be 2-D, got {tuple(up_mask.shape)} and {tuple(down_mask.shape)}")
    inter, hidden = up_mask.shape
    if tuple(down_mask.shape) != (hidden, inter):
        raise ValueError(
            f"down mask has shape {tuple(down_mask.shape)}, expected {(hidden, inter)} (up is {(inter, hidden)})"
        )
    if gate_mask is not None and tuple(gate_mask.shape) != (inter, hidden):
        raise ValueError(f"gate mask has shape {tuple(gate_mask.shape)}, expected {(inter, hidden)} like up")
    changed = up_mask.sum(dim=1, dtype=torch.int64) + down_mask.sum(dim=0, dtype=torch.int64)
    total = 2 * hidden
    if gate_mask is not None:
        changed += gate_mask.sum(dim=1, dtype=torch.int64)
        total += hidden
    return changed.to(torch.float64) / total if total else torch.full((inter,), float("nan"), dtype=torch.float64)


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, tied values sharing the mean of their ranks (as Spearman's rho needs)."""
    x = np.asarray(x)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1], True])
    mean_rank = (starts[:-1] + starts[1:] - 1) / 2 + 1
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, np.diff(starts))
    return ranks


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2:
        return float("nan")
    dx, dy = x - x.mean(), y - y.mean()
    den = math.sqrt(float(dx @ dx) * float(dy @ dy))
    return float(dx @ dy) / den if den > 0 else float("nan")


def correlation(x: torch.Tensor | np.ndarray | Sequence[float], y: torch.Tensor | np.ndarray | Sequence[float]) -> dict:
    """Pearson and Spearman (Pearson of average ranks) correlation over the pairs where both are finite.

    Returns {"pearson", "spearman", "n"}; a constant side or fewer than two pairs gives NaN.
    """
    xa = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64).reshape(-1)
    ya = np.asarray(y.detach().cpu() if isinstance(y, torch.Tensor) else y, dtype=np.float64).reshape(-1)
    if xa.shape != ya.shape:
        raise ValueError(f"correlation needs equal lengths, got {xa.size} and {ya.size}")
    ok = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[ok], ya[ok]
    return {"pearson": _pearson(xa, ya), "spearman": _pearson(average_ranks(xa), average_ranks(ya)), "n": int(ok.sum())}
