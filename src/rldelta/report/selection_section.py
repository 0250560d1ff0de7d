"""The report's "Selection or creation?" section: the format-selection stage's mixture models, the Echo Chamber
claims over its RL runs, and the steering sweeps set against RL (study/selection.py). Absent when the stage ran
only the light formats probe."""

from __future__ import annotations

import html

import pandas as pd

from rldelta.report.blocks import figure, table_html
from rldelta.report.probe_sections import verdict_lines
from rldelta.report.sections import Tables

INTRO = (
    "<p class='note'>Models pretrained from scratch on arithmetic written in three formats (corpus shares and "
    "per-format error rates in the first table), then RL on the same problems with a correctness reward only. "
    "If RL <i>selects</i>, one format that pretraining already wrote takes over within the first epoch; the "
    "claims below test that on the measured format tables (95% intervals on the counts, an outcome of "
    "'undecided' where they straddle the line). Then each model is steered without RL toward RL's winner and "
    "toward a format RL left behind: by a prompt, by an activation vector from the pretraining corpus, and by "
    "SFT on k examples; each with the compute it spent (FLOPs from token counts) against RL's, and for SFT the "
    "weights it changed and their overlap with RL's changed set.</p>"
)


def selection_section(tables: Tables) -> list[str]:
    if "selection_claims" not in tables:
        return []
    parts = ["<section id='selection'><h2>Selection or creation?</h2>", INTRO]
    if "selection_pretraining" in tables:
        parts += _pretraining(tables)
    parts.append("<h3>The Echo Chamber claims</h3>")
    parts.append(verdict_lines(tables, "Echo Chamber claim"))
    parts.append(table_html(tables, "selection_claims", [c for c in tables["selection_claims"].columns if c != "text"]))
    if "steering" in tables:
        parts.append("<h3>Steering instead of RL</h3>")
        parts.append(verdict_lines(tables, "steering instead of RL"))
        parts += _steering_figures(tables)
        cols = ["size", "target", "method", "setting", "share", "share_low", "share_high", "accuracy"]
        cols += ["baseline_share", "forward_tokens", "backward_tokens", "flops", "share_of_rl_flops", "wall_seconds"]
        cols += ["changed_frac", "overlap"]
        parts.append(table_html(tables, "steering", cols + ["random_overlap"]))
    parts.append("</section>")
    return parts


def _pretraining(tables: Tables) -> list[str]:
    """The mixture models: their budget, then each format's corpus share, sampled share and accuracy."""
    from rldelta.train.answer_formats import FORMAT_NAMES

    pre = tables["selection_pretraining"]
    cols = ["size", "parameters", "budget", "steps", "step_cap", "final_loss", "train_minutes"]
    parts = ["<h3>The mixture models after pretraining</h3>", table_html(tables, "selection_pretraining", cols)]
    parts += [
        f"<p class='note'>{html.escape(str(r['size']))}: {html.escape(str(r['plateau']))}</p>"
        for _, r in pre.iterrows()
    ]
    rows = [
        {
            "size": r["size"],
            "format": f,
            "format_corpus": r[f"{f}_corpus"],
            "format_sampled": r[f"{f}_sampled"],
            "accuracy": r[f"{f}_accuracy"],
        }
        for _, r in pre.iterrows()
        for f in FORMAT_NAMES
    ]
    long = {"selection_formats": pd.DataFrame(rows)}
    parts.append(
        "<p class='note'>Each format's share of the corpus, its share of the completions sampled at temperature 1 on "
        "test prompts right after pretraining, and the accuracy within it (the record's eval).</p>"
    )
    parts.append(
        table_html(
            long, "selection_formats", headers={"format_corpus": "corpus share", "format_sampled": "sampled share"}
        )
    )
    return parts


def _rl_share(shares: pd.DataFrame, size: str, target: str) -> tuple[list[int], list[float]]:
    sub = shares[(shares["model"] == size) & (shares["format"] == target)].sort_values("step")
    return sub["step"].astype(int).tolist(), sub["share"].astype(float).tolist()


def _steering_figures(tables: Tables) -> list[str]:
    from rldelta.plots.steering import compute_share_plot, share_over_steps_plot

    parts = []
    for (size, target), sub in tables["steering"].groupby(["size", "target"], sort=False):
        rows = sub.to_dict("records")
        steps, share = _rl_share(tables["probe_formats"], size, target)
        rl = next((r for r in rows if r["method"] == "rl"), None)
        # RL's FLOPs spread evenly over its steps: what it had spent when it sampled each step.
        curve = ([rl["flops"] * s / max(steps) for s in steps], share) if rl and steps else None
        fid = f"{html.escape(str(size))}-{html.escape(str(target))}"
        parts.append(
            figure(
                f"plot-steer-share-{fid}",
                f"{target} share: RL over its steps and each intervention — {size}",
                share_over_steps_plot(steps, share, rows, target=target, title=f"{size}: toward {target}"),
                "The black line is the GRPO run's share of this format at each step; each dashed level is one "
                "intervention's share on the test prompts (band: 95% interval); dotted: the model without any.",
            )
        )
        parts.append(
            figure(
                f"plot-steer-compute-{fid}",
                f"Compute against the {target} share — {size}",
                compute_share_plot(rows, target=target, rl_curve=curve, title=f"{size}: toward {target}"),
                "FLOPs each intervention spent (prompt: the extra prefill; activation: estimating the vector; SFT: "
                "its training) against the share it reached; RL's curve places each step's share at the FLOPs "
                "spent so far.",
            )
        )
    return parts
