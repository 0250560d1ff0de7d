"""Validation sweep of the update-sparsity law (`rldelta predict`): train a grid of runs with the step recorder on,
calibrate the law on the first K steps of ONE run, predict every other run and step, compare with what was measured.

    python benchmarks/law_sweep.py train   --out /work/out/law      # the runs (resumable: done runs are skipped)
    python benchmarks/law_sweep.py analyse --out /work/out/law      # predictions vs measured: law.csv, law.json, law.png
    python benchmarks/law_sweep.py clean   --out /work/out/law      # delete the bulky checkpoints, keep steps.parquet

The grid: SmolLM2-135M-Instruct (bf16 base) with GRPO at lr 3e-6, 1e-5, 3e-5, and the tiny Llama (fp32 base, another
size) with offline DPO at the same three learning rates; fp32 master weights, 60 steps, the step recorder on. The
calibration run is SmolLM2 GRPO at lr 1e-5, its first 5 steps only; nothing else is fitted on any other run.
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
    "--task", "arith", "--difficulty", "1", "--rewards", "correctness", "--prompts-per-step", "2",
    "--num-generations", "4", "--max-completion-length", "12", "--temperature", "1.0",
]  # fmt: skip
TINY_TRAIN = ["--task", "arith", "--prompts-per-step", "4"]


def grid() -> list[dict]:
    """The runs, calibration run first (so a sweep cut short still has it), then the cheap ones."""
    runs = [dict(name=CALIBRATION, model="mix5m", algo="grpo", lr=1e-5, extra=MIX_TRAIN)]
    runs += [
        dict(name=f"tiny-dpo-{lr:.0e}", model="tiny", algo="dpo", lr=lr, extra=TINY_TRAIN) for lr in (3e-6, 1e-5, 3e-5)
    ]
    runs += [dict(name=f"5m-grpo-{lr:.0e}", model="mix5m", algo="grpo", lr=lr, extra=MIX_TRAIN) for lr in (3e-5, 3e-6)]
    runs += [dict(name="5m-dpo-1e-05", model="mix5m", algo="dpo", lr=1e-5, extra=MIX_TRAIN[:4])]
    runs += [dict(name="smol-grpo-1e-05", model="smollm2", algo="grpo", lr=1e-5, extra=SMOL_TRAIN)]  # if time allows
    return runs


def done(run: Path) -> bool:
    return (run / "checkpoints" / f"step-{STEPS}").is_dir() and (run / "steps.parquet").is_file()


def prepare(out: Path) -> None:
    if not (out / "smollm2" / "model.safetensors").is_file():
        subprocess.run([str(RLDELTA), "models", "prepare", "smollm2-135m", "-o", str(out / "smollm2")], check=True)
    if not (out / "mix5m" / "model.safetensors").is_file():
        cmd = [str(RLDELTA), "models", "pretrain-mixture", "--size", "5m", "--steps", str(PRETRAIN_STEPS)]
        subprocess.run([*cmd, "-o", str(out / "mix5m")], check=True)
    if not (out / "tiny" / "model.safetensors").is_file():
        subprocess.run([str(RLDELTA), "models", "tiny", "-o", str(out / "tiny")], check=True)


def train(out: Path) -> None:
    prepare(out)
    for r in grid():
        run = out / "runs" / r["name"]
        if done(run):
            print(f"{r['name']}: done, skipped", flush=True)
            continue
        cmd = [str(RLDELTA), "train", "-o", str(run)]
        if (run / "run.json").is_file():
            cmd += ["--resume"]
        else:
            cmd += ["--model", str(out / r["model"]), "--algo", r["algo"], "--lr", str(r["lr"]), "--steps", str(STEPS)]
            cmd += ["--precision", "fp32", "--record-steps", *r["extra"]]
        t0 = time.time()
        print(f"{r['name']}: {' '.join(cmd)}", flush=True)
        subprocess.run(cmd, check=True)
        print(f"{r['name']}: trained in {time.time() - t0:.0f} s", flush=True)


def clean(out: Path) -> None:
    for ck in sorted((out / "runs").glob("*/checkpoints")):
        shutil.rmtree(ck)
        print(f"removed {ck}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=["train", "analyse", "clean"])
    p.add_argument("--out", type=Path, default=Path("/work/out/law"))
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    if a.stage == "train":
        train(a.out)
    elif a.stage == "clean":
        clean(a.out)
    else:
        from law_analysis import analyse  # the analysis half, once `rldelta predict` exists

        print(json.dumps(analyse(a.out), indent=1))


if __name__ == "__main__":
    main()
