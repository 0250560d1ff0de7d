"""The study's mixture-of-experts tables, read from the diffs of the final checkpoints: the changed fraction of every
(layer, expert), summed over that expert's tensors; the routers' change; the summary's experts block; and the
seed-vs-seed overlap of the experts touched. All empty (absent from the report) for a dense model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from rldelta.diff_files import SUMMARY_FILE, TENSORS_FILE
from rldelta.study.layout import Run, diff_dir, read_json

EXPERT_COLUMNS = ["run", "layer", "expert", "tensors", "numel", "changed", "changed_frac"]
ROUTER_COLUMNS = ["run", "layer", "module", "numel", "changed", "changed_frac", "rank_frac"]


def per_expert(tensors: pd.DataFrame) -> pd.DataFrame:
    """One row per (layer, expert) of a diff's tensors.parquet: the expert's tensors summed (entries, changed)."""
    t = tensors[tensors["expert"].notna()]
    g = (
        t.groupby(["layer", "expert"], sort=True)
        .agg(tensors=("name", "size"), numel=("numel", "sum"), changed=("changed", "sum"))
        .reset_index()
    )
    g["changed_frac"] = g["changed"] / g["numel"]
    return g.astype({"layer": "int64", "expert": "int64", "tensors": "int64", "numel": "int64", "changed": "int64"})


def _flat(block: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The scalar numbers of a (nested) summary block, keys joined by '.'."""
    out: dict[str, Any] = {}
    for k, v in block.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        elif isinstance(v, (int, float)) or v is None:
            out[f"{prefix}{k}"] = v
    return out


def expert_tables(study: Path, runs: list[Run], overlap: dict | None = None) -> dict[str, pd.DataFrame]:
    """The MoE tables of the final diffs of `runs` ({} when no tensor is a routed expert's).

    experts: run, layer, expert, tensors, numel, changed, changed_frac. routers: run, layer, module (mlp.gate,
    mlp.shared_expert_gate, ...), numel, changed, changed_frac, rank_frac. experts_summary: one row per run, the
    scalar numbers of the diff summary's experts block. experts_overlap: the overlap output's expert-level pairs
    (when the overlap stage wrote them).
    """
    expert_frames, router_frames, summary_rows = [], [], []
    for r in runs:
        t = pd.read_parquet(diff_dir(study, r) / TENSORS_FILE)
        if "expert" not in t.columns or not t["expert"].notna().any():
            return {}
        expert_frames.append(per_expert(t).assign(run=r.label))
        routers = t[t["role"] == "router"]
        router_frames.append(
            routers.assign(run=r.label, layer=routers["layer"].astype("int64"))[ROUTER_COLUMNS].reset_index(drop=True)
        )
        block = read_json(diff_dir(study, r) / SUMMARY_FILE).get("experts") or {}
        summary_rows.append({"run": r.label, **_flat(block)})
    tables = {
        "experts": pd.concat(expert_frames, ignore_index=True)[EXPERT_COLUMNS],
        "routers": pd.concat(router_frames, ignore_index=True),
        "experts_summary": pd.DataFrame(summary_rows),
    }
    by_path = {str(diff_dir(study, r)): r.label for r in runs}
    pairs = [p for p in (overlap or {}).get("expert_pairs", []) if p.get("a") in by_path and p.get("b") in by_path]
    if pairs:
        tables["experts_overlap"] = pd.DataFrame(
            [
                {"a": by_path[p["a"]], "b": by_path[p["b"]], **_flat({k: v for k, v in p.items() if k not in "ab"})}
                for p in pairs
            ]
        )
    return tables
