"""The study's per-step dynamics: every optimizer step of every run, from the run's own StepRecorder.

The saved checkpoints (every 10 steps in the demo) show where the change set ended up; the recorder's rows show
its path: how much each step changes, whether consecutive steps touch the same entries, when the set saturates,
and whether the per-step change follows the learning rate.
"""

from __future__ import annotations

import pandas as pd

from rldelta.metrics.activations import correlation
from rldelta.runtime.files import STEPS_FILE
from rldelta.study.folders import Run
from rldelta.train.step_files import read_steps
from rldelta.train.step_recorder import TOTAL

STEP_COLUMNS = [
    "run",
    "step",
    "changed_step_frac",
    "changed_base_frac",
    "overlap_prev_step",
    "overlap_union",
    "union_frac",
    "share_of_final_set",
    "learning_rate",
    "bytes_index",
    "bytes_dense",
]


def step_tables(runs: list[Run]) -> dict[str, pd.DataFrame]:
    """`steps`: the total row of every recorded step of every run; `steps_summary`: one row per run. Runs trained
    without the recorder are left out (both tables are empty when none has it)."""
    frames, summary = [], []
    for r in runs:
        if not (r.dir / STEPS_FILE).is_file():
            continue
        rows, s = read_steps(r.dir)
        total = rows[rows["module"] == TOTAL].sort_values("step").assign(run=r.label)
        reached = dict(zip(s.get("steps", []), s.get("share_of_final_set", [])))
        total["share_of_final_set"] = total["step"].map(reached)
        frames.append(total[STEP_COLUMNS])
        later = total[total["step"] > total["step"].min()]  # the first step starts every set: overlap is defined after
        summary.append(
            {
                "run": r.label,
                "steps": len(total),
                "final_set": s.get("final_set"),
                "saturation_step": s.get("saturation_step"),
                "mean_changed_step_frac": float(total["changed_step_frac"].mean()),
                "mean_overlap_prev_step": float(later["overlap_prev_step"].mean()) if len(later) else None,
                "lr_spearman": correlation(total["changed_step_frac"], total["learning_rate"])["spearman"],
            }
        )
    steps = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=STEP_COLUMNS)
    return {"steps": steps, "steps_summary": pd.DataFrame(summary)}
