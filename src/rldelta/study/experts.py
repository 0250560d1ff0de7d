"""The study's mixture-of-experts tables, read from the diffs of the final checkpoints: the changed fraction of every
(layer, expert), summed over that expert's tensors; the routers' change; the summary's experts block; and the
seed-vs-seed overlap of the experts touched. All empty (absent from the report) for a dense model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from rldelta.metrics.experts import per_expert
from rldelta.runtime.files import EXPERT_OVERLAP_TABLE, SUMMARY_FILE, TENSORS_FILE
from rldelta.study.folders import Run, diff_dir, read_json

EXPERT_COLUMNS = ["run", "layer", "expert", "numel", "changed", "changed_frac"]
ROUTER_COLUMNS = ["run", "layer", "module", "numel", "changed", "changed_frac", "rank_frac"]


SUMMARY_COLUMNS = [
    "run",
    "experts",
    "changed_experts",
    "changed_frac",
    "expert_changed_frac_min",
    "expert_changed_frac_median",
    "expert_changed_frac_max",
    "top_experts",
    "top10_share",
    "router_changed_frac",
    "router_mean_rank_frac",
    "shared_expert_changed_frac",
]


def _summary_row(run: str, block: dict[str, Any]) -> dict[str, Any]:
    """The scalar numbers of a diff summary's experts block (metrics/experts.py), one column each."""
    spread = block.get("expert_changed_frac") or {}
    router, shared = block.get("router") or {}, block.get("shared_experts") or {}
    return {
        "run": run,
        **{k: block.get(k) for k in ("experts", "changed_experts", "changed_frac", "top_experts", "top10_share")},
        **{f"expert_changed_frac_{k}": spread.get(k) for k in ("min", "median", "max")},
        "router_changed_frac": router.get("changed_frac"),
        "router_mean_rank_frac": router.get("mean_rank_frac"),
        "shared_expert_changed_frac": shared.get("changed_frac"),
    }


def expert_tables(study: Path, runs: list[Run], overlap: dict | None = None) -> dict[str, pd.DataFrame]:
    """The MoE tables of the final diffs of `runs` ({} when no tensor is a routed expert's).

    experts: run, layer, expert, numel, changed, changed_frac (metrics.experts.per_expert). routers: run, layer, module (mlp.gate,
    mlp.shared_expert_gate, ...), numel, changed, changed_frac, rank_frac. experts_summary: one row per run, the
    scalar numbers of the diff summary's experts block. experts_overlap: overlap_experts.parquet's rows pooled over
    layers (every ordered pair of runs and expert set, against chance), when the overlap stage wrote them.
    """
    expert_frames, router_frames, summary_rows = [], [], []
    for r in runs:
        t = pd.read_parquet(diff_dir(study, r) / TENSORS_FILE)
        if "expert" not in t.columns or not t["expert"].notna().any():
            return {}
        expert_frames.append(
            pd.DataFrame(
                per_expert(t.to_dict("records")), columns=["layer", "expert", "numel", "changed", "changed_frac"]
            )
            .astype({"layer": "int64", "expert": "int64"})
            .assign(run=r.label)
        )
        routers = t[t["role"] == "router"]
        router_frames.append(
            routers.assign(run=r.label, layer=routers["layer"].astype("int64"))[ROUTER_COLUMNS].reset_index(drop=True)
        )
        summary_rows.append(_summary_row(r.label, read_json(diff_dir(study, r) / SUMMARY_FILE).get("experts") or {}))
    tables = {
        "experts": pd.concat(expert_frames, ignore_index=True)[EXPERT_COLUMNS],
        "routers": pd.concat(router_frames, ignore_index=True),
        "experts_summary": pd.DataFrame(summary_rows, columns=SUMMARY_COLUMNS),
    }
    # the overlap stage's expert-level rows (overlap.py), pooled over layers, with run labels for the diff paths
    path = study / "overlap" / EXPERT_OVERLAP_TABLE
    if overlap is not None and path.is_file():
        by_path = {str(diff_dir(study, r)): r.label for r in runs}
        ov = pd.read_parquet(path)
        ov = ov[ov["layer"].isna() & ov["a"].isin(by_path) & ov["b"].isin(by_path)].drop(columns=["layer"])
        tables["experts_overlap"] = ov.assign(a=ov["a"].map(by_path), b=ov["b"].map(by_path)).reset_index(drop=True)
    return tables
