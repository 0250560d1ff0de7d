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

# the keys of a diff's summary that list tensors it did not compare (or compared in part), in the order shown
SKIPPED = ("missing_in_tuned", "extra_in_tuned", "shape_mismatch", "dtype_mismatch", "resized")


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
        options: the options it ran with (`atol`, `compare_dtype`, `rank`, ...).
        skipped: the tensors not compared, by reason: `missing_in_tuned`, `extra_in_tuned`, `shape_mismatch`,
            `dtype_mismatch` (names), and `resized` (vocabularies whose shared rows were compared).
        dtype_note: where the two sides' dtypes differ, the line saying what the comparison counted; else None.
    """

    out: Path
    totals: Mapping[str, Any]
    by_module: Mapping[str, Mapping[str, Any]]
    experts: Mapping[str, Any] | None
    tensors_path: Path
    summary_path: Path
    mask_path: Path | None
    options: Mapping[str, Any]
    skipped: Mapping[str, list]
    dtype_note: str | None
    _record: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_record(cls, record: Mapping[str, Any], out: str | Path) -> DiffResult:
        """The result of a diff whose summary is `record` (the content of `OUT/summary.json`), written to `out`."""
        from rldelta.runtime.files import MASK_FILE, SUMMARY_FILE, TENSORS_FILE

        out = Path(out)
        return cls(
            out=out,
            totals=record["totals"],
            by_module=record["by_module"],
            experts=record.get("experts"),
            tensors_path=out / TENSORS_FILE,
            summary_path=out / SUMMARY_FILE,
            mask_path=out / MASK_FILE if record.get("save_mask") else None,
            options=record["options"],
            skipped={key: record.get(key) or [] for key in SKIPPED},
            dtype_note=record.get("dtype_note"),
            _record=record,
        )

    def tensors(self):
        """The per-tensor table (`tensors.parquet`) as a pandas DataFrame."""
        import pandas as pd

        return pd.read_parquet(self.tensors_path)

    def to_dict(self) -> dict[str, Any]:
        """The diff's summary, exactly as `summary.json` holds it (a deep copy)."""
        return copy.deepcopy(dict(self._record))


def _table(path: Path):
    import pandas as pd

    return pd.read_parquet(path)


@dataclass(frozen=True)
class OverlapResult:
    """What [`rldelta.overlap`][rldelta.api.overlap] found: how much every ordered pair of change sets shares.

    Attributes:
        out: the output folder.
        inputs: the masks' labels, in the order given.
        pairs: one record per ordered pair (a, b) over all tensors: `size_a`, `size_b`, `intersection`, `overlap`
            (|A∩B|/|A|), `jaccard` and `random_overlap` (its expectation for random sets of the same sizes).
        matrix: `overlap`, `jaccard` and `random_overlap` as k × k lists, row A and column B.
        experts: the expert-level overlap of a mixture-of-experts model, or None.
        table_path: `OUT/overlap.parquet`, per tensor and in total, per ordered pair.
        json_path: `OUT/overlap.json`, the record `to_dict()` returns.
    """

    out: Path
    inputs: list[str]
    pairs: list[Mapping[str, Any]]
    matrix: Mapping[str, list[list[float]]]
    experts: Mapping[str, Any] | None
    table_path: Path
    json_path: Path
    _record: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_record(cls, record: Mapping[str, Any], out: str | Path) -> OverlapResult:
        from rldelta.runtime.files import OVERLAP_JSON, OVERLAP_TABLE

        out = Path(out)
        return cls(
            out=out,
            inputs=record["inputs"],
            pairs=record["pairs"],
            matrix=record["matrix"],
            experts=record.get("experts"),
            table_path=out / OVERLAP_TABLE,
            json_path=out / OVERLAP_JSON,
            _record=record,
        )

    def overlap(self, a: str, b: str) -> float:
        """The one-sided overlap |A∩B|/|A| of the inputs labelled `a` and `b`."""
        return self.matrix["overlap"][self.inputs.index(a)][self.inputs.index(b)]

    def table(self):
        """`overlap.parquet` as a pandas DataFrame."""
        return _table(self.table_path)

    def to_dict(self) -> dict[str, Any]:
        """The record, exactly as `overlap.json` holds it (a deep copy)."""
        return copy.deepcopy(dict(self._record))


@dataclass(frozen=True)
class ExplainResult:
    """What [`rldelta.explain`][rldelta.api.explain]'s null models found (see Concepts: the null models).

    Attributes:
        out: the output folder.
        rounding: the rounding model: `auc` of −|w| for the changed set, `s_star` (the uniform update size that
            reproduces the observed fraction), `precision`, `recall`, `changed_frac_by_decile`, ...
        master: with the fp32 master weights, their changed fraction and the share of updates lost to rounding;
            else None.
        magnitude_matched_overlap: with a second run, the seeds' overlap against random and magnitude-matched
            sets; else None.
        rank_null: per module, the rank of random sparse matrices of the same density; empty when skipped.
        table_path: `OUT/explain.parquet`, per tensor.
        json_path: `OUT/explain.json`, the record `to_dict()` returns.
    """

    out: Path
    rounding: Mapping[str, Any]
    master: Mapping[str, Any] | None
    magnitude_matched_overlap: Mapping[str, Any] | None
    rank_null: Mapping[str, Any] | None
    table_path: Path
    json_path: Path
    _record: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_record(cls, record: Mapping[str, Any], out: str | Path) -> ExplainResult:
        from rldelta.runtime.files import EXPLAIN_JSON, EXPLAIN_TABLE

        out = Path(out)
        return cls(
            out=out,
            rounding=record["rounding"],
            master=record.get("master"),
            magnitude_matched_overlap=record.get("magnitude_matched_overlap"),
            rank_null=record.get("rank_null"),
            table_path=out / EXPLAIN_TABLE,
            json_path=out / EXPLAIN_JSON,
            _record=record,
        )

    def table(self):
        """`explain.parquet` as a pandas DataFrame."""
        return _table(self.table_path)

    def to_dict(self) -> dict[str, Any]:
        """The record, exactly as `explain.json` holds it (a deep copy)."""
        return copy.deepcopy(dict(self._record))


@dataclass(frozen=True)
class SurgeryResult:
    """What [`rldelta.surgery`][rldelta.api.surgery] wrote: a model folder and the record of what went where.

    Attributes:
        kind: `patch` (BASE plus TUNED's update on the mask) or `revert` (TUNED with the mask reset to BASE).
        out: the model folder written (weights, config, tokenizer), readable by `rldelta eval` and the probes.
        totals: `tensors`, `numel`, `masked`, `masked_frac`, `from_tuned`, `from_base`.
        absent_from_mask: tensors the mask does not cover, taken whole from one side.
        json_path: `OUT/surgery.json`, the record `to_dict()` returns.
    """

    kind: str
    out: Path
    totals: Mapping[str, Any]
    absent_from_mask: list[str]
    json_path: Path
    _record: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_record(cls, record: Mapping[str, Any], out: str | Path) -> SurgeryResult:
        from rldelta.runtime.files import SURGERY_JSON

        out = Path(out)
        return cls(
            kind=record["kind"],
            out=out,
            totals=record["totals"],
            absent_from_mask=record["absent_from_mask"],
            json_path=out / SURGERY_JSON,
            _record=record,
        )

    def to_dict(self) -> dict[str, Any]:
        """The record, exactly as `surgery.json` holds it (a deep copy)."""
        return copy.deepcopy(dict(self._record))


@dataclass(frozen=True)
class StudyResult:
    """What [`rldelta.study`][rldelta.api.study] concluded, and where its report and tables are.

    Attributes:
        out: the study folder.
        report_path: `OUT/report.html`, the self-contained report.
        tables_path: `OUT/tables/`, every table of the report as CSV and Parquet.
        headline: the headline numbers, each with its format and, where the data give one, its 95% interval.
        claims: one record per published claim: `claim`, `verdict`, the text, the comparison it rests on.
    """

    out: Path
    report_path: Path
    tables_path: Path
    headline: Mapping[str, Any]
    claims: list[Mapping[str, Any]]
    _record: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> StudyResult:
        return cls(
            out=Path(record["study"]),
            report_path=Path(record["report"]),
            tables_path=Path(record["tables"]),
            headline=record["headline"],
            claims=record["claims"],
            _record=record,
        )

    def verdicts(self) -> dict[str, str]:
        """Each claim's verdict (`reproduces`, `partly`, `does not reproduce`, `inconclusive`), by claim."""
        return {c["claim"]: c["verdict"] for c in self.claims}

    def to_dict(self) -> dict[str, Any]:
        """The record the study engine returns (a deep copy)."""
        return copy.deepcopy(dict(self._record))
