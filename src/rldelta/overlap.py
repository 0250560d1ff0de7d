"""`rldelta overlap`: how much the changed sets of several runs coincide, against what chance would give.

Streams tensor by tensor: for each tensor the N input masks are read (N bool tensors in memory), counted for every
pair, and dropped. Writes OUT/overlap.parquet (per tensor and `__total__` rows for every ordered pair),
OUT/overlap.json (the totals and N×N matrices) and OUT/overlap.png (heat map).

Masks of a mixture-of-experts model are also compared at the expert level, in the same pass: the sets of experts
each run touched (and those above their layer's median changed fraction) overlap against the hypergeometric chance
(metrics/experts.py): OUT/overlap_experts.parquet (per layer and pooled rows, layer null, for every ordered pair and
set) and an `experts` block in overlap.json. A model without experts gets neither.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pyarrow as pa
import torch

from rldelta import __version__
from rldelta.columns import unit_schema
from rldelta.masks import Mask, MaskError, check_compatible, load_mask
from rldelta.metrics.experts import EXPERT_SETS, Expert, mask_expert_counts, set_overlap
from rldelta.metrics.overlap import count, expected_random_overlap, jaccard_from_counts, overlap_from_counts
from rldelta.runtime.atomic import atomic_write_bytes, atomic_write_json, atomic_write_parquet
from rldelta.runtime.files import EXPERT_OVERLAP_TABLE, OVERLAP_JSON, OVERLAP_PNG, OVERLAP_TABLE
from rldelta.runtime.lock import locks_output
from rldelta.runtime.progress import progress_bar

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
EXPERT_OVERLAP_SCHEMA = unit_schema(
    [
        ("a", pa.string()),
        ("b", pa.string()),
        ("expert_set", pa.string()),
        ("layer", pa.int64()),
        ("experts", pa.int64()),
        ("size_a", pa.int64()),
        ("size_b", pa.int64()),
        ("intersection", pa.int64()),
        ("overlap", pa.float64()),
        ("jaccard", pa.float64()),
        ("random_overlap", pa.float64()),
        ("p_value", pa.float64()),
    ]
)
EXPERT_DEFINITION = (
    "an expert (layer, index) is touched when any entry of any of its tensors changed; above_median: its changed "
    "fraction is above the median of its layer's experts in that run. overlap = Σ_l |A_l∩B_l| / Σ_l |A_l|; "
    "random_overlap = Σ_l |A_l|·|B_l|/E_l / Σ_l |A_l| (each layer's set drawn at random from its E_l experts); "
    "p_value = P(Σ_l |A_l∩B_l| ≥ observed) under that draw (hypergeometric per layer, layers independent)"
)


def _labels(inputs: Sequence[str | os.PathLike]) -> list[str]:
    labels = [str(p) for p in inputs]
    if len(set(labels)) != len(labels):
        dup = next(x for x in labels if labels.count(x) > 1)
        raise MaskError(f"{dup}: given more than once")
    return labels


def overlap_rows(  # noqa: C901
    masks: Sequence[Mask], labels: Sequence[str], advance: Callable[[str], None] = lambda n: None
) -> tuple[list[dict], list[dict]]:
    """Per-tensor and total rows for every ordered pair (a ≠ b), one tensor of each mask in memory at a time; and
    the expert-level rows (none for a model without experts)."""
    if len(masks) < 2:
        raise MaskError("overlap needs two or more masks")
    for m in masks[1:]:
        check_compatible(masks[0], m)
    k = len(masks)
    names = masks[0].names()
    sizes = {n: [0] * k for n in names}
    numel = {n: 0 for n in names}
    inter: dict[str, list[list[int]]] = {}
    experts: list[dict[Expert, tuple[int, int]]] = [{} for _ in masks]  # per mask: expert -> (changed, numel)
    for n in names:
        ts = [m.get(n) for m in masks]
        numel[n] = ts[0].numel()
        sizes[n] = [count(t) for t in ts]
        for acc, t in zip(experts, ts):
            for x, changed, size in mask_expert_counts(n, t):
                prev = acc.get(x, (0, 0))
                acc[x] = (prev[0] + changed, prev[1] + size)
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
    return rows, _expert_rows(experts, labels)


def _expert_rows(experts: list[dict[Expert, tuple[int, int]]], labels: Sequence[str]) -> list[dict]:
    """For every ordered pair and kind of expert set: one row per layer and the pooled row (layer None)."""
    if not experts[0]:
        return []
    pools: dict[int | None, int] = {}
    for layer, _ in experts[0]:
        pools[layer] = pools.get(layer, 0) + 1
    rows = []
    for kind, select in EXPERT_SETS.items():
        sets = [select(e) for e in experts]
        for i in range(len(labels)):
            for j in range(len(labels)):
                if i != j:
                    rows += [
                        {"a": labels[i], "b": labels[j], "expert_set": kind, **r}
                        for r in set_overlap(sets[i], sets[j], pools)
                    ]
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
        rows, expert_rows = overlap_rows(masks, labels, advance)
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
    if expert_rows:
        result["experts"] = _expert_result(expert_rows, labels)
        atomic_write_parquet(expert_rows, out / EXPERT_OVERLAP_TABLE, EXPERT_OVERLAP_SCHEMA)
    else:  # an earlier MoE run's table in OUT would pass for this run's
        (out / EXPERT_OVERLAP_TABLE).unlink(missing_ok=True)
    atomic_write_parquet(rows, out / OVERLAP_TABLE, OVERLAP_SCHEMA)
    atomic_write_json(out / OVERLAP_JSON, result)
    if plot:
        from rldelta.plots.overlap import overlap_heatmap  # matplotlib is slow to import: only when plotting

        atomic_write_bytes(out / OVERLAP_PNG, overlap_heatmap(labels, matrix["overlap"], matrix["random_overlap"]))
    return result


def _expert_result(expert_rows: list[dict], labels: list[str]) -> dict:
    """overlap.json's `experts` block: the pooled row of every ordered pair and set, and N×N matrices per set."""
    pooled = [r for r in expert_rows if r["layer"] is None]
    k = len(labels)
    matrix = {}
    for kind in EXPERT_SETS:
        m = {key: [[math.nan] * k for _ in range(k)] for key in ("overlap", "random_overlap", "p_value")}
        for r in (r for r in pooled if r["expert_set"] == kind):
            i, j = labels.index(r["a"]), labels.index(r["b"])
            for key in m:
                m[key][i][j] = r[key]
        matrix[kind] = m
    first = pooled[0]
    layers = len({r["layer"] for r in expert_rows if r["layer"] is not None})
    return {
        "definition": EXPERT_DEFINITION,
        "experts": first["experts"],
        "layers": layers,
        "pairs": pooled,
        "matrix": matrix,
    }
