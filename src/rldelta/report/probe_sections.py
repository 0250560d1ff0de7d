"""The report's sections for the mechanism probes and the step recorder, one function per probe that ran: its
verdict lines, its plot and its table (none when the probe did not run)."""

from __future__ import annotations

import html

from rldelta.report.blocks import figure, table_html
from rldelta.report.sections import Tables


def verdict_lines(tables: Tables, prefix: str) -> str:
    verdicts = tables.get("probe_verdicts")
    if verdicts is None:
        return ""
    rows = [r for r in verdicts.to_dict("records") if r["probe"].startswith(prefix)]
    return "".join(
        f"<p class='verdict part'><b>{html.escape(r['probe'])}</b><br>{html.escape(r['verdict'])}</p>" for r in rows
    )


def logprobs_section(tables: Tables) -> list[str]:
    """The log-prob probe: suppression vs amplification, its two phases, positive vs negative advantages."""
    if "probe_logprobs" not in tables:
        return []
    from rldelta.plots import logprobs as probe_plots

    parts = []
    parts.append("<section id='probe-logprobs'><h2>Probe: suppression vs amplification</h2>")
    parts.append(
        "<p class='note'>Completions sampled once from the base model on held-out prompts, labelled by the "
        "task's reward, and scored by every saved checkpoint. amplification = rise of log p(correct), "
        "suppression = fall of log p(wrong), in nats per completion against the base.</p>"
    )
    parts.append(verdict_lines(tables, "suppression") + verdict_lines(tables, "two phases"))
    parts.append(
        figure(
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
        parts.append(verdict_lines(tables, "positive vs negative"))
        parts.append(
            figure(
                "plot-passk",
                "pass@k",
                probe_plots.pass_at_k_curves(tables["probe_advantages"]),
                "Same seed and data; the split runs keep only the samples with positive (negative) "
                "advantage in the loss.",
            )
        )
        parts.append(table_html(tables, "probe_advantages"))
    parts.append("</section>")
    return parts


def activations_section(tables: Tables) -> list[str]:
    """The activation probe: hidden-state sparsity by difficulty."""
    if "probe_activations" not in tables:
        return []
    parts = []
    from rldelta.plots import activations as activation_plots

    parts.append("<section id='probe-activations'><h2>Probe: activation sparsity vs difficulty</h2>")
    parts.append(verdict_lines(tables, "activation") + verdict_lines(tables, "neurons"))
    parts.append(
        figure(
            "plot-activations",
            "Hidden-state sparsity by difficulty",
            activation_plots.sparsity_by_level_plot(tables["probe_activations"]),
            "Per layer, residual stream and MLP intermediate; levels beyond the training range shaded.",
        )
    )
    parts.append("</section>")
    return parts


def formats_section(tables: Tables) -> list[str]:
    """The format-selection probe: each format's share during RL, per mixture model."""
    if "probe_formats" not in tables:
        return []
    parts = []
    from rldelta.metrics.formats import shares_by_step
    from rldelta.plots import formats as format_plots

    parts.append("<section id='probe-formats'><h2>Probe: format selection</h2>")
    parts.append(verdict_lines(tables, "format selection"))
    for model, sub in tables["probe_formats"].groupby("model", sort=False):
        parts.append(
            figure(
                f"plot-formats-{html.escape(str(model))}",
                f"Format shares during RL — {model}",
                format_plots.format_shares_plot(sorted(set(sub["step"])), shares_by_step(sub.to_dict("records"))),
                "Share of each format among the sampled completions at every training step.",
            )
        )
    parts.append("</section>")
    return parts


def steps_section(tables: Tables) -> list[str]:
    """The step recorder's summary: what every optimizer step changes."""
    if not ("steps_summary" in tables and len(tables["steps_summary"])):
        return []
    parts = []
    parts.append("<section id='steps'><h2>Every optimizer step</h2>")
    parts.append(
        "<p class='note'>Recorded after every optimizer step, not only at the saved checkpoints: the mean share "
        "of the weights one step changes, the mean share of a step's set the previous step had changed too, the "
        "step from which the union holds 90% of the final set (saturation), and the Spearman correlation of the "
        "per-step changed fraction with the learning rate (none under a constant learning rate). The per-step "
        "rows are in tables/steps.csv.</p>"
    )
    parts.append(table_html(tables, "steps_summary") + "</section>")
    return parts


def subnetwork_fixed_section(tables: Tables) -> list[str]:
    """When each run's subnetwork is fixed."""
    if "subnetwork_fixed" not in tables:
        return []
    parts = []
    parts.append("<section id='subnetwork-fixed'><h2>When is the subnetwork fixed?</h2>")
    parts.append(
        "<p class='note'>The first saved step whose changed set already holds ≥ 90% of the entries "
        "changed at the end (see the dynamics table for every step, and the overlap with the other seed "
        "at the same step).</p>"
    )
    parts.append(table_html(tables, "subnetwork_fixed") + "</section>")
    return parts


PROBE_SECTIONS = (logprobs_section, activations_section, formats_section, steps_section, subnetwork_fixed_section)
