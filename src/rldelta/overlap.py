"""`rldelta overlap`: how much the changed sets of several runs coincide, against what chance would give.

Streams tensor by tensor: for each tensor the N input masks are read (N bool tensors in memory), counted for every
pair, and dropped. Writes OUT/overlap.parquet (per tensor and `__total__` rows for every ordered pair),
OUT/overlap.json (the totals and N×N matrices) and OUT/overlap.png (heat map).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pyarrow as pa
import torch

from rldelta import __version__
from rldelta.atomic import atomic_write_bytes, atomic_write_json, atomic_write_parquet
from rldelta.columns import unit_schema
from rldelta.lock import locks_output
from rldelta.masks import Mask, MaskError, check_compatible, load_mask
from rldelta.metrics.overlap import count, expected_random_overlap, jaccard_from_counts, overlap_from_counts
from rldelta.progress import progress_bar

OVERLAP_TABLE = "overlap.parquet"
OVERLAP_JSON = "overlap.json"
OVERLAP_PNG = "overlap.png"
TOTAL = "__total__"

OVERLAP_SCHEMA = unit_schema(
    [
        ("a", pa.string()),
        ("b", pa.string()),
        ("tensor", pa.string()),
        ("size_a", pa.int64()),
        ("size_b", pa.int64()),
        ("intersection", pa.int64()),
        ("overlap", pa.float64()),
        ("jaccard", pa.float64()),
        ("random_overlap", pa.float64()),
    ]
)


def _labels(inputs: Sequence[str | os.PathLike]) -> list[str]:
    labels = [str(p) for p in inputs]
    if len(set(labels)) != len(labels):
        dup = next(x for x in labels if labels.count(x) > 1)
        raise MaskError(f"{dup}: given more than once")
    return labels


def overlap_rows(
    masks: Sequence[Mask], labels: Sequence[str], advance: Callable[[str], None] = lambda n: None
) -> list[dict]:
    """Per-tensor and total rows for every ordered pair (a ≠ b), one tensor of each mask in memory at a time."""
    if len(masks) < 2:
        raise MaskError("overlap needs two or more masks")
    for m in masks[1:]:
        check_compatible(masks[0], m)
    k = len(masks)
    names = masks[0].names()
    sizes = {n: [0] * k for n in names}
    numel = {n: 0 for n in names}
    inter: dict[str, list[list[int]]] = {}
    for n in names:
        ts = [m.get(n) for m in masks]
        numel[n] = ts[0].numel()
        sizes[n] = [count(t) for t in ts]
        grid = [[0] * k for _ in range(k)]
        for i in range(k):
            for j in range(i + 1, k):
                grid[i][j] = grid[j][i] = count(torch.logical_and(ts[i], ts[j]))
        inter[n] = grid
        del ts
        advance(n)

    def density(j: int, n: str) -> float:
        return sizes[n][j] / numel[n] if numel[n] else 0.0

    rows = []
    for i in range(k):
        for j in range(k):
            if i == j:
                continue
            for n in names:
                sa, sb, x = sizes[n][i], sizes[n][j], inter[n][i][j]
                rows.append(_row(labels[i], labels[j], n, sa, sb, x, density(j, n) if sa else float("nan")))
            sa = sum(sizes[n][i] for n in names)
            sb = sum(sizes[n][j] for n in names)
            x = sum(inter[n][i][j] for n in names)
            rnd = expected_random_overlap([sizes[n][i] for n in names], [density(j, n) for n in names])
            rows.append(_row(labels[i], labels[j], TOTAL, sa, sb, x, rnd))
    return rows


def _row(a: str, b: str, tensor: str, sa: int, sb: int, x: int, rnd: float) -> dict:
    return {
        "a": a,
        "b": b,
        "tensor": tensor,
        "size_a": sa,
        "size_b": sb,
        "intersection": x,
        "overlap": overlap_from_counts(sa, x),
        "jaccard": jaccard_from_counts(sa, sb, x),
        "random_overlap": rnd,
    }


@locks_output("overlap")
def run_overlap(
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    progress: bool = False,
    plot: bool = True,
) -> dict:
    """Overlap of every ordered pair of masks (files or diff dirs); writes OUT/overlap.{parquet,json,png}.

    Returns the content of overlap.json.
    """
    labels = _labels(inputs)
    if len(labels) < 2:
        raise MaskError("overlap needs two or more masks or diff directories")
    masks = [load_mask(p) for p in inputs]
    for m in masks[1:]:
        check_compatible(masks[0], m)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with progress_bar("overlap", len(masks[0]), progress) as advance:
        rows = overlap_rows(masks, labels, advance)
    totals = [r for r in rows if r["tensor"] == TOTAL]
    k = len(labels)
    matrix = {
        key: [[1.0 if i == j else math.nan for j in range(k)] for i in range(k)]
        for key in ("overlap", "jaccard", "random_overlap")
    }
    for r in totals:
        i, j = labels.index(r["a"]), labels.index(r["b"])
        for key in matrix:
            matrix[key][i][j] = r[key]
    result = {
        "version": __version__,
        "inputs": labels,
        "tensors": len(masks[0]),
        "numel": masks[0].numel,
        "definition": "overlap = |A∩B|/|A| (one-sided); random_overlap = Σ_t |A_t|·density(B_t)/|A|",
        "pairs": totals,
        "matrix": matrix,
    }
    atomic_write_parquet(rows, out / OVERLAP_TABLE, OVERLAP_SCHEMA)
    atomic_write_json(out / OVERLAP_JSON, result)
    if plot:
        from rldelta.plots.overlap import overlap_heatmap  # matplotlib is slow to import: only when plotting

        atomic_write_bytes(out / OVERLAP_PNG, overlap_heatmap(labels, matrix["overlap"], matrix["random_overlap"]))
    return result
