"""The reproduce page: one self-contained HTML file, published beside measured, in the study report's style.

Every number comes from reproduce.parquet / by_module.parquet through `cell()` (tagged with its table, row and
column, as in the study report), so the page can be checked against the tables.
"""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from rldelta.report.blocks import CSS, table_html
from rldelta.runtime.atomic import atomic_write_bytes

REPRODUCE_HTML = "reproduce.html"
_MAIN_COLS = [
    "name",
    "algorithm",
    "base",
    "tuned",
    "dtype_base",
    "dtype_tuned",
    "published_sparsity",
    "published_sparsity_source",
    "published_sparsity_alt",
    "published_sparsity_alt_source",
    "published_range_lo",
    "published_range_hi",
    "sparsity_atol",
    "predicted_sparsity",
    "predicted_lo",
    "predicted_hi",
    "published_sparsity_1e8",
    "sparsity_bitwise",
    "published_rank",
    "published_rank_source",
    "mean_rank_frac",
    "lowest_decile_share",
    "auc",
    "added",
    "verdict",
    "predicted_note",
    "note",
]
_HEADERS = {
    "name": "pair",
    "published_sparsity": "sparsity |Δ|≤1e-5, published",
    "published_sparsity_source": "from",
    "published_sparsity_alt": "2nd published figure",
    "published_sparsity_alt_source": "from",
    "published_range_lo": "published range, low",
    "published_range_hi": "published range, high",
    "sparsity_atol": "sparsity |Δ|≤1e-5, measured",
    "predicted_sparsity": "sparsity, predicted (law)",
    "predicted_lo": "predicted, low",
    "predicted_hi": "predicted, high",
    "published_sparsity_1e8": "sparsity |Δ|≤1e-8, published",
    "sparsity_bitwise": "sparsity, bitwise, measured",
    "published_rank": "rank, published",
    "published_rank_source": "from",
    "mean_rank_frac": "rank, measured",
    "lowest_decile_share": "changed in lowest |w| decile",
    "auc": "AUC of −|w|",
    "added": "added entries",
}


def render(result: dict, tables: dict[str, pd.DataFrame]) -> str:
    """The page as one HTML string; `tables` holds "reproduce" and "by_module" as read from the Parquet files."""
    measured, missing = result["measured"], result["not_available"]
    statement = (
        f"Measured here: {', '.join(measured)}." if measured else "None of the pairs could be measured here."
    ) + (f" Not available (neither local, cached nor downloadable): {', '.join(missing)}." if missing else "")
    rank_range = result.get("rank_range_pct") or []
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>rldelta reproduce</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>Published vs measured: {html.escape(result['title'])}</h1>",
        f"<p class='verdict part'>{html.escape(statement)}</p>",
        "<section id='pairs'><h2>Pairs</h2>",
        table_html(tables, "reproduce", _MAIN_COLS, _HEADERS),
        "<p class='note'>Sparsity: the share of entries the update left unchanged, counted as the paper counts it "
        "(|Δ| ≤ 1e-5 in fp32) and bitwise in the stored dtype; the bitwise figure is compared with the published "
        "|Δ| ≤ 1e-8 figure (the closest published one), each published figure shown with its table. Predicted: "
        "the update-sparsity law (`rldelta predict`) from the base's weights and the run's lr and steps, where the "
        "catalog states them (a model card or paper), else why not. Rank: the mean numerical rank fraction of the 2-D "
        "updates. A figure matches when it lies within "
        f"{result['match_points']:g} percentage points of the published one. The rounding null (share of changed "
        "entries in the lowest |w| decile; AUC of −|w| as a predictor of change) is measured where the base is "
        "bf16. Added entries: rows of a grown vocabulary, held only by the tuned side and not compared."
        + (
            f" The paper reports update ranks of {rank_range[0]:g}–{rank_range[-1]:g}% over its Table 2 pairs."
            if len(rank_range) >= 2
            else ""
        )
        + "</p></section>",
        _gaps(result.get("gaps") or []),
        "<section id='modules'><h2>Per module kind</h2>",
        table_html(tables, "by_module"),
        "</section>",
        f"<p class='note'>Catalog: {html.escape(result['catalog'])}. Tables: reproduce.parquet/.csv, "
        "by_module.parquet/.csv; each pair's diff in pairs/NAME/.</p>",
        "</body></html>",
    ]
    return "\n".join(parts)


def _gaps(gaps: list[dict]) -> str:
    """Published figures with no pair to diff (the paper does not name the checkpoints), and why."""
    if not gaps:
        return ""
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(g[k])}</td>" for k in ("name", "table", "figures", "reason")) + "</tr>"
        for g in gaps
    )
    head = "<tr><th>name</th><th>table</th><th>published figures</th><th>why no pair</th></tr>"
    table = f"<table><thead>{head}</thead><tbody>{rows}</tbody></table>"
    return f"<section id='gaps'><h2>Published figures without a pair</h2>{table}</section>"


def _ints(df: pd.DataFrame) -> pd.DataFrame:
    """Count columns back to Python ints: a pair with no numbers makes pandas read them as floats with NaN."""
    for col in ("numel", "changed", "changed_atol", "added", "tensors", "steps"):
        if col in df.columns:
            df[col] = pd.Series([None if pd.isna(v) else int(v) for v in df[col]], index=df.index, dtype=object)
    return df


def write_reproduce_page(result: dict, out: str | Path) -> Path:
    """Read the tables run_reproduce wrote in OUT and write OUT/reproduce.html atomically; returns its path."""
    out = Path(out)
    tables = {name: _ints(pd.read_parquet(out / f"{name}.parquet")) for name in ("reproduce", "by_module")}
    path = out / REPRODUCE_HTML
    atomic_write_bytes(path, render(result, tables).encode())
    return path
