"""Overlap between two sets of changed entries, and what chance alone would give.

Overlap is one-sided, o(A→B) = |A ∩ B| / |A|, as in the published study (arXiv:2505.11711).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def _check(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"masks differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")


def count(mask: torch.Tensor) -> int:
    """Number of True entries (count_nonzero: summing a bool tensor is ~30× slower, it widens to int64)."""
    return int(torch.count_nonzero(mask))


def intersection_size(a: torch.Tensor, b: torch.Tensor) -> int:
    _check(a, b)
    return count(torch.logical_and(a, b))


def pair_counts(a: torch.Tensor, b: torch.Tensor) -> tuple[int, int, int]:
    """(|A|, |B|, |A ∩ B|) for two bool tensors of one shape."""
    _check(a, b)
    return count(a), count(b), count(torch.logical_and(a, b))


def overlap_from_counts(size_a: int, inter: int) -> float:
    """|A ∩ B| / |A|; NaN for an empty A (nothing to overlap)."""
    return inter / size_a if size_a else float("nan")


def jaccard_from_counts(size_a: int, size_b: int, inter: int) -> float:
    """|A ∩ B| / |A ∪ B|; NaN when both are empty."""
    union = size_a + size_b - inter
    return inter / union if union else float("nan")


def one_sided_overlap(a: torch.Tensor, b: torch.Tensor) -> float:
    size_a, _, inter = pair_counts(a, b)
    return overlap_from_counts(size_a, inter)


def jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    return jaccard_from_counts(*pair_counts(a, b))


def expected_random_overlap(size_a: Sequence[int], density_b: Sequence[float]) -> float:
    """Σ_t |A_t|·density(B_t) / Σ_t |A_t|: the overlap if B were drawn at random with its per-tensor densities."""
    if len(size_a) != len(density_b):
        raise ValueError(f"{len(size_a)} sizes but {len(density_b)} densities")
    total = sum(size_a)
    if not total:
        return float("nan")
    return sum(s * d for s, d in zip(size_a, density_b)) / total


def expected_matched_intersection(count_a: torch.Tensor, count_b: torch.Tensor, total: torch.Tensor) -> float:
    """E|A ∩ B| = Σ_c a_c·b_c / n_c if both sets were drawn independently with cell-wise rates a_c/n_c, b_c/n_c.

    Cells are (tensor, |w|-bin); summing this over tensors and dividing by |A| gives the magnitude-matched
    expected overlap.
    """
    if not (count_a.shape == count_b.shape == total.shape):
        raise ValueError("count_a, count_b and total must have one shape")
    a, b, n = count_a.double(), count_b.double(), total.double()
    if bool(((a > n) | (b > n)).any()):
        raise ValueError("a cell holds more changed entries than entries")
    keep = n > 0
    return float((a[keep] * b[keep] / n[keep]).sum())


def magnitude_matched_overlap(count_a: torch.Tensor, count_b: torch.Tensor, total: torch.Tensor) -> float:
    """Expected o(A→B) when each set is random within cells but keeps its per-cell change rate."""
    size_a = float(count_a.double().sum())
    if not size_a:
        return float("nan")
    return expected_matched_intersection(count_a, count_b, total) / size_a


def cell_counts(cells: torch.Tensor, mask: torch.Tensor, n_cells: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(entries per cell, masked entries per cell) for integer cell ids in [0, n_cells)."""
    _check(cells, mask)
    flat, m = cells.reshape(-1), mask.reshape(-1)
    return torch.bincount(flat, minlength=n_cells), torch.bincount(flat[m], minlength=n_cells)
