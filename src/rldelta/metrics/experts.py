"""Mixture-of-experts numbers: how the change spreads over the experts, the router's change, and how much the
sets of experts two runs touched coincide against chance.

An expert is a (layer, expert index) pair; its entries are those of all its projections (gate, up, down, biases),
whether stored one tensor per expert or stacked (naming.is_stacked). Rows in (tensors.parquet rows as dicts, or
mask tensors), numbers out.

Expert-set overlap is one-sided like the entry overlap, o(A→B) = Σ_l |A_l ∩ B_l| / Σ_l |A_l| over the layers l. Its
chance level draws each layer's A_l at random from the E_l experts of that layer, keeping every set's size:
|A_l ∩ B_l| is then hypergeometric with mean |A_l|·|B_l|/E_l, so random_overlap = Σ_l |A_l||B_l|/E_l / Σ_l |A_l|,
and p_value = P(Σ_l |A_l ∩ B_l| ≥ observed), the layers independent (their pmfs convolved).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np
import torch

from rldelta.naming import is_stacked, parse_param

TOP_SHARE = 0.1  # the top 10% of experts, by changed entries

Expert = tuple[int | None, int]  # (layer, expert index)


def per_expert(rows: Iterable[dict]) -> list[dict]:
    """One entry per expert, sorted by (layer, expert): numel and changed summed over its rows, and the fraction."""
    acc: dict[Expert, list[int]] = {}
    for r in rows:
        if r.get("role") == "expert" and r.get("expert") is not None:
            c = acc.setdefault((r["layer"], r["expert"]), [0, 0])
            c[0] += r["numel"]
            c[1] += r["changed"]
    return [
        {"layer": layer, "expert": e, "numel": n, "changed": ch, "changed_frac": ch / n if n else None}
        for (layer, e), (n, ch) in sorted(acc.items(), key=lambda kv: (_order(kv[0][0]), kv[0][1]))
    ]


def _order(layer: int | None) -> int:
    return -1 if layer is None else layer


def top_share(changed: list[int], share: float = TOP_SHARE) -> tuple[int, float | None]:
    """(k, the share of all changed entries held by the k most-changed experts), k = ⌈share · number of experts⌉;
    None when nothing changed."""
    k = math.ceil(share * len(changed))
    total = sum(changed)
    return k, (sum(sorted(changed, reverse=True)[:k]) / total if total else None)


def expert_summary(rows: list[dict]) -> dict | None:
    """The `experts` block of summary.json; None for a model without experts (nothing is added to its summary)."""
    experts = per_expert(rows)
    if not experts:
        return None
    fracs = np.array([x["changed_frac"] for x in experts if x["changed_frac"] is not None], dtype=np.float64)
    changed = [x["changed"] for x in experts]
    k, share = top_share(changed)
    numel = sum(x["numel"] for x in experts)
    by_layer = []
    for layer in sorted({x["layer"] for x in experts}, key=_order):
        sub = [x for x in experts if x["layer"] == layer]
        n = sum(x["numel"] for x in sub)
        by_layer.append(
            {
                "layer": layer,
                "experts": len(sub),
                "changed_experts": sum(1 for x in sub if x["changed"]),
                "changed_frac": sum(x["changed"] for x in sub) / n if n else None,
            }
        )
    return {
        "experts": len(experts),
        "layers": len(by_layer),
        "changed_experts": sum(1 for c in changed if c),
        "numel": numel,
        "changed": sum(changed),
        "changed_frac": sum(changed) / numel if numel else None,
        "expert_changed_frac": {
            "min": float(fracs.min()) if fracs.size else None,
            "median": float(np.median(fracs)) if fracs.size else None,
            "max": float(fracs.max()) if fracs.size else None,
        },
        "top_experts": k,
        "top10_share": share,
        "by_layer": by_layer,
        "router": _pooled([r for r in rows if r.get("role") == "router"], rank=True),
        "shared_experts": _pooled([r for r in rows if r.get("role") == "shared_expert"], rank=False),
    }


def _pooled(rows: list[dict], rank: bool) -> dict | None:
    """Changed fraction over the rows; with `rank`, each 2-D tensor's rank by layer and their mean rank fraction."""
    if not rows:
        return None
    numel = sum(r["numel"] for r in rows)
    changed = sum(r["changed"] for r in rows)
    out = {"tensors": len(rows), "numel": numel, "changed": changed, "changed_frac": changed / numel if numel else None}
    if rank:
        ranked = [r for r in rows if r.get("rank_frac") is not None]
        out["mean_rank_frac"] = sum(r["rank_frac"] for r in ranked) / len(ranked) if ranked else None
        out["by_layer"] = [
            {k: r[k] for k in ("name", "layer", "changed_frac", "rank", "max_rank", "rank_frac")} for r in ranked
        ]
    return out


# ---- expert sets of a mask, and their overlap across runs --------------------------------------------------------


def mask_expert_counts(name: str, mask: torch.Tensor) -> list[tuple[Expert, int, int]]:
    """(expert, changed, numel) for each expert a stored tensor's mask holds entries of; [] for a non-expert tensor."""
    p = parse_param(name)
    if p.role != "expert":
        return []
    if is_stacked(p, tuple(mask.shape)):
        per = torch.count_nonzero(mask.reshape(mask.shape[0], -1), dim=1).tolist()
        numel = mask[0].numel() if mask.shape[0] else 0
        return [((p.layer, e), int(c), numel) for e, c in enumerate(per)]
    if p.expert is None:
        return []  # an experts tensor neither indexed nor stacked (a 1-D shared bias): no expert of its own
    return [((p.layer, p.expert), int(torch.count_nonzero(mask)), mask.numel())]


def touched(counts: dict[Expert, tuple[int, int]]) -> set[Expert]:
    """Experts with any changed entry."""
    return {x for x, (changed, _) in counts.items() if changed}


def above_median(counts: dict[Expert, tuple[int, int]]) -> set[Expert]:
    """Experts whose changed fraction is above the median of their layer's experts (in this run)."""
    by_layer: dict[int | None, list[tuple[Expert, float]]] = {}
    for x, (changed, numel) in counts.items():
        by_layer.setdefault(x[0], []).append((x, changed / numel if numel else 0.0))
    out = set()
    for items in by_layer.values():
        med = float(np.median([f for _, f in items]))
        out |= {x for x, f in items if f > med}
    return out


EXPERT_SETS: dict[str, Callable[[dict[Expert, tuple[int, int]]], set[Expert]]] = {
    "touched": touched,
    "above_median": above_median,
}


def hypergeom_pmf(pool: int, size_b: int, size_a: int) -> np.ndarray:
    """P(|A ∩ B| = x) for x = 0..min(|A|, |B|), A of `size_a` drawn at random from `pool` items of which `size_b`
    are B's."""
    if not (0 <= size_a <= pool and 0 <= size_b <= pool):
        raise ValueError(f"sets of {size_a} and {size_b} cannot be drawn from {pool}")
    xs = range(min(size_a, size_b) + 1)
    logp = [_log_comb(size_b, x) + _log_comb(pool - size_b, size_a - x) - _log_comb(pool, size_a) for x in xs]
    return np.array([math.exp(v) if v > -math.inf else 0.0 for v in logp], dtype=np.float64)


def _log_comb(n: int, k: int) -> float:
    if k < 0 or k > n:
        return -math.inf
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def set_overlap(a: set[Expert], b: set[Expert], pools: dict[int | None, int]) -> list[dict]:
    """One row per layer of `pools` (layer -> number of experts), then the pooled row (layer None): set sizes, the
    intersection, one-sided overlap |A∩B|/|A|, Jaccard, the hypergeometric random_overlap and p_value."""
    rows = []
    pmf = np.ones(1)
    for layer in sorted(pools, key=_order):
        sa = {x for x in a if x[0] == layer}
        sb = {x for x in b if x[0] == layer}
        layer_pmf = hypergeom_pmf(pools[layer], len(sb), len(sa))
        pmf = np.convolve(pmf, layer_pmf)
        rows.append(_overlap_row(layer, pools[layer], len(sa), len(sb), len(sa & sb), layer_pmf))
    size_a = sum(r["size_a"] for r in rows)
    size_b = sum(r["size_b"] for r in rows)
    inter = sum(r["intersection"] for r in rows)
    expected = sum(r["size_a"] * r["size_b"] / r["experts"] for r in rows if r["experts"])
    pooled = _overlap_row(None, sum(pools.values()), size_a, size_b, inter, pmf)
    pooled["random_overlap"] = expected / size_a if size_a else float("nan")
    return [*rows, pooled]


def _overlap_row(layer: int | None, pool: int, sa: int, sb: int, inter: int, pmf: np.ndarray) -> dict:
    union = sa + sb - inter
    return {
        "layer": layer,
        "experts": pool,
        "size_a": sa,
        "size_b": sb,
        "intersection": inter,
        "overlap": inter / sa if sa else float("nan"),
        "jaccard": inter / union if union else float("nan"),
        "random_overlap": sb / pool if sa and pool else float("nan"),
        "p_value": float(min(1.0, pmf[inter:].sum())),
    }
