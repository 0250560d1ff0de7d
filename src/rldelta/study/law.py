"""'Does the law predict the sparsity?': the update-sparsity law (`rldelta predict`) tested on the study's own runs.

The law is calibrated on the first CALIBRATE_STEPS recorded steps of ONE run (the grid's first fp32 run, from its
steps.parquet) and then predicts every run of the grid: the calibration run's later steps and the other runs whole,
with nothing fitted on them. A prediction is compared with what the run's step recorder measured (the bitwise bf16
changed fraction against the base after each step), per run and per step. A run trained in bf16 has no fp32 master
for the drift to accumulate in, so the law does not apply to it and its row says so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rldelta.runtime.errors import RldeltaError
from rldelta.runtime.files import STEPS_FILE
from rldelta.study.folders import Run
from rldelta.train.step_files import read_steps
from rldelta.train.step_recorder import TOTAL

CALIBRATE_STEPS = 5
# The target of the validation sweep (docs/law.md): within 2 points or 15 % of the measured fraction, whichever is
# larger, for the total; within 25 % relative for a step's own changed fraction.
TARGET_POINTS, TARGET_REL, STEP_REL = 0.02, 0.15, 0.25

LAW_COLUMNS = [
    "run",
    "algo",
    "seed",
    "precision",
    "role",
    "lr",
    "steps",
    "changed_frac",
    "law_frac",
    "law_lo",
    "law_hi",
    "law_abs_err",
    "law_within_target",
    "step_median_rel_err",
    "step_share_within_25pct",
    "note",
]
LAW_STEP_COLUMNS = [
    "run",
    "step",
    "held_out",
    "changed_base_frac",
    "law_base_frac",
    "changed_step_frac",
    "law_step_frac",
]
SCHEDULES = {"constant": "constant", "constant_with_warmup": "constant", "linear": "linear", "cosine": "cosine"}


def within_target(predicted: float, measured: float) -> bool:
    return abs(predicted - measured) <= max(TARGET_POINTS, TARGET_REL * measured)


def _totals(run: Run) -> pd.DataFrame:
    rows, _ = read_steps(run.dir)
    return rows[rows["module"] == TOTAL].sort_values("step").reset_index(drop=True)


def _settings(run: Run, steps: int):
    from rldelta.predict import Settings

    tc = run.config
    return Settings(
        lr=tc.lr,
        steps=steps,
        schedule=SCHEDULES[tc.lr_scheduler],
        warmup=tc.warmup_steps,
        beta1=tc.adam_beta1,
        beta2=tc.adam_beta2,
        weight_decay=tc.weight_decay,
    )


def _empty() -> dict[str, pd.DataFrame]:
    return {"law": pd.DataFrame(columns=LAW_COLUMNS), "law_steps": pd.DataFrame(columns=LAW_STEP_COLUMNS)}


def law_tables(runs: list[Run], base: Path, k: int = CALIBRATE_STEPS) -> dict[str, pd.DataFrame]:
    """`law`: one row per recorded run of the grid, predicted vs measured changed fraction after its last step;
    `law_steps`: every step of every predicted run. Both empty where no fp32 run has 4 recorded steps."""
    from rldelta.predict import calibrate, predict, read_base

    recorded = [r for r in runs if (r.dir / STEPS_FILE).is_file()]
    candidates = [r for r in recorded if r.precision == "fp32" and r.config.lr_scheduler in SCHEDULES]
    if not candidates:
        return _empty()
    cal_run = candidates[0]
    # a short run (the test's 4 steps) is calibrated on all but its last step, never on fewer than 3 (q, then drift)
    k = min(k, len(_totals(cal_run)) - 1)
    if k < 3:
        return _empty()
    cells = read_base(base)
    try:
        cal, _ = calibrate(cal_run.dir, k, cells)
    except RldeltaError:  # too few steps or module kinds to fit: the section says the law was not tested
        return _empty()
    rows, steps = [], []
    for r in recorded:
        m = _totals(r)
        t = m["step"].to_numpy()
        row = {"run": r.label, "algo": r.algo, "seed": r.seed, "precision": r.precision, "lr": r.config.lr}
        row |= {"steps": int(t.max()), "changed_frac": float(m["changed_base_frac"].iloc[-1])}
        if r.precision != "fp32" or r.config.lr_scheduler not in SCHEDULES:
            why = "bf16 training: no fp32 master" if r.precision != "fp32" else f"schedule {r.config.lr_scheduler}"
            rows.append(row | {"role": "not predicted", "note": f"the law does not apply ({why})"})
            continue
        p = predict(cells, _settings(r, int(t.max())), cal)
        ps = pd.DataFrame(p["per_step"]).set_index("step").loc[t]
        own = r.label == cal_run.label
        held = t > k if own else np.ones(len(t), bool)
        f_m, f_p = m["changed_base_frac"].to_numpy(), ps["changed_base_frac"].to_numpy()
        s_m, s_p = m["changed_step_frac"].to_numpy(), ps["changed_step_frac"].to_numpy()
        ok = held & (s_m > 0)
        rel = np.abs(s_p - s_m)[ok] / s_m[ok]
        rows.append(
            row
            | {
                "role": f"calibration (steps 1-{k}; later steps held out)" if own else "held out",
                "law_frac": float(f_p[-1]),
                "law_lo": p["interval"][0],
                "law_hi": p["interval"][1],
                "law_abs_err": float(abs(f_p[-1] - f_m[-1])),
                "law_within_target": within_target(float(f_p[-1]), float(f_m[-1])),
                "step_median_rel_err": float(np.median(rel)) if rel.size else None,
                "step_share_within_25pct": float(np.mean(rel <= STEP_REL)) if rel.size else None,
                "note": f"calibrated on the first {k} steps of {cal_run.label}",
            }
        )
        steps += [
            {"run": r.label, "step": int(a), "held_out": bool(h), "changed_base_frac": b, "law_base_frac": c}
            | {"changed_step_frac": d, "law_step_frac": e}
            for a, h, b, c, d, e in zip(t, held, f_m, f_p, s_m, s_p)
        ]
    return {
        "law": pd.DataFrame(rows, columns=LAW_COLUMNS),
        "law_steps": pd.DataFrame(steps, columns=LAW_STEP_COLUMNS),
    }


def law_numbers(law: pd.DataFrame) -> dict[str, float | str | None]:
    """The numbers the 'why' table's law row reads: over the held-out runs, the mean measured and predicted changed
    fraction, their mean absolute error and the median of their per-step relative errors (empty without one)."""
    held = law[law["role"] == "held out"] if len(law) else law
    if not len(held):
        return {}
    meas, err = float(held["changed_frac"].mean()), float(held["law_abs_err"].mean())
    return {
        "law_measured": meas,
        "law_predicted": float(held["law_frac"].mean()),
        "law_abs_err": err,
        "law_step_err": float(held["step_median_rel_err"].median()),
    }


NUMBER_LABELS = {
    "law_measured": "law test: measured changed fraction, held-out runs (mean)",
    "law_predicted": "law test: predicted changed fraction, held-out runs (mean)",
    "law_abs_err": "law test: absolute error of the prediction, held-out runs (mean)",
    "law_step_err": "law test: per-step changed fraction, median relative error (held-out runs)",
}


def law_report_tables(runs: list[Run], base: Path) -> dict[str, pd.DataFrame]:
    """The study's law tables and the numbers the 'why' table reads (key, label, value, format, like the probes')."""
    tables = law_tables(runs, base)
    nums = law_numbers(tables["law"])
    rows = [(k, label, nums.get(k), "pct") for k, label in NUMBER_LABELS.items() if nums.get(k) is not None]
    tables["law_numbers"] = pd.DataFrame(rows, columns=["key", "label", "value", "format"])
    return tables
