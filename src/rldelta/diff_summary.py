"""What a diff makes of its rows: summary.json (totals, per module kind, the experts block, where the sides' dtypes
differ, what could not be paired) and the one-line message of a --strict mismatch. Pure functions of the rows, the
pairing and the options (as summary.json records them)."""

from __future__ import annotations

from rldelta import __version__
from rldelta.checkpoint import Pairing
from rldelta.checkpoint.dtypes import dtype_label, dtype_of_label
from rldelta.metrics.experts import expert_summary
from rldelta.metrics.sparsity import COMPARE_DTYPES, compare_dtype


def mismatch_message(p: Pairing) -> str:
    parts = []
    if p.missing_in_tuned:
        parts.append(f"{len(p.missing_in_tuned)} tensor(s) missing in tuned, e.g. {p.missing_in_tuned[0]!r}")
    if p.extra_in_tuned:
        parts.append(f"{len(p.extra_in_tuned)} extra in tuned, e.g. {p.extra_in_tuned[0]!r}")
    if p.shape_mismatch:
        m = p.shape_mismatch[0]
        parts.append(
            f"{len(p.shape_mismatch)} with different shapes, e.g. {m['name']!r} "
            f"{tuple(m['base_shape'])} vs {tuple(m['tuned_shape'])}"
        )
    if p.dtype_mismatch:
        m = p.dtype_mismatch[0]
        parts.append(
            f"{len(p.dtype_mismatch)} float vs integer, e.g. {m['name']!r} {m['base_dtype']} vs {m['tuned_dtype']}"
        )
    return "checkpoints do not match (--strict): " + "; ".join(parts)


def weighted(rows: list[dict], key: str) -> tuple[float | None, float | None]:
    """Plain and numel-weighted mean of a column over the rows where it is defined."""
    vals = [(r[key], r["numel"]) for r in rows if r.get(key) is not None]
    if not vals:
        return None, None
    plain = sum(v for v, _ in vals) / len(vals)
    weight = sum(w for _, w in vals)
    return plain, (sum(v * w for v, w in vals) / weight if weight else None)


_SHORT = {"float64": "fp64", "float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def mixed_dtypes(rows: list[dict], options: dict) -> dict:
    """Where the two sides are stored in different float dtypes: per (base, tuned) pair of dtypes the dtype they were
    compared in and how many entries differ by the cast alone, and the one line that says it ("base fp32, tuned
    bf16: compared in bf16; 12,345 entries differ by the cast alone"). Empty when every pair shares its dtype."""
    groups: dict[tuple[str, str], dict] = {}
    for r in rows:
        b, t = dtype_of_label(r["dtype_base"]), dtype_of_label(r["dtype_tuned"])
        if b == t or not (b.is_floating_point and t.is_floating_point):
            continue
        loaded = [
            COMPARE_DTYPES[options["load_dtype"]] if options["load_dtype"] and d.itemsize > 1 else d for d in (b, t)
        ]
        g = groups.setdefault((r["dtype_base"], r["dtype_tuned"]), {"tensors": set(), "numel": 0, "cast_changed": 0})
        g["compared_in"] = dtype_label(compare_dtype(options["compare_dtype"], *loaded))
        g["tensors"].add(r["name"])
        g["numel"] += r["numel"]
        g["cast_changed"] += r["cast_changed"]
    if not groups:
        return {}
    mixed = [{"base": b, "tuned": t, **g, "tensors": len(g["tensors"])} for (b, t), g in sorted(groups.items())]
    line = " | ".join(
        f"base {_SHORT.get(m['base'], m['base'])}, tuned {_SHORT.get(m['tuned'], m['tuned'])}: compared in "
        f"{_SHORT.get(m['compared_in'], m['compared_in'])}; {m['cast_changed']:,} entries differ by the cast alone"
        for m in mixed
    )
    return {"mixed_dtypes": mixed, "dtype_note": line}


def summarize(rows: list[dict], pairing: Pairing, options: dict, **context) -> dict:
    """Totals over all diffed tensors and per module kind (across experts), the experts block of an MoE model
    (metrics/experts.py), plus what could not be paired."""
    numel = sum(r["numel"] for r in rows)
    changed = sum(r["changed"] for r in rows)
    changed_atol = sum(r["changed_atol"] for r in rows)
    rank_mean, rank_wmean = weighted(rows, "rank_frac")
    by_module: dict[str, dict] = {}
    for mod in sorted({r["module"] for r in rows}):
        sub = [r for r in rows if r["module"] == mod]
        n = sum(r["numel"] for r in sub)
        m_mean, m_wmean = weighted(sub, "rank_frac")
        by_module[mod] = {
            "tensors": len({r["name"] for r in sub}),  # stored tensors: a stacked experts tensor is one
            "numel": n,
            "changed": sum(r["changed"] for r in sub),
            "changed_frac": sum(r["changed"] for r in sub) / n if n else None,
            "changed_atol_frac": sum(r["changed_atol"] for r in sub) / n if n else None,
            "mean_rank_frac": m_mean,
            "role": sub[0].get("role", "dense"),
            # per-expert rows of one module label: how many (layer, expert) pairs it spans
            "experts": len({(r["layer"], r["expert"]) for r in sub if r.get("expert") is not None}) or None,
        }
    experts = expert_summary(rows)
    return {
        "version": __version__,
        **context,
        "options": options,
        "totals": {
            "tensors": len({r["name"] for r in rows}),
            "numel": numel,
            "changed": changed,
            "changed_frac": changed / numel if numel else None,
            "changed_atol": changed_atol,
            "changed_atol_frac": changed_atol / numel if numel else None,
            "nonfinite": sum(r["nonfinite"] for r in rows),
            "added": sum(r.get("added", 0) for r in rows),  # entries of rows only the tuned side holds
            "cast_changed": sum(r.get("cast_changed", 0) for r in rows),
            "mean_rank_frac": rank_mean,
            "weighted_mean_rank_frac": rank_wmean,
        },
        "by_module": by_module,
        **({"experts": experts} if experts else {}),  # a model without experts: its summary as before
        **mixed_dtypes(rows, options),
        "missing_in_tuned": pairing.missing_in_tuned,
        "extra_in_tuned": pairing.extra_in_tuned,
        "shape_mismatch": pairing.shape_mismatch,
        "dtype_mismatch": pairing.dtype_mismatch,
        "resized": pairing.resized,
        "tied": pairing.tied,
    }
