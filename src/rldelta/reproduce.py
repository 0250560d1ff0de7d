"""`rldelta reproduce`: diff every published pair of a catalog and put the published figures beside the measured.

A catalog (TOML, one shipped in `rldelta/catalogs/`, see its header for the format) lists pairs of checkpoints
with the sparsity and rank published for them. Each pair that is local, cached or downloadable is diffed
(`run_diff`), and where its base is bf16 the rounding null is measured on the changed set (`run_explain`: the
share of changed entries in the lowest |w| decile and the AUC of −|w|). A pair that cannot be had gets the verdict
"not available" with the reason, and no number.

Output, in OUT: reproduce.parquet/.csv (one row per pair), by_module.parquet/.csv (per pair and module kind),
reproduce.json (the catalog and the rows), and pairs/<name>/ (each pair's diff and explain folders).
"""

from __future__ import annotations

import io
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import torch

from rldelta.catalog import (
    DEFAULT_CATALOG,
    Catalog,
    Gap,
    PublishedPair,
    ReproduceError,
    load_catalog,
    published_figures,
)
from rldelta.checkpoint import FetchPlan, open_checkpoint, plan, resolve_checkpoint
from rldelta.columns import is_missing, unit_schema
from rldelta.diff import run_diff
from rldelta.explain import run_explain
from rldelta.runtime.atomic import atomic_write_bytes, atomic_write_json, atomic_write_parquet
from rldelta.runtime.errors import RldeltaError
from rldelta.runtime.files import MASK_FILE, TENSORS_FILE

REPRODUCE_TABLE = "reproduce.parquet"
REPRODUCE_CSV = "reproduce.csv"
BY_MODULE_TABLE = "by_module.parquet"
BY_MODULE_CSV = "by_module.csv"
REPRODUCE_JSON = "reproduce.json"
PAIRS_DIR = "pairs"
NOT_AVAILABLE = "not available"

REPRODUCE_SCHEMA = unit_schema(
    [
        ("name", pa.string()),
        ("algorithm", pa.string()),
        ("base", pa.string()),
        ("tuned", pa.string()),
        ("status", pa.string()),
        ("dtype_base", pa.string()),
        ("dtype_tuned", pa.string()),
        ("numel", pa.int64()),
        ("changed", pa.int64()),
        ("changed_atol", pa.int64()),
        ("added", pa.int64()),
        ("published_sparsity", pa.float64()),
        ("published_sparsity_source", pa.string()),
        ("published_sparsity_alt", pa.float64()),
        ("published_sparsity_alt_source", pa.string()),
        ("published_sparsity_1e8", pa.float64()),
        ("published_sparsity_1e7", pa.float64()),
        ("published_sparsity_1e6", pa.float64()),
        ("published_tolerance_source", pa.string()),
        ("published_range_lo", pa.float64()),
        ("published_range_hi", pa.float64()),
        ("published_range_source", pa.string()),
        ("sparsity_bitwise", pa.float64()),
        ("sparsity_atol", pa.float64()),
        ("predicted_sparsity", pa.float64()),
        ("predicted_lo", pa.float64()),
        ("predicted_hi", pa.float64()),
        ("predicted_note", pa.string()),
        ("lr", pa.float64()),
        ("steps", pa.int64()),
        ("hyper_source", pa.string()),
        ("sparsity_verdict", pa.string()),
        ("sparsity_alt_verdict", pa.string()),
        ("sparsity_1e8_verdict", pa.string()),
        ("range_verdict", pa.string()),
        ("published_rank", pa.float64()),
        ("published_rank_source", pa.string()),
        ("mean_rank_frac", pa.float64()),
        ("rank_verdict", pa.string()),
        ("lowest_decile_share", pa.float64()),
        ("auc", pa.float64()),
        ("verdict", pa.string()),
        ("note", pa.string()),
        ("published_in", pa.string()),
    ]
)
BY_MODULE_SCHEMA = unit_schema(
    [
        ("pair", pa.string()),
        ("module", pa.string()),
        ("tensors", pa.int64()),
        ("numel", pa.int64()),
        ("changed_frac", pa.float64()),
        ("changed_atol_frac", pa.float64()),
        ("mean_rank_frac", pa.float64()),
    ]
)


def figure_verdict(published: float, measured: float | None, points: float) -> str:
    """matches / differs by X points / no published figure / not available, for one figure (fractions in)."""
    if is_missing(measured):
        return NOT_AVAILABLE
    if math.isnan(published):
        return "no published figure"
    diff = 100 * (measured - published)
    return "matches" if abs(diff) <= points else f"differs by {diff:+.1f} points"


def _select(catalog: Catalog, only: list[str] | None) -> list[PublishedPair]:
    if not only:
        return catalog.pairs
    names = {p.name for p in catalog.pairs}
    unknown = [n for n in only if n not in names]
    if unknown:
        raise ReproduceError(f"--only {unknown[0]}: no such pair in {catalog.path} (pairs: {', '.join(sorted(names))})")
    return [p for p in catalog.pairs if p.name in only]


def dry_run(catalog: Catalog, only: list[str] | None = None) -> list[dict]:
    """What reproducing would fetch, per pair and side: nothing (local, cached), files and bytes, or why not."""
    rows = []
    for pair in _select(catalog, only):
        for side, spec in (("base", pair.base), ("tuned", pair.tuned)):
            fp: FetchPlan = plan(spec)
            rows.append(
                {
                    "pair": pair.name,
                    "side": side,
                    "spec": spec,
                    "status": fp.status,
                    "files": len(fp.files),
                    "bytes": fp.bytes,
                    "reason": fp.reason,
                    "published": published_figures(pair) if side == "base" else "",
                }
            )
    return rows


def range_verdict(lo: float, hi: float, measured: float | None) -> str:
    """within the published range / outside it by X points / no published figure / not available (fractions in)."""
    if is_missing(measured):
        return NOT_AVAILABLE
    if math.isnan(lo) or math.isnan(hi):
        return "no published figure"
    if lo <= measured <= hi:
        return "within the published range"
    off = 100 * (measured - (hi if measured > hi else lo))
    return f"outside the published range by {off:+.1f} points"


def _row(pair: PublishedPair, points: float, **measured) -> dict:
    row: dict = dict.fromkeys(REPRODUCE_SCHEMA.names)
    lo, hi = pair.sparsity_range
    row.update(
        name=pair.name,
        algorithm=pair.algorithm,
        base=pair.base,
        tuned=pair.tuned,
        published_sparsity=pair.sparsity,
        published_sparsity_source=pair.sparsity_source,
        published_sparsity_alt=pair.sparsity_alt,
        published_sparsity_alt_source=pair.sparsity_alt_source,
        published_sparsity_1e8=pair.sparsity_1e8,
        published_sparsity_1e7=pair.sparsity_1e7,
        published_sparsity_1e6=pair.sparsity_1e6,
        published_tolerance_source=pair.tolerance_source,
        published_range_lo=lo,
        published_range_hi=hi,
        published_range_source=pair.range_source,
        published_rank=pair.rank,
        published_rank_source=pair.rank_source,
        lr=pair.lr,
        steps=pair.steps,
        hyper_source=pair.hyper_source,
        note=pair.note,
        published_in=pair.published_in,
    )
    row.update(measured)
    verdicts = ("sparsity_verdict", "sparsity_alt_verdict", "sparsity_1e8_verdict", "range_verdict", "rank_verdict")
    if row["status"] == "measured":
        row["sparsity_verdict"] = figure_verdict(pair.sparsity, row["sparsity_atol"], points)
        row["sparsity_alt_verdict"] = figure_verdict(pair.sparsity_alt, row["sparsity_atol"], points)
        row["sparsity_1e8_verdict"] = figure_verdict(pair.sparsity_1e8, row["sparsity_bitwise"], points)
        row["range_verdict"] = range_verdict(lo, hi, row["sparsity_atol"])
        row["rank_verdict"] = figure_verdict(pair.rank, row["mean_rank_frac"], points)
        said = [(k, row[k]) for k in verdicts if row[k] != "no published figure"] or [
            ("sparsity_verdict", row["sparsity_verdict"])
        ]
        label = {"sparsity_verdict": "sparsity", "sparsity_alt_verdict": "sparsity (2nd figure)"}
        label |= {"sparsity_1e8_verdict": "bitwise vs 1e-8", "range_verdict": "range", "rank_verdict": "rank"}
        row["verdict"] = "; ".join(f"{label[k]}: {v}" for k, v in said)
    else:
        row.update(dict.fromkeys(verdicts, NOT_AVAILABLE))
    return row


def _measure(pair: PublishedPair, folder: Path, rank: bool, workers: int, progress) -> tuple[dict, list[dict]]:
    """Diff one pair (and its rounding null where the base is bf16); the table row's measured part, per-module."""
    base, tuned = resolve_checkpoint(pair.base), resolve_checkpoint(pair.tuned)
    diff_dir = folder / "diff"
    # the rounding null needs the changed-mask (as large as the model in bools): only written where it is measured
    bf16 = all(i.dtype == torch.bfloat16 for i in open_checkpoint(base).infos.values())
    # as the paper read its pairs (`torch_dtype=bfloat16` on both sides): a base published in fp32 is rounded first,
    # so the cast itself is no change, for the bitwise count, the tolerance and the rank alike
    summary = run_diff(
        base,
        tuned,
        diff_dir,
        compare_dtype="bf16",
        load_dtype="bf16",
        rank=rank,
        save_mask=bf16,
        workers=workers,
        progress=progress,
    )
    rows = pq.read_table(diff_dir / TENSORS_FILE, columns=["dtype_base", "dtype_tuned", "numel"]).to_pylist()
    tot = summary["totals"]
    numel = tot["numel"]

    def dtypes(key: str) -> str:
        return ",".join(sorted({r[key] for r in rows}))

    measured = {
        "status": "measured",
        "dtype_base": dtypes("dtype_base"),
        "dtype_tuned": dtypes("dtype_tuned"),
        "numel": numel,
        "changed": tot["changed"],
        "changed_atol": tot["changed_atol"],
        "added": tot.get("added", 0),
        "sparsity_bitwise": 1 - tot["changed"] / numel if numel else None,
        "sparsity_atol": 1 - tot["changed_atol"] / numel if numel else None,
        "mean_rank_frac": tot["mean_rank_frac"],
    }
    if bf16 and rows:
        ex = run_explain(diff_dir, base, folder / "explain", rank_null=False, plot=False)
        dec = ex["rounding"]["changed_frac_by_decile"]
        # deciles hold equal counts, so the lowest one's share of the changed entries is its rate over the sum
        total = sum(d for d in dec if not math.isnan(d))
        measured["lowest_decile_share"] = dec[0] / total if total > 0 else None
        auc = ex["rounding"]["auc"]
        measured["auc"] = None if auc is None or math.isnan(auc) else auc
        (diff_dir / MASK_FILE).unlink()  # the tables hold what was measured from it
    modules = [
        {
            "pair": pair.name,
            "module": mod,
            "tensors": m["tensors"],
            "numel": m["numel"],
            "changed_frac": m["changed_frac"],
            "changed_atol_frac": m["changed_atol_frac"],
            "mean_rank_frac": m["mean_rank_frac"],
        }
        for mod, m in summary["by_module"].items()
    ]
    return measured, modules


def _add_prediction(row: dict, cat: Catalog) -> None:
    """The law's predicted sparsity where the catalog states lr and steps; otherwise why there is none."""
    if row["lr"] is not None and row["steps"] is None:
        row["predicted_note"] = f"no prediction: the source states lr {row['lr']:g} but no step count"
    elif row["lr"] is None or row["steps"] is None:
        row["predicted_note"] = "no prediction: " + (cat.hyperparameters or "the catalog has no lr/steps for this pair")
    elif row["status"] != "measured":
        row["predicted_note"] = "no prediction: the base is not available"
    else:
        from rldelta.predict import Settings, predict, read_base  # scipy: only where a prediction is made

        try:
            p = predict(read_base(row["base"]), Settings(lr=row["lr"], steps=row["steps"]))
        except RldeltaError as e:
            row["predicted_note"] = f"no prediction: {e}"
            return
        row["predicted_sparsity"] = 1 - p["changed_frac"]
        row["predicted_lo"], row["predicted_hi"] = 1 - p["interval"][1], 1 - p["interval"][0]
        row["predicted_note"] = f"bitwise changed fraction from the base's weights, lr and steps; {p['calibration']}"


def _csv(rows: list[dict], schema: pa.Schema) -> bytes:
    """CSV through Arrow: counts stay integers and a missing value stays empty (pandas would write 590.0, nan)."""
    buf = io.BytesIO()
    pa_csv.write_csv(pa.Table.from_pylist(rows, schema=schema), buf)
    return buf.getvalue()


def run_reproduce(
    out: str | os.PathLike,
    *,
    catalog: str | os.PathLike | None = None,
    only: list[str] | None = None,
    rank: bool = True,
    workers: int = 1,
    progress: bool | Callable[[int, int, str], None] = False,
) -> dict:
    """Measure every selected pair of the catalog that can be had; write the tables; return reproduce.json's content.

    A pair that is neither local, cached nor downloadable, or whose checkpoints cannot be read, is reported
    "not available" with the one-line reason; the run goes on with the next pair.
    """
    cat = load_catalog(catalog)
    pairs = _select(cat, only)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table, modules = [], []
    for pair in pairs:
        folder = out / PAIRS_DIR / pair.name
        try:
            measured, mods = _measure(pair, folder, rank, workers, progress)
        except RldeltaError as e:  # CheckpointError (not cached, not reachable, unreadable) or a diff that cannot be
            shutil.rmtree(folder, ignore_errors=True)
            reason = str(e)
            table.append(_row(pair, cat.match_points, status=NOT_AVAILABLE, verdict=f"{NOT_AVAILABLE}: {reason}"))
            continue
        table.append(_row(pair, cat.match_points, **measured))
        modules.extend(mods)
    for row in table:
        _add_prediction(row, cat)
    atomic_write_parquet(table, out / REPRODUCE_TABLE, REPRODUCE_SCHEMA)
    atomic_write_parquet(modules, out / BY_MODULE_TABLE, BY_MODULE_SCHEMA)
    atomic_write_bytes(out / REPRODUCE_CSV, _csv(table, REPRODUCE_SCHEMA))
    atomic_write_bytes(out / BY_MODULE_CSV, _csv(modules, BY_MODULE_SCHEMA))
    result = {
        "catalog": str(cat.path),
        "title": cat.title,
        "source": cat.source,
        "match_points": cat.match_points,
        "rank_range_pct": cat.rank_range_pct,
        "measured": [r["name"] for r in table if r["status"] == "measured"],
        "not_available": [r["name"] for r in table if r["status"] != "measured"],
        "pairs": table,
        "by_module": modules,
        "gaps": [g.__dict__ for g in cat.gaps],
        "hyperparameters": cat.hyperparameters,
    }
    atomic_write_json(out / REPRODUCE_JSON, result)
    return result


__all__ = [
    "DEFAULT_CATALOG",
    "Catalog",
    "PublishedPair",
    "ReproduceError",
    "Gap",
    "dry_run",
    "figure_verdict",
    "published_figures",
    "range_verdict",
    "load_catalog",
    "run_reproduce",
]
