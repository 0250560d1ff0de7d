"""The study report: one self-contained HTML file (plots embedded as base64 PNG, no external assets).

Every number on the page is rendered from the study's exported tables by `cell()`, which tags it with the table,
row and column it came from (`data-table`, `data-row`, `data-col`) and the exact value (`data-value`), so anyone
(and the tests) can check the page against tables/*.parquet. A number is shown in its column's unit, looked up
by the column's name in `rldelta.columns`.

Over 400 lines because the page is one document: its sections, in reading order, are written out here together.
"""

from __future__ import annotations

import base64
import html
import math
import re
from pathlib import Path

import pandas as pd

from rldelta.atomic import atomic_write_bytes
from rldelta.columns import MISSING, fmt, kind_of

QUESTION = (
    "RL fine-tuning of a language model is reported to change only a small slice of its weights (5–30%), "
    "yet each changed matrix is nearly full rank, the slice is almost the same across random seeds, and training "
    "that slice alone recovers the full run (arXiv:2505.11711). This study trained its own grid of RL runs and "
    "measured each of these claims, next to what simple causes — bf16 rounding, weight magnitude, a random sparse "
    "matrix of the same density — already predict."
)


def _py(value):
    """numpy scalars to Python; NaN and None alike to None."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def cell(table: str, row: int, col: str, value, kind: str | None = None) -> str:
    """A number from tables/<table>.parquet, tagged with where it came from."""
    value = _py(value)
    kind = kind or kind_of(col, value)
    text = html.escape(fmt(value, kind))
    if kind == "text":
        return text
    return (
        f'<span class="num" data-table="{table}" data-row="{row}" data-col="{html.escape(col)}" '
        f'data-fmt="{kind}" data-value="{html.escape(repr(value))}">{text}</span>'
    )


def table_html(
    tables: dict[str, pd.DataFrame], name: str, cols: list[str] | None = None, headers: dict[str, str] | None = None
) -> str:
    df = tables[name]
    cols = [c for c in (cols or list(df.columns)) if c in df.columns]
    if not len(df):
        return "<p class='note'>(empty)</p>"
    head = "".join(f"<th>{html.escape((headers or {}).get(c, c))}</th>" for c in cols)
    body = []
    for i, rec in enumerate(df.to_dict("records")):
        body.append("<tr>" + "".join(f"<td>{cell(name, i, c, rec[c])}</td>" for c in cols) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def _claim_text(text: str, headline: pd.DataFrame) -> str:
    """A verdict template with {key} replaced by that headline number (tagged like every other number)."""
    rows = {k: i for i, k in enumerate(headline["key"])}
    out, last = [], 0
    for m in _PLACEHOLDER.finditer(text):
        out.append(html.escape(text[last : m.start()]))
        i = rows.get(m.group(1))
        if i is None:
            out.append(MISSING)  # a number this study did not measure (a probe or stage that was off)
        else:
            rec = headline.iloc[i].to_dict()
            out.append(
                cell("headline", i, "value", rec["value"], rec["format"]) + _interval("headline", i, rec, rec["format"])
            )
        last = m.end()
    out.append(html.escape(text[last:]))
    return "".join(out)


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.7em;margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0;font-size:.85em}th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f3f3f3}td .num{font-variant-numeric:tabular-nums}
.verdict{margin:.5em 0;padding:.5em .8em;border-left:5px solid #999;background:#fafafa}
.verdict.yes{border-color:#2a8a3a}.verdict.no{border-color:#c0392b}.verdict.part{border-color:#d4a017}
.verdict b.tag{display:inline-block;min-width:12em}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}.note{color:#666;font-size:.9em}
figure{margin:1em 0}figcaption{color:#555;font-size:.9em}
"""


def _verdict_class(v: str) -> str:
    if v.startswith(("reproduces", "supported")):
        return "yes"
    if v.startswith(("does not", "not supported")):
        return "no"
    return "part"


def _paired_note(i: int, rec: dict) -> str:
    """The paired comparison a verdict rests on, from its row of the claims table; empty for the other claims."""
    if _py(rec.get("difference")) is None:
        return ""
    return (
        f"<br><span class='note'>paired on {html.escape(str(rec['score']))}: difference "
        f"{cell('claims', i, 'difference', rec['difference'], 'num')}{_interval('claims', i, rec, 'num')} "
        f"({html.escape(str(rec['test']))}, n = {cell('claims', i, 'n', int(rec['n']), 'int')})</span>"
    )


def _interval(table: str, i: int, rec: dict, kind: str) -> str:
    """A headline number's 95% interval, "[lo, hi]", each end tagged; empty when it has none."""
    if _py(rec.get("lo")) is None or _py(rec.get("hi")) is None:
        return ""
    return f" [{cell(table, i, 'lo', rec['lo'], kind)}, {cell(table, i, 'hi', rec['hi'], kind)}]"


def _why_section(tables: dict[str, pd.DataFrame]) -> str:
    """The answer first: one row per candidate explanation of "sparse, yet full-rank", with its evidence, the share
    of the effect it accounts for (with its interval) and its verdict."""
    why = tables.get("why")
    if why is None or not len(why):
        return ""
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
        if _py(rec.get("share_lo")) is not None and _py(rec.get("share_hi")) is not None:
            share += f" [{cell('why', i, 'share_lo', rec['share_lo'], 'pct')}, {cell('why', i, 'share_hi', rec['share_hi'], 'pct')}]"
        out.append(
            f"<tr><td><b>{html.escape(rec['explanation'])}</b></td><td>{html.escape(rec['effect'])}</td>"
            f"<td>{_claim_text(rec['evidence_for'], h)}</td><td>{_claim_text(rec['evidence_against'], h)}</td>"
            f"<td>{share}</td><td class='verdict {_verdict_class(rec['verdict'])}'>{html.escape(rec['verdict'])}</td></tr>"
        )
    out.append("</tbody></table></section>")
    return "".join(out)


def render(tables: dict[str, pd.DataFrame]) -> str:
    """The report as one HTML string."""
    from rldelta.plots import study as sp
    from rldelta.report.law_section import law_section

    runs = tables["runs"]
    primary = runs["run"].iloc[0]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>rldelta study report</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>What does RL fine-tuning change in the weights?</h1>",
        "<section id='question'><h2>The question</h2>",
        f"<p>{html.escape(QUESTION)}</p></section>",
        _why_section(tables),
    ]

    parts.append("<section id='setup'><h2>Setup</h2>")
    parts.append(table_html(tables, "setup"))
    parts.append(table_html(tables, "runs", ["run", "kind", "algo", "seed", "precision", "steps", "accuracy"]))
    parts.append("</section>")

    h = tables["headline"]
    parts.append(
        "<section id='headline'><h2>Headline numbers</h2><table><thead><tr><th>measure</th><th>value</th>"
        "<th>95% interval</th><th>interval from</th></tr></thead><tbody>"
    )
    for i, rec in enumerate(h.to_dict("records")):
        parts.append(
            f"<tr><td>{html.escape(rec['label'])}</td>"
            f"<td>{cell('headline', i, 'value', rec['value'], rec['format'])}</td>"
            f"<td>{_interval('headline', i, rec, rec['format']).strip()}</td>"
            f"<td>{html.escape(str(_py(rec.get('interval')) or ''))}</td></tr>"  # NaN: a probe's row has none
        )
    parts.append("</tbody></table></section>")

    parts.append("<section id='verdicts'><h2>The published claims, as this study measured them</h2>")
    for i, rec in enumerate(tables["claims"].to_dict("records")):
        parts.append(
            f"<p class='verdict {_verdict_class(rec['verdict'])}'><b>{html.escape(rec['claim'])}</b> — "
            f"<i>published: {html.escape(rec['published'])}</i><br><b class='tag'>"
            f"{html.escape(rec['verdict'])}</b> {_claim_text(rec['text'], h)}"
            + _paired_note(i, rec)
            + f"<br><span class='note'>compared: {html.escape(rec.get('comparison') or '')}; against: "
            f"{html.escape(rec.get('null') or '')}"
            + (f"; to decide: {html.escape(rec['more_data'])}" if rec.get("more_data") else "")
            + "</span></p>"
        )
    parts.append("</section>")

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
    parts.append("<section id='plots'><h2>Plots</h2>")
    parts += [_figure(*f) for f in figures]
    parts.append("</section>")
    parts.append(_experts_section(tables))

    parts.append(
        f"<section id='surgery'><h2>Surgery: is the {html.escape(primary)} mask sufficient, is it necessary?</h2>"
    )
    parts.append(
        "<p class='note'>patch = base + the target's update on the mask only; revert = the target with the "
        "mask reset to base. recovery = (accuracy − base) / (tuned − base). accuracy_lo/hi: Wilson 95% interval "
        "from n test problems. Controls: random masks with the same per-tensor density.</p>"
    )
    parts.append(table_html(tables, "surgery"))
    parts.append("</section><section id='retrain'><h2>Subnetwork-only retraining</h2>")
    parts.append(
        f"<p class='note'>Trained again from the base with only the {html.escape(primary)} mask's entries trainable "
        "(same data, same seed), compared with that full run.</p>"
    )
    parts.append(table_html(tables, "retrain"))
    parts.append("</section>")
    if "cause" in tables and len(tables["cause"]):
        parts.append(
            "<section id='cause'><h2>Cause analysis: in-distribution data, KL</h2><p class='note'>Same prompts and "
            "steps: SFT on the base model's own correct samples (in-distribution) and on the same answers in a "
            "style the base does not produce (out-of-distribution); the RL run with KL (β &gt; 0) and without. "
            "Changed fraction bitwise in bf16 and in the fp32 master weights.</p>"
        )
        parts.append(table_html(tables, "cause") + "</section>")
    parts.append(_probe_sections(tables))
    parts.append(law_section(tables, table_html, _figure))
    parts.append("<section id='tables'><h2>Per-run measurements</h2>")
    parts.append(table_html(tables, "runs", [c for c in runs.columns if c not in ("run_dir",)]))
    parts.append("<h3>Per module</h3>" + table_html(tables, "modules"))
    parts.append("<h3>Overlap of every pair of runs</h3>" + table_html(tables, "overlap"))
    parts.append("<h3>Dynamics</h3>" + table_html(tables, "dynamics"))
    parts.append("<h3>Accuracy</h3>" + table_html(tables, "accuracy"))
    parts.append(
        "<p class='note'>All tables, and the per-tensor, per-decile and training-curve tables, are in "
        "tables/ next to this file as CSV and Parquet.</p></section></body></html>"
    )
    return "\n".join(parts)


def _experts_section(tables: dict[str, pd.DataFrame]) -> str:
    """Mixture-of-experts models only: which experts RL touched, the routers, and whether the seeds pick the same
    experts (the study's experts* and routers tables)."""
    if "experts" not in tables or not len(tables["experts"]):
        return ""
    from rldelta.plots.experts import expert_heatmaps

    parts = [
        "<section id='experts'><h2>Experts</h2>",
        "<p class='note'>The model is a mixture of experts. Changed fraction of each routed expert (bitwise in bf16, "
        "the final checkpoint against the base), summed over the expert's tensors, per layer; the routers "
        "(mlp.gate, and the shared expert's gate) beside them. Per-expert rows in tables/experts.csv.</p>",
        _figure(
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
    return "\n".join(parts)


def _figure(fid: str, title: str, png: bytes, caption: str) -> str:
    return (
        f"<figure id='{fid}'><h3>{html.escape(title)}</h3>{_img(png, title)}"
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _probe_sections(tables: dict[str, pd.DataFrame]) -> str:
    """One section per mechanism probe that ran: its verdict lines, its plot and its table."""
    from rldelta.plots import logprobs as probe_plots

    verdicts = tables.get("probe_verdicts")
    parts = []

    def verdict_lines(prefix: str) -> str:
        if verdicts is None:
            return ""
        rows = [r for r in verdicts.to_dict("records") if r["probe"].startswith(prefix)]
        return "".join(
            f"<p class='verdict part'><b>{html.escape(r['probe'])}</b><br>{html.escape(r['verdict'])}</p>" for r in rows
        )

    if "probe_logprobs" in tables:
        parts.append("<section id='probe-logprobs'><h2>Probe: suppression vs amplification</h2>")
        parts.append(
            "<p class='note'>Completions sampled once from the base model on held-out prompts, labelled by the "
            "task's reward, and scored by every saved checkpoint. amplification = rise of log p(correct), "
            "suppression = fall of log p(wrong), in nats per completion against the base.</p>"
        )
        parts.append(verdict_lines("suppression") + verdict_lines("two phases"))
        parts.append(
            _figure(
                "plot-logprobs",
                "Log-probability of correct and wrong completions",
                probe_plots.logprob_curves(tables["probe_logprobs"]),
                "Solid: the full run; dashed: positive-advantage only; dotted: negative-advantage only."
                if "probe_advantages" in tables
                else "The first run of the grid, at every saved step.",
            )
        )
        parts.append(
            table_html(
                tables,
                "probe_logprobs",
                [
                    "run",
                    "step",
                    "logp_correct",
                    "logp_wrong",
                    "amplification",
                    "suppression",
                    "correct_share",
                    "probe_entropy",
                    "train_entropy",
                ],
            )
        )
        parts.append("<h3>Which component moves faster</h3>" + table_html(tables, "probe_phases"))
        if "probe_advantages" in tables:
            parts.append("<h3>Learning from positive or from negative advantages only</h3>")
            parts.append(verdict_lines("positive vs negative"))
            parts.append(
                _figure(
                    "plot-passk",
                    "pass@k",
                    probe_plots.pass_at_k_curves(tables["probe_advantages"]),
                    "Same seed and data; the split runs keep only the samples with positive (negative) "
                    "advantage in the loss.",
                )
            )
            parts.append(table_html(tables, "probe_advantages"))
        parts.append("</section>")
    if "probe_activations" in tables:
        from rldelta.plots import activations as activation_plots

        parts.append("<section id='probe-activations'><h2>Probe: activation sparsity vs difficulty</h2>")
        parts.append(verdict_lines("activation") + verdict_lines("neurons"))
        parts.append(
            _figure(
                "plot-activations",
                "Hidden-state sparsity by difficulty",
                activation_plots.sparsity_by_level_plot(tables["probe_activations"]),
                "Per layer, residual stream and MLP intermediate; levels beyond the training range shaded.",
            )
        )
        parts.append("</section>")
    if "probe_formats" in tables:
        from rldelta.metrics.formats import shares_by_step
        from rldelta.plots import formats as format_plots

        parts.append("<section id='probe-formats'><h2>Probe: format selection</h2>")
        parts.append(verdict_lines("format selection"))
        for model, sub in tables["probe_formats"].groupby("model", sort=False):
            parts.append(
                _figure(
                    f"plot-formats-{html.escape(str(model))}",
                    f"Format shares during RL — {model}",
                    format_plots.format_shares_plot(sorted(set(sub["step"])), shares_by_step(sub.to_dict("records"))),
                    "Share of each format among the sampled completions at every training step.",
                )
            )
        parts.append("</section>")
    if "steps_summary" in tables and len(tables["steps_summary"]):
        parts.append("<section id='steps'><h2>Every optimizer step</h2>")
        parts.append(
            "<p class='note'>Recorded after every optimizer step, not only at the saved checkpoints: the mean share "
            "of the weights one step changes, the mean share of a step's set the previous step had changed too, the "
            "step from which the union holds 90% of the final set (saturation), and the Spearman correlation of the "
            "per-step changed fraction with the learning rate (none under a constant learning rate). The per-step "
            "rows are in tables/steps.csv.</p>"
        )
        parts.append(table_html(tables, "steps_summary") + "</section>")
    if "subnetwork_fixed" in tables:
        parts.append("<section id='subnetwork-fixed'><h2>When is the subnetwork fixed?</h2>")
        parts.append(
            "<p class='note'>The first saved step whose changed set already holds ≥ 90% of the entries "
            "changed at the end (see the dynamics table for every step, and the overlap with the other seed "
            "at the same step).</p>"
        )
        parts.append(table_html(tables, "subnetwork_fixed") + "</section>")
    return "\n".join(parts)


def write_report(tables: dict[str, pd.DataFrame], path: str | Path) -> Path:
    """Render the report and write it atomically; returns its path."""
    path = Path(path)
    atomic_write_bytes(path, render(tables).encode())
    return path


__all__ = ["render", "write_report", "fmt", "cell", "QUESTION"]
