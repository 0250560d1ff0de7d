"""Typed results of the engines: what `rldelta.diff(...)` and its siblings return.

Each is a frozen dataclass read from the engine's own record (the dict it also writes as JSON), so the files keep
their schema and `to_dict()` gives that record back unchanged. Fields hold the figures a caller reads most;
everything else stays in the record.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class DiffResult:
    """What [`rldelta.diff`][rldelta.api.diff] found and where it wrote it.

    Attributes:
        out: the output folder.
        totals: the whole model's figures: `tensors`, `numel`, `changed`, `changed_frac`, `changed_atol`,
            `changed_atol_frac`, `nonfinite`, `added`, `cast_changed`, `mean_rank_frac`,
            `weighted_mean_rank_frac` (see the [column reference](../reference/columns.md) for units).
        by_module: per module label (`self_attn.q_proj`, `mlp.experts.gate_proj`, ...), the same figures summed
            over layers (and experts).
        experts: the mixture-of-experts block (changed experts, router, shared experts), or None for a dense model.
        tensors_path: `OUT/tensors.parquet`, one row per tensor.
        summary_path: `OUT/summary.json`, the record `to_dict()` returns.
        mask_path: `OUT/mask.safetensors` when the diff saved its mask, else None.
    """

    out: Path
    totals: Mapping[str, Any]
    by_module: Mapping[str, Mapping[str, Any]]
    experts: Mapping[str, Any] | None
    tensors_path: Path
    summary_path: Path
    mask_path: Path | None
    _record: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_record(cls, record: Mapping[str, Any], out: str | Path) -> DiffResult:
        """The result of a diff whose summary is `record` (the content of `OUT/summary.json`), written to `out`."""
        from rldelta.diff_files import SUMMARY_FILE, TENSORS_FILE
        from rldelta.masks import MASK_FILE

        out = Path(out)
        return cls(
            out=out,
            totals=record["totals"],
            by_module=record["by_module"],
            experts=record.get("experts"),
            tensors_path=out / TENSORS_FILE,
            summary_path=out / SUMMARY_FILE,
            mask_path=out / MASK_FILE if record.get("save_mask") else None,
            _record=record,
        )

    def tensors(self):
        """The per-tensor table (`tensors.parquet`) as a pandas DataFrame."""
        import pandas as pd

        return pd.read_parquet(self.tensors_path)

    def to_dict(self) -> dict[str, Any]:
        """The diff's summary, exactly as `summary.json` holds it (a deep copy)."""
        return copy.deepcopy(dict(self._record))
