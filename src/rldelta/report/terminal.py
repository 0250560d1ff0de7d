"""Rich tables for the terminal, built from the JSON summaries the engines write."""

from __future__ import annotations

from rich.table import Table


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}%"


def _num(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def diff_table(summary: dict) -> Table:
    """One row per module kind and a total row: changed fraction bitwise and under atol, mean rank fraction."""
    atol = summary["options"]["atol"]
    t = Table(
        title="rldelta diff  (changed: bitwise in the stored dtype; rank_frac: mean over 2-D tensors)", show_footer=True
    )
    t.add_column("module", footer="total", no_wrap=True)
    tot = summary["totals"]
    t.add_column("tensors", justify="right", footer=str(tot["tensors"]))
    t.add_column("params", justify="right", footer=f"{tot['numel']:,}")
    t.add_column("changed", justify="right", footer=_pct(tot["changed_frac"]))
    t.add_column(f"|Δ|>{atol:g}", justify="right", footer=_pct(tot["changed_atol_frac"]))
    t.add_column("rank_frac", justify="right", footer=_num(tot["mean_rank_frac"]))
    for mod, m in summary["by_module"].items():
        t.add_row(
            mod,
            str(m["tensors"]),
            f"{m['numel']:,}",
            _pct(m["changed_frac"]),
            _pct(m["changed_atol_frac"]),
            _num(m["mean_rank_frac"]),
        )
    notes = []
    for key in ("missing_in_tuned", "extra_in_tuned", "shape_mismatch"):
        if summary.get(key):
            notes.append(f"{len(summary[key])} {key.replace('_', ' ')} (skipped; see summary.json)")
    if notes:
        t.caption = "; ".join(notes)
    return t
