"""Validation sweep of the update-sparsity law (`rldelta predict`): train a grid of runs with the step recorder on,
calibrate the law on the first K steps of ONE run, predict every other run and step, compare with what was measured.

    python benchmarks/law_sweep.py train   --out /work/out/law      # the runs (resumable: done runs are skipped)
    python benchmarks/law_sweep.py analyse --out /work/out/law      # predictions vs measured: law.csv, law.json, law.png
    python benchmarks/law_sweep.py clean   --out /work/out/law      # delete the bulky checkpoints, keep steps.parquet

The grid: the 5m mixture model (pretrained here for 200 steps; an fp32 base) with GRPO at lr 3e-6, 1e-5, 3e-5, and
the tiny Llama (random init, fp32, another size) with offline DPO at the same three learning rates, 5m DPO at 1e-5,
and SmolLM2-135M-Instruct (bf16 base) with GRPO at the demo preset's task settings at the same three learning rates;
fp32 master weights, 60 steps, the step recorder on. `train --runs smol` trains one part of the grid. The
calibration run is 5m GRPO at lr 1e-5, its first 5 steps only; nothing is fitted on any other run or later step.
The competitor: the changed fraction as a function of lr*steps alone (no |w|), fitted on the same calibration points.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

PY = Path(sys.executable)
RLDELTA = PY.with_name("rldelta")
STEPS = 60
CALIBRATION = "5m-grpo-1e-05"
PRETRAIN_STEPS = 200
CALIBRATE_STEPS = 5
MIX_TRAIN = [
    "--task", "mixarith", "--difficulty", "1", "--prompts-per-step", "4", "--num-generations", "4",
    "--max-completion-length", "16", "--temperature", "1.0",
]  # fmt: skip
SMOL_TRAIN = [
    "--task",
    "arith",
    "--difficulty",
    "1",
    "--rewards",
    "correctness",
    "--prompts-per-step",
    "2",
    "--num-generations",
    "4",
    "--max-completion-length",
    "16",
    "--temperature",
    "1.0",
]  # fmt: skip  (the demo preset's task settings)
TINY_TRAIN = ["--task", "arith", "--prompts-per-step", "4"]


def grid() -> list[dict]:
    """The runs, calibration run first (so a sweep cut short still has it), then the cheap ones."""
    runs = [dict(name=CALIBRATION, model="mix5m", algo="grpo", lr=1e-5, extra=MIX_TRAIN)]
    runs += [
        dict(name=f"tiny-dpo-{lr:.0e}", model="tiny", algo="dpo", lr=lr, extra=TINY_TRAIN) for lr in (3e-6, 1e-5, 3e-5)
    ]
    runs += [dict(name=f"5m-grpo-{lr:.0e}", model="mix5m", algo="grpo", lr=lr, extra=MIX_TRAIN) for lr in (3e-5, 3e-6)]
    runs += [dict(name="5m-dpo-1e-05", model="mix5m", algo="dpo", lr=1e-5, extra=MIX_TRAIN[:4])]
    runs += [
        dict(name=f"smol-grpo-{lr:.0e}", model="smollm2", algo="grpo", lr=lr, extra=SMOL_TRAIN)
        for lr in (1e-5, 3e-5, 3e-6)
    ]
    return runs


def selected(names: list[str] | None) -> list[dict]:
    """The grid's runs whose name starts with one of `names` (all of them without)."""
    return [r for r in grid() if not names or any(r["name"].startswith(n) for n in names)]


def done(run: Path) -> bool:
    return (run / "checkpoints" / f"step-{STEPS}").is_dir() and (run / "steps.parquet").is_file()


def prepare(out: Path, models: set[str]) -> None:
    if "smollm2" in models and not (out / "smollm2" / "model.safetensors").is_file():
        subprocess.run([str(RLDELTA), "models", "prepare", "smollm2-135m", "-o", str(out / "smollm2")], check=True)
    if "mix5m" in models and not (out / "mix5m" / "model.safetensors").is_file():
        cmd = [str(RLDELTA), "models", "pretrain-mixture", "--size", "5m", "--steps", str(PRETRAIN_STEPS)]
        subprocess.run([*cmd, "-o", str(out / "mix5m")], check=True)
    if "tiny" in models and not (out / "tiny" / "model.safetensors").is_file():
        subprocess.run([str(RLDELTA), "models", "tiny", "-o", str(out / "tiny")], check=True)


def train(out: Path, names: list[str] | None = None) -> None:
    runs = selected(names)
    prepare(out, {r["model"] for r in runs})
    for r in runs:
        run = out / "runs" / r["name"]
        if done(run):
            print(f"{r['name']}: done, skipped", flush=True)
            continue
        cmd = [str(RLDELTA), "train", "-o", str(run)]
        if (run / "run.json").is_file():
            cmd += ["--resume"]
        else:
            cmd += ["--model", str(out / r["model"]), "--algo", r["algo"], "--lr", str(r["lr"]), "--steps", str(STEPS)]
            cmd += ["--precision", "fp32", "--record-steps", "--save-steps", str(STEPS), *r["extra"]]
        t0 = time.time()
        print(f"{r['name']}: {' '.join(cmd)}", flush=True)
        subprocess.run(cmd, check=True)
        print(f"{r['name']}: trained in {time.time() - t0:.0f} s", flush=True)


def readable(run: Path) -> bool:
    """A run whose steps.parquet is complete: finished, or stopped (the recorder closes the file when a run fails)."""
    try:
        return len(measured(run)) > 0
    except (OSError, ValueError):
        return False


def measured(run: Path) -> pd.DataFrame:
    """The run's recorded totals per step: changed vs base and vs the previous step, and the lr."""
    df = pd.read_parquet(run / "steps.parquet")
    return df[df["module"] == "total"].sort_values("step").reset_index(drop=True)


def competitor(cal: pd.DataFrame, lr: float) -> tuple[float, float]:
    """The changed fraction as a function of lr·steps alone, F = 1 − exp(−(c·lr·t)^k), fitted on the calibration
    points (no |w|, no rounding)."""
    x = np.log(lr * cal["step"].to_numpy())
    y = np.log(-np.log1p(-np.clip(cal["changed_base_frac"].to_numpy(), 1e-9, 1 - 1e-9)))
    k, b = np.polyfit(x, y, 1)
    return float(k), float(np.exp(b / k))


def compete(k: float, c: float, lr: float, t: np.ndarray) -> np.ndarray:
    return 1 - np.exp(-((c * lr * t) ** k))


def within(pred: float, meas: float) -> bool:
    return abs(pred - meas) <= max(0.02, 0.15 * meas)


def analyse(out: Path) -> dict:
    from rldelta.predict import SWEEP_LAW, Settings, calibrate, predict, read_base

    runs = [r for r in grid() if readable(out / "runs" / r["name"])]
    if not runs:
        raise SystemExit(f"no run in {out / 'runs'} has a readable steps.parquet: run the train stage first")
    bases = {m: read_base(out / m) for m in sorted({r["model"] for r in runs})}
    if any(r["name"] == CALIBRATION for r in runs):
        cal, _ = calibrate(out / "runs" / CALIBRATION, CALIBRATE_STEPS, bases["mix5m"])
        first = measured(out / "runs" / CALIBRATION)
        cal_lr = next(r["lr"] for r in grid() if r["name"] == CALIBRATION)
        k, c = competitor(first[first["step"] <= CALIBRATE_STEPS], cal_lr)
    else:  # the shipped defaults are the fit on that run; the competitor needs its points, so it is left out
        print(f"{CALIBRATION} not trained here: predicting with rldelta predict's defaults, no competitor", flush=True)
        cal, k, c = SWEEP_LAW, float("nan"), float("nan")
    rows, curves = [], {}
    for r in runs:
        m = measured(out / "runs" / r["name"])
        p = predict(bases[r["model"]], Settings(lr=r["lr"], steps=int(m["step"].max())), cal)
        ps = pd.DataFrame(p["per_step"])
        t = m["step"].to_numpy()
        comp = compete(k, c, r["lr"], t)
        held = t > CALIBRATE_STEPS if r["name"] == CALIBRATION else t >= 1
        f_m, f_p, f_c = m["changed_base_frac"].to_numpy(), ps["changed_base_frac"].to_numpy(), comp
        s_m, s_p = m["changed_step_frac"].to_numpy(), ps["changed_step_frac"].to_numpy()
        rel_step = np.abs(s_p - s_m)[held & (s_m > 0)] / s_m[held & (s_m > 0)]
        rows.append(
            {
                "run": r["name"],
                "model": r["model"],
                "algo": r["algo"],
                "lr": r["lr"],
                "steps": int(t.max()),
                "held_out": r["name"] != CALIBRATION,
                "measured": float(f_m[-1]),
                "predicted": float(f_p[-1]),
                "interval_lo": p["interval"][0],
                "interval_hi": p["interval"][1],
                "abs_err": float(abs(f_p[-1] - f_m[-1])),
                "max_abs_err_any_step": float(np.max(np.abs(f_p - f_m)[held])),
                "competitor": float(f_c[-1]),
                "competitor_abs_err": float(abs(f_c[-1] - f_m[-1])),
                "total_within_target": within(float(f_p[-1]), float(f_m[-1])),
                "per_step_measured_median": float(np.median(s_m[held])),
                "per_step_predicted_median": float(np.median(s_p[held])),
                "per_step_median_rel_err": float(np.median(rel_step)) if rel_step.size else float("nan"),
                "per_step_share_within_25pct": float(np.mean(rel_step <= 0.25)) if rel_step.size else float("nan"),
            }
        )
        # the --from-run use: the law calibrated on this run's own first 5 steps, its steps 6.. predicted
        own = calibrate(out / "runs" / r["name"], CALIBRATE_STEPS, bases[r["model"]])[0]
        po = pd.DataFrame(predict(bases[r["model"]], Settings(lr=r["lr"], steps=int(t.max())), own)["per_step"])
        f_o, s_o = po["changed_base_frac"].to_numpy(), po["changed_step_frac"].to_numpy()
        later = (t > CALIBRATE_STEPS) & (s_m > 0)
        rows[-1].update(
            own_predicted=float(f_o[-1]),
            own_abs_err=float(abs(f_o[-1] - f_m[-1])),
            own_within_target=within(float(f_o[-1]), float(f_m[-1])),
            own_per_step_median_rel_err=float(np.median(np.abs(s_o - s_m)[later] / s_m[later])),
            own_per_step_share_within_25pct=float(np.mean(np.abs(s_o - s_m)[later] / s_m[later] <= 0.25)),
            **{f"own_{k}": own["laws"][0][k] for k in ("mu", "sigma", "beta", "mu_step")},
        )
        curves[r["name"]] = (t, f_m, f_p, f_c, s_m, s_p)
    table = pd.DataFrame(rows)
    table.to_csv(out / "law.csv", index=False)
    plot(curves, out / "law.png")
    result = {"calibration": cal["source"], "law": cal["laws"][0], "competitor": {"k": k, "c": c}, "runs": rows}
    (out / "law.json").write_text(json.dumps(result, indent=1))
    print(table.drop(columns=["model"]).to_string(index=False))
    return result


def plot(curves: dict, path: Path, per_row: int = 5) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(curves)
    cols, blocks = min(per_row, n), -(-n // per_row)  # each run: changed vs base above, per step below
    fig, axes = plt.subplots(2 * blocks, cols, figsize=(3.2 * cols, 3.0 * 2 * blocks), squeeze=False)
    for ax in axes.flat:
        ax.set_visible(False)
    for i, (name, (t, f_m, f_p, f_c, s_m, s_p)) in enumerate(curves.items()):
        top, bottom = axes[2 * (i // cols), i % cols], axes[2 * (i // cols) + 1, i % cols]
        top.set_visible(True)
        bottom.set_visible(True)
        top.plot(t, f_m, "k.", ms=3, label="measured")
        top.plot(t, f_p, "C0-", label="law")
        top.plot(t, f_c, "C3--", label="lr·steps only")
        top.set_title(name, fontsize=8)
        top.set_ylim(0, 1)
        bottom.plot(t, s_m, "k.", ms=3)
        bottom.plot(t, s_p, "C0-")
        bottom.set_xlabel("step")
        if i % cols == 0:
            top.set_ylabel("changed vs base")
            bottom.set_ylabel("changed vs previous step")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def clean(out: Path) -> None:
    """Keep what `analyse` reads (steps.parquet, run.json, the base models); the checkpoints and states go."""
    bulky = [*(out / "runs").glob("*/checkpoints"), *(out / "runs").glob("*/trainer"), *(out / "runs").glob("*/steps")]
    for ck in sorted(bulky):
        shutil.rmtree(ck)
        print(f"removed {ck}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=["train", "analyse", "clean"])
    p.add_argument("--out", type=Path, default=Path("/work/out/law"))
    p.add_argument("--runs", nargs="*", help="train only the runs whose name starts with one of these (smol, 5m, tiny)")
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    if a.stage == "train":
        train(a.out, a.runs)
    elif a.stage == "clean":
        clean(a.out)
    else:
        print(json.dumps(analyse(a.out), indent=1))


if __name__ == "__main__":
    main()
