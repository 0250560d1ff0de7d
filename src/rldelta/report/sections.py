"""The study report's sections, in reading order: each takes the study's tables and returns its HTML pieces (none
when the study has nothing for it). The probes' sections are in probe_sections.py."""

from __future__ import annotations

import html

import pandas as pd

from rldelta.report.blocks import CSS, cell, claim_text, figure, interval, py, table_html, verdict_class

Tables = dict[str, pd.DataFrame]


def primary_run(tables: Tables) -> str:
    """The grid's first run: the one the per-run plots and the surgery's mask show."""
    return tables["runs"]["run"].iloc[0]


def head_section(tables: Tables, question: str | None) -> list[str]:
    """The page's head and title, and the question the study answers (when given)."""
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>rldelta study report</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>What does RL fine-tuning change in the weights?</h1>",
    ]
    if question is not None:
        parts += ["<section id='question'><h2>The question</h2>", f"<p>{html.escape(question)}</p></section>"]
    return parts


def why_section(tables: Tables) -> list[str]:
    """The answer first: one row per candidate explanation of "sparse, yet full-rank", with its evidence, the share
    of the effect it accounts for (with its interval) and its verdict."""
    why = tables.get("why")
    if why is None or not len(why):
        return []
    h = tables["headline"]
    out = [
        "<section id='why'><h2>Why sparse, yet full-rank?</h2>",
        "<p class='note'>Each candidate explanation, with the measured evidence for and against it, the share of "
        "the observed effect it accounts for (observed against its null; 95% interval where the data give one) and "
        "its verdict. share: rounding = entries left unchanged in bf16 that the fp32 master did change / all "
        "unchanged; |w| = (magnitude-matched − random) / (observed − random) seed overlap; density = random "
        "sparse rank vs observed: 1 − |difference| / observed; in-distribution data = (foreign − own) / foreign changed fraction; "
        "suppression = fall of log p(wrong) / (that + rise of log p(correct)), negative parts counted as 0; format selection = the winning format's share at the end; the law = 1 − its held-out absolute error / the measured "
        "changed fraction.</p>",
        "<table><thead><tr><th>explanation</th><th>explains</th><th>evidence for</th><th>evidence against</th>"
        "<th>share of the effect</th><th>verdict</th></tr></thead><tbody>",
    ]
    for i, rec in enumerate(why.to_dict("records")):
        share = cell("why", i, "share", rec["share"], "pct")
        if py(rec.get("share_lo")) is not None and py(rec.get("share_hi")) is not None:
            share += f" [{cell('why', i, 'share_lo', rec['share_lo'], 'pct')}, {cell('why', i, 'share_hi', rec['share_hi'], 'pct')}]"
        out.append(
            f"<tr><td><b>{html.escape(rec['explanation'])}</b></td><td>{html.escape(rec['effect'])}</td>"
            f"<td>{claim_text(rec['evidence_for'], h)}</td><td>{claim_text(rec['evidence_against'], h)}</td>"
            f"<td>{share}</td><td class='verdict {verdict_class(rec['verdict'])}'>{html.escape(rec['verdict'])}</td></tr>"
        )
    out.append("</tbody></table></section>")
    return ["".join(out)]


def setup_section(tables: Tables) -> list[str]:
    return [
        "<section id='setup'><h2>Setup</h2>",
        table_html(tables, "setup"),
        table_html(tables, "runs", ["run", "kind", "algo", "seed", "precision", "steps", "accuracy"]),
        "</section>",
    ]


def headline_section(tables: Tables) -> list[str]:
    """Every headline number with its 95% interval and where the interval comes from."""
    parts = [
        "<section id='headline'><h2>Headline numbers</h2><table><thead><tr><th>measure</th><th>value</th>"
        "<th>95% interval</th><th>interval from</th></tr></thead><tbody>"
    ]
    for i, rec in enumerate(tables["headline"].to_dict("records")):
        parts.append(
            f"<tr><td>{html.escape(rec['label'])}</td>"
            f"<td>{cell('headline', i, 'value', rec['value'], rec['format'])}</td>"
            f"<td>{interval('headline', i, rec, rec['format']).strip()}</td>"
            f"<td>{html.escape(str(py(rec.get('interval')) or ''))}</td></tr>"  # NaN: a probe's row has none
        )
    parts.append("</tbody></table></section>")
    return parts


def paired_note(i: int, rec: dict) -> str:
    """The paired comparison a verdict rests on, from its row of the claims table; empty for the other claims."""
    if py(rec.get("difference")) is None:
        return ""
    return (
        f"<br><span class='note'>paired on {html.escape(str(rec['score']))}: difference "
        f"{cell('claims', i, 'difference', rec['difference'], 'num')}{interval('claims', i, rec, 'num')} "
        f"({html.escape(str(rec['test']))}, n = {cell('claims', i, 'n', int(rec['n']), 'int')})</span>"
    )


def verdicts_section(tables: Tables) -> list[str]:
    """One paragraph per published claim: its verdict, the text with its numbers, what it was compared with."""
    h = tables["headline"]
    parts = ["<section id='verdicts'><h2>The published claims, as this study measured them</h2>"]
    for i, rec in enumerate(tables["claims"].to_dict("records")):
        parts.append(
            f"<p class='verdict {verdict_class(rec['verdict'])}'><b>{html.escape(rec['claim'])}</b> — "
            f"<i>published: {html.escape(rec['published'])}</i><br><b class='tag'>"
            f"{html.escape(rec['verdict'])}</b> {claim_text(rec['text'], h)}"
            + paired_note(i, rec)
            + f"<br><span class='note'>compared: {html.escape(rec.get('comparison') or '')}; against: "
            f"{html.escape(rec.get('null') or '')}"
            + (f"; to decide: {html.escape(rec['more_data'])}" if rec.get("more_data") else "")
            + "</span></p>"
        )
    parts.append("</section>")
    return parts


def _figures(tables: Tables) -> list[tuple[str, str, bytes, str]]:
    """The plots of the study's tables: (id, title, PNG, caption) each."""
    from rldelta.plots import study as sp

    primary = primary_run(tables)
    figures = [
        (
            "plot-layers",
            "Changed fraction per layer and module",
            sp.layer_module_heatmap(tables["tensors"], primary),
            f"Run {primary}. Bitwise change of the published bf16 checkpoint against the bf16 base.",
        ),
        (
            "plot-rank",
            "Rank fraction per module",
            sp.rank_per_module(tables["modules"], primary),
            f"Run {primary}: numerical rank of Δ / min(shape), mean over the module's tensors, next to random sparse "
            "matrices with the same per-tensor density.",
        ),
    ]
    if len(tables["overlap"]):
        figures.append(
            (
                "plot-overlap",
                "Overlap of the changed sets",
                sp.overlap_matrix(tables["overlap"]),
                "One-sided overlap |A∩B|/|A| of the final changed sets (row A, column B), and the overlap two "
                "random sets of the same per-tensor densities would have.",
            )
        )
    if len(tables["deciles"]):
        figures.append(
            (
                "plot-deciles",
                "Changed fraction by |w| decile",
                sp.decile_lines(tables["deciles"]),
                "Small weights have a small bf16 unit in the last place: the same update survives rounding "
                "there and vanishes on large weights. Dashed: the fp32 master weights, before rounding.",
            )
        )
    figures.append(
        (
            "plot-dynamics",
            "Dynamics over training steps",
            sp.dynamics(tables["dynamics"]),
            "At every saved step: changed fraction, mean rank fraction, and the share of that step's changed "
            "entries that are still changed at the end.",
        )
    )
    if "steps" in tables and len(tables["steps"]):
        figures.append(
            (
                "plot-steps",
                "Every optimizer step",
                sp.step_dynamics(tables["steps"]),
                "From each run's step recorder (bf16 copy, bitwise): how much each step changes, how much of a step's "
                "set the previous step's set and the union so far already held, the share of the final set reached "
                "(dotted: 90%), and the per-step change against the learning rate.",
            )
        )
    figures.append(
        (
            "plot-accuracy",
            "Accuracy",
            sp.accuracy_curves(tables["training_curves"], tables["accuracy"], tables["surgery"]),
            "Left: accuracy on each training batch. Right: greedy accuracy on the test split.",
        )
    )
    return figures


def plots_section(tables: Tables) -> list[str]:
    return ["<section id='plots'><h2>Plots</h2>", *[figure(*f) for f in _figures(tables)], "</section>"]


def experts_section(tables: Tables) -> list[str]:
    """Mixture-of-experts models only: which experts RL touched, the routers, and whether the seeds pick the same
    experts (the study's experts* and routers tables)."""
    if "experts" not in tables or not len(tables["experts"]):
        return []
    from rldelta.plots.experts import expert_heatmaps

    parts = [
        "<section id='experts'><h2>Experts</h2>",
        "<p class='note'>The model is a mixture of experts. Changed fraction of each routed expert (bitwise in bf16, "
        "the final checkpoint against the base), summed over the expert's tensors, per layer; the routers "
        "(mlp.gate, and the shared expert's gate) beside them. Per-expert rows in tables/experts.csv.</p>",
        figure(
            "plot-experts",
            "Changed fraction per layer and expert",
            expert_heatmaps(tables["experts"], tables["routers"]),
            "One panel per run of the grid (one colour scale); right: the routers' changed fraction per layer.",
        ),
        "<h3>Routers</h3>" + table_html(tables, "routers"),
    ]
    if "experts_summary" in tables and len(tables["experts_summary"].columns) > 1:
        short = {
            "changed_experts": "experts changed",
            "changed_frac": "changed",
            "expert_changed_frac_min": "per expert: min",
            "expert_changed_frac_median": "median",
            "expert_changed_frac_max": "max",
            "top_experts": "top 10%",
            "top10_share": "their share",
            "router_changed_frac": "router",
            "router_mean_rank_frac": "router rank",
            "shared_expert_changed_frac": "shared expert",
        }
        parts.append(
            "<h3>Expert summary</h3><p class='note'>From each diff's summary.json: experts changed at all, the spread "
            "of the per-expert changed fraction, the share of all changed expert entries held by the top 10% of "
            "experts, the routers' changed fraction and mean rank fraction, the shared experts' changed fraction.</p>"
            + table_html(tables, "experts_summary", headers=short)
        )
    if "experts_overlap" in tables and len(tables["experts_overlap"]):
        parts.append(
            "<h3>Do the seeds pick the same experts?</h3><p class='note'>Overlap of the sets of experts touched by "
            "two runs, against the overlap two random sets of the same sizes would have.</p>"
            + table_html(tables, "experts_overlap")
        )
    verdicts = tables.get("probe_verdicts")
    skipped = [] if verdicts is None else [r for r in verdicts.to_dict("records") if r["verdict"].startswith("not run")]
    for r in skipped:
        parts.append(f"<p class='verdict part'><b>{html.escape(r['probe'])}</b><br>{html.escape(r['verdict'])}</p>")
    parts.append("</section>")
    return ["\n".join(parts)]


def surgery_section(tables: Tables) -> list[str]:
    """Patch and revert of the primary run's mask, and the subnetwork-only retrain."""
    primary = primary_run(tables)
    return [
        f"<section id='surgery'><h2>Surgery: is the {html.escape(primary)} mask sufficient, is it necessary?</h2>",
        "<p class='note'>patch = base + the target's update on the mask only; revert = the target with the "
        "mask reset to base. recovery = (accuracy − base) / (tuned − base). accuracy_lo/hi: Wilson 95% interval "
        "from n test problems. Controls: random masks with the same per-tensor density.</p>",
        table_html(tables, "surgery"),
        "</section><section id='retrain'><h2>Subnetwork-only retraining</h2>",
        f"<p class='note'>Trained again from the base with only the {html.escape(primary)} mask's entries trainable "
        "(same data, same seed), compared with that full run.</p>",
        table_html(tables, "retrain"),
        "</section>",
    ]


def cause_section(tables: Tables) -> list[str]:
    if "cause" not in tables or not len(tables["cause"]):
        return []
    return [
        "<section id='cause'><h2>Cause analysis: in-distribution data, KL</h2><p class='note'>Same prompts and "
        "steps: SFT on the base model's own correct samples (in-distribution) and on the same answers in a "
        "style the base does not produce (out-of-distribution); the RL run with KL (β &gt; 0) and without. "
        "Changed fraction bitwise in bf16 and in the fp32 master weights.</p>",
        table_html(tables, "cause") + "</section>",
    ]


def tables_section(tables: Tables) -> list[str]:
    """The per-run measurements, and where the rest of the tables are."""
    return [
        "<section id='tables'><h2>Per-run measurements</h2>",
        table_html(tables, "runs", [c for c in tables["runs"].columns if c not in ("run_dir",)]),
        "<h3>Per module</h3>" + table_html(tables, "modules"),
        "<h3>Overlap of every pair of runs</h3>" + table_html(tables, "overlap"),
        "<h3>Dynamics</h3>" + table_html(tables, "dynamics"),
        "<h3>Accuracy</h3>" + table_html(tables, "accuracy"),
        "<p class='note'>All tables, and the per-tensor, per-decile and training-curve tables, are in "
        "tables/ next to this file as CSV and Parquet.</p></section></body></html>",
    ]
