"""Rich tables for the terminal, built from the results the engines return; each value shown in its column's unit."""

from __future__ import annotations

import pandas as pd
from rich.table import Table

from rldelta.columns import COUNT, MISSING, is_missing, show
from rldelta.masks import MaskCounts
from rldelta.results import DiffResult, ExplainResult, OverlapResult


def diff_table(result: DiffResult) -> Table:
    """One row per module kind and a total row: changed fraction bitwise and under atol, mean rank fraction."""
    atol = result.options["atol"]
    cmp = result.options.get("compare_dtype", "base")
    where = {"narrower": "the narrower stored dtype", "base": "the base's dtype"}.get(cmp, cmp)
    t = Table(title=f"rldelta diff  (changed: bitwise in {where}; rank_frac: mean over 2-D tensors)", show_footer=True)
    t.add_column("module", footer="total", no_wrap=True)
    tot = result.totals
    t.add_column("tensors", justify="right", footer=str(tot["tensors"]))
    t.add_column("params", justify="right", footer=show("numel", tot["numel"]))
    t.add_column("changed", justify="right", footer=show("changed_frac", tot["changed_frac"]))
    t.add_column(f"|Δ|>{atol:g}", justify="right", footer=show("changed_atol_frac", tot["changed_atol_frac"]))
    t.add_column("rank_frac", justify="right", footer=show("mean_rank_frac", tot["mean_rank_frac"]))
    for mod, m in result.by_module.items():
        t.add_row(
            f"{mod} ({m['experts']} experts)" if m.get("experts") else mod,
            str(m["tensors"]),
            show("numel", m["numel"]),
            show("changed_frac", m["changed_frac"]),
            show("changed_atol_frac", m["changed_atol_frac"]),
            show("mean_rank_frac", m["mean_rank_frac"]),
        )
    notes = []
    for key in ("missing_in_tuned", "extra_in_tuned", "shape_mismatch", "dtype_mismatch"):
        if result.skipped[key]:
            notes.append(f"{len(result.skipped[key])} {key.replace('_', ' ')} (skipped; see summary.json)")
    if result.skipped["resized"]:
        added = show("added", result.totals.get("added", 0))
        notes.append(
            f"{len(result.skipped['resized'])} resized vocabulary (shared rows compared; {added} added entries)"
        )
    # the two sides' dtypes differ: said on a line of its own, since it decides what `changed` counts
    lines = [result.dtype_note, "; ".join(notes)]
    if any(lines):
        t.caption = "\n".join(line for line in lines if line)
    return t


def experts_table(result: DiffResult) -> Table | None:
    """The experts block of a mixture-of-experts diff (None for a model without experts): how many experts changed,
    how the change spreads over them, the router's change and rank."""
    x = result.experts
    if not x:
        return None
    t = Table(title="experts  (an expert: all its tensors in one layer; changed: bitwise, as above)")
    t.add_column("figure")
    t.add_column("value", justify="right")
    per_layer = sorted({b["experts"] for b in x["by_layer"]})
    span = str(per_layer[0]) if len(per_layer) == 1 else f"{per_layer[0]}–{per_layer[-1]}"
    t.add_row("experts", f"{COUNT.show(x['experts'])} ({span} in each of {x['layers']} layers)")
    t.add_row("changed at all", f"{COUNT.show(x['changed_experts'])} of {COUNT.show(x['experts'])}")
    t.add_row("changed, all expert entries", show("changed_frac", x["changed_frac"]))
    f = x["expert_changed_frac"]
    t.add_row("changed per expert: min / median / max", " / ".join(show("changed_frac", f[k]) for k in f))
    top = f"{x['top_experts']} expert" + ("s" if x["top_experts"] != 1 else "")
    t.add_row(f"share held by the top 10% ({top})", show("share", x["top10_share"]))
    r = x.get("router")
    if r:
        t.add_row("router: changed", show("changed_frac", r["changed_frac"]))
        ranks = [f"{b['rank']}/{b['max_rank']}" for b in r["by_layer"]]
        shown = ", ".join(ranks) if len(ranks) <= 6 else f"{', '.join(ranks[:6])}, … ({len(ranks)} tensors)"
        t.add_row("router: rank per tensor", shown or MISSING)
        t.add_row("router: mean rank_frac", show("mean_rank_frac", r["mean_rank_frac"]))
    if x.get("shared_experts"):
        t.add_row("shared experts: changed", show("changed_frac", x["shared_experts"]["changed_frac"]))
    return t


def _density(x: float) -> str:
    # a mask's density with 3 decimals: masks of real models are often well under 0.01%
    return f"{100 * x:.3f}%"


def mask_table(counts: MaskCounts, title: str) -> Table:
    """One row per tensor of a mask and a total row: entries, entries in the mask, density."""
    t = Table(title=title, show_footer=True)
    t.add_column("tensor", footer="total")
    t.add_column("entries", justify="right", footer=COUNT.show(counts.total_numel))
    t.add_column("in mask", justify="right", footer=COUNT.show(counts.total_count))
    t.add_column("density", justify="right", footer=_density(counts.total_density))
    for n in counts.count:
        t.add_row(n, COUNT.show(counts.numel[n]), COUNT.show(counts.count[n]), _density(counts.density(n)))
    return t


def overlap_table(result: OverlapResult) -> Table:
    """One row per ordered pair of masks (over all tensors): sizes, one-sided overlap, random expectation, Jaccard."""
    t = Table(title="rldelta overlap (all tensors)")
    for col in ("A", "B", "|A|", "|A∩B|", "overlap A→B", "random", "Jaccard"):
        t.add_column(col, justify="left" if col in ("A", "B") else "right")
    for r in result.pairs:
        t.add_row(
            r["a"],
            r["b"],
            show("size_a", r["size_a"]),
            show("intersection", r["intersection"]),
            show("overlap", r["overlap"]),
            show("random_overlap", r["random_overlap"]),
            show("jaccard", r["jaccard"]),
        )
    return t


def expert_overlap_table(result: OverlapResult) -> Table | None:
    """One row per ordered pair and kind of expert set (pooled over layers): sizes, overlap, chance, p; None for
    masks without experts."""
    x = result.experts
    if not x:
        return None
    t = Table(
        title=f"rldelta overlap of expert sets ({x['experts']} experts in {x['layers']} layers; chance: hypergeometric)"
    )
    for col in ("A", "B", "set", "|A|", "|A∩B|", "overlap A→B", "random", "p"):
        t.add_column(col, justify="left" if col in ("A", "B", "set") else "right")
    for r in x["pairs"]:
        t.add_row(
            r["a"],
            r["b"],
            r["expert_set"],
            show("size_a", r["size_a"]),
            show("intersection", r["intersection"]),
            show("overlap", r["overlap"]),
            show("random_overlap", r["random_overlap"]),
            f"{r['p_value']:.3g}",  # a p-value spans decades: 3 significant digits
        )
    return t


def explain_table(res: ExplainResult) -> Table:
    """What each null model predicts: rounding, the fp32 master, the overlap nulls and the rank null per module."""
    r = res.rounding
    t = Table(title="rldelta explain: how much simple causes predict")
    t.add_column("null model")
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_row("rounding", "changed (observed)", show("changed_frac", r["observed_changed_frac"]))
    # AUC with 4 decimals and s* with 3 significant digits: the rounding model's fit is read off these two
    t.add_row("", "AUC of −|w|" + ("" if r["auc_exact"] else " (binned)"), f"{r['auc']:.4f}")
    t.add_row("", "s* (uniform update)", f"{r['s_star']:.3g}")
    t.add_row(
        "",
        "precision / recall at s*",
        f"{show('rounding_precision', r['precision'])} / {show('rounding_recall', r['recall'])}",
    )
    t.add_row("", "changed by |w| decile", " ".join(f"{100 * x:.0f}" for x in r["changed_frac_by_decile"]) + " %")
    if res.master:
        mres = res.master
        t.add_row("fp32 master", "changed in fp32", show("fp32_changed_frac", mres["fp32_changed_frac"]))
        t.add_row("", "lost to rounding", show("lost_to_rounding_frac", mres["lost_to_rounding_frac"]))
    if res.magnitude_matched_overlap:
        mo = res.magnitude_matched_overlap
        t.add_row(
            "overlap",
            "observed / random / magnitude-matched",
            f"{show('overlap', mo['observed'])} / {show('random_overlap', mo['random'])} / "
            f"{show('magnitude_matched_overlap', mo['magnitude_matched'])}",
        )
    for mod, v in (res.rank_null or {}).items():
        obs = show("observed_rank_frac", v["observed_rank_frac"])
        t.add_row("rank", f"{mod}: observed / null rank_frac", f"{obs} / {show('null_rank_frac', v['null_rank_frac'])}")
    return t


def eval_table(result: dict, model: str) -> Table:
    """Greedy accuracy and format rate per difficulty level and over all problems."""
    table = Table(title=f"{result['task']} on {model} (n={result['n']}, greedy)")
    for col in ("difficulty", "n", "accuracy", "format rate"):
        table.add_column(col, justify="right")
    # the format rate as a decimal like the accuracy beside it, so the two columns read alike
    for level, row in result["per_difficulty"].items():
        table.add_row(level, str(row["n"]), show("accuracy", row["accuracy"]), f"{row['format_rate']:.3f}")
    table.add_row(
        "all", str(result["n"]), show("accuracy", result["accuracy"]), f"{result['format_rate']:.3f}", style="bold"
    )
    return table


def steps_table(steps: pd.DataFrame, summary: dict) -> Table:
    """One row per recorded optimizer step (the `total` rows): changed since the previous step and the base,
    overlaps, the union so far, the share of the final set reached, and a sparse patch's size against the dense."""
    total = steps[steps["module"] == "total"].sort_values("step")
    reached = dict(zip(summary.get("steps", []), summary.get("share_of_final_set", [])))
    t = Table(title="rldelta steps (bf16 copy, bitwise; overlaps: share of this step's set)")
    cols = ("step", "changed_step_frac", "changed_base_frac", "overlap_prev_step", "overlap_union", "union_frac")
    for c in (*cols, "share_of_final_set", "patch / dense", "learning_rate"):
        t.add_column(c, justify="right")
    for r in total.to_dict("records"):
        t.add_row(
            *(show(c, r[c]) for c in cols),
            show("share_of_final_set", reached.get(r["step"])),
            f"{r['bytes_index'] / r['bytes_dense']:.3f}" if r["bytes_dense"] else MISSING,
            "" if pd.isna(r["learning_rate"]) else f"{r['learning_rate']:.3g}",
        )
    if summary:
        t.caption = (
            f"final set {COUNT.show(summary['final_set'])} entries; {summary['saturation_share']:.0%} of it reached at "
            f"step {summary['saturation_step']} (saturation); recorder memory {summary['memory_bytes'] / 2**20:.1f} MiB"
        )
    return t


def reproduce_table(result: dict) -> Table:
    """One row per published pair: published and measured sparsity and rank, and the verdict."""
    t = Table(title=f"rldelta reproduce  ({result['title']}; sparsity: |Δ| ≤ 1e-5, as published)")
    heads = ("pair", "sparsity pub.", "measured", "predicted", "bitwise", "1e-8 pub.", "rank pub.", "measured")
    for col in (*heads, "low-|w| decile", "AUC −|w|", "verdict"):
        t.add_column(col, justify="left" if col in ("pair", "verdict") else "right")
    for r in result["pairs"]:
        cols = ("published_sparsity", "sparsity_atol", "predicted_sparsity", "sparsity_bitwise")
        cols += ("published_sparsity_1e8", "published_rank", "mean_rank_frac", "lowest_decile_share", "auc")
        # a published figure the catalog does not have is NaN in the tables; shown as missing, like a None
        t.add_row(r["name"], *(show(c, None if is_missing(r[c]) else r[c]) for c in cols), r["verdict"])
    return t


def gaps_table(gaps: list) -> Table:
    """`rldelta reproduce --dry-run`: the published figures with no pair to diff, and why."""
    t = Table(title="published figures without a pair")
    for col in ("name", "table", "figures", "reason"):
        t.add_column(col)
    for g in gaps:
        t.add_row(g.name, g.table, g.figures, g.reason)
    return t


def fetch_plan_table(rows: list[dict]) -> Table:
    """`rldelta reproduce --dry-run`: per pair and side, what would be fetched and its size, or why not."""
    from rldelta.checkpoint import human_size

    t = Table(title="rldelta reproduce --dry-run")
    for col in ("pair", "published", "side", "checkpoint", "status", "files", "size", "reason"):
        t.add_column(col)
    for r in rows:
        fetch = r["status"] == "fetch"
        size = human_size(r["bytes"]) if fetch else ""
        cells = (r["side"], r["spec"], r["status"], str(r["files"]) if fetch else "", size, r["reason"])
        t.add_row(r["pair"], r.get("published", ""), *cells)
    total = sum(r["bytes"] for r in rows if r["status"] == "fetch")
    t.caption = f"to fetch in all: {human_size(total)}"
    return t
