"""The report's 'Does the law predict the sparsity?' section, from the study's `law` and `law_steps` tables.

One entry of report/html.py's SECTIONS.
"""

from __future__ import annotations

import pandas as pd

from rldelta.report.blocks import figure, table_html

LAW_COLS = ["run", "role", "steps", "changed_frac", "law_frac", "law_lo", "law_hi", "law_abs_err"]
LAW_COLS += ["law_within_target", "step_median_rel_err", "step_share_within_25pct", "note"]
HEADERS = {
    "changed_frac": "measured changed",
    "law_frac": "law",
    "law_lo": "law, low",
    "law_hi": "law, high",
    "law_abs_err": "abs. error",
    "law_within_target": "within target",
    "step_median_rel_err": "per step: median rel. error",
    "step_share_within_25pct": "per step: share within 25%",
}


def law_section(tables: dict[str, pd.DataFrame]) -> list[str]:
    """Predicted vs measured for every recorded run; nothing where the study has no law table."""
    from rldelta.plots import study as sp

    law = tables.get("law")
    if law is None:
        return []
    parts = [
        "<section id='law'><h2>Does the law predict the sparsity?</h2>",
        "<p class='note'>The update-sparsity law (<code>rldelta predict</code>, docs/law.md): an entry of the bf16 "
        "copy changes when the fp32 master's Adam drift carries it out of its rounding cell, whose edges come "
        "exactly from the base's weights. Its drift parameters were calibrated on the first steps of one run (its "
        "steps.parquet) and nothing else; every other run, and that run's later steps, are predictions held out "
        "from the fit. Measured: the step recorder's bitwise changed fraction of the bf16 copy against the base "
        "after the run's last step. Target: within 2 points or 15% of the measured fraction, whichever is larger; "
        "per step within 25%. A run trained in bf16 (no fp32 master) is outside the law.</p>",
    ]
    if not len(law):
        parts.append("<p class='note'>Not tested: no fp32 run recorded enough steps (4) to calibrate on.</p>")
        return ["".join(parts) + "</section>"]
    parts.append(table_html(tables, "law", LAW_COLS, HEADERS))
    steps = tables.get("law_steps")
    if steps is not None and len(steps):
        parts.append(
            figure(
                "plot-law",
                "Predicted vs measured, every step",
                sp.law_steps(steps),
                "Dots: measured by the step recorder (hollow: the steps the law was calibrated on). Lines: the law.",
            )
        )
    return ["".join(parts) + "</section>"]
