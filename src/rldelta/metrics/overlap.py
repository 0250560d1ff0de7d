"""Overlap between two sets of changed entries, and what chance alone would give.

Overlap is one-sided, o(A→B) = |A ∩ B| / |A|, as in the published study (arXiv:2505.11711).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rldelta.metrics.stats import matched_intersection_var, null_overlap_interval, random_intersection_var


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


@dataclass
class MatchedOverlap:
    """The magnitude-matched overlap null, summed over tensors: observed and expected intersections, both sets'
    sizes, and the variances of both nulls (cells and tensors are independent under both, so variances add)."""

    inter: int = 0
    size_a: int = 0
    size_b: int = 0
    expected: float = 0.0
    rand_ab: float = 0.0
    rand_ba: float = 0.0
    var_matched: float = 0.0
    var_random: float = 0.0

    def add(self, cells: torch.Tensor, a: torch.Tensor, b: torch.Tensor, n_cells: int) -> dict:
        """One tensor's changed sets `a` (this run) and `b` (the other), flat, with each entry's |w| cell; returns
        the tensor's row fields."""
        n_c, a_c = cell_counts(cells, a, n_cells)
        _, b_c = cell_counts(cells, b, n_cells)
        changed, size_b, numel = count(a), count(b), a.numel()
        inter = count(a & b)
        expected = expected_matched_intersection(a_c, b_c, n_c)
        self.var_matched += matched_intersection_var(a_c, b_c, n_c)
        self.var_random += random_intersection_var(changed, size_b, numel)
        self.inter += inter
        self.size_a += changed
        self.size_b += size_b
        self.expected += expected
        self.rand_ab += changed * size_b / numel if numel else 0.0
        self.rand_ba += size_b * changed / numel if numel else 0.0
        return {
            "other_changed": size_b,
            "intersection": inter,
            "overlap": overlap_from_counts(changed, inter),
            "random_overlap": size_b / numel if changed and numel else None,
            "matched_overlap": expected / changed if changed else None,
        }

    def summary(self, a: str, b: str, bins: str) -> dict:
        """The overlap of `a`'s changed set with `b`'s, observed, at random and magnitude-matched, with both nulls'
        95% ranges, both ways round (explain.json's magnitude_matched_overlap)."""
        return {
            "a": a,
            "b": b,
            "bins": bins,
            "size_a": self.size_a,
            "size_b": self.size_b,
            "intersection": self.inter,
            "observed": overlap_from_counts(self.size_a, self.inter),
            "random": self.rand_ab / self.size_a if self.size_a else None,
            "magnitude_matched": self.expected / self.size_a if self.size_a else None,
            "random_95": list(null_overlap_interval(self.rand_ab, self.var_random, self.size_a))
            if self.size_a
            else None,
            "magnitude_matched_95": list(null_overlap_interval(self.expected, self.var_matched, self.size_a))
            if self.size_a
            else None,
            "observed_b_to_a": overlap_from_counts(self.size_b, self.inter),
            "random_b_to_a": self.rand_ba / self.size_b if self.size_b else None,
            "magnitude_matched_b_to_a": self.expected / self.size_b if self.size_b else None,
        }
