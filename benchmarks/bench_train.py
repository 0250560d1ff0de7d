"""Seconds per training step, per algorithm, on the tiny model and on SmolLM2-135M-Instruct.

Each cell is the median (and the minimum, robust on a shared machine) of the per-step wall times that
`rldelta train` records in metrics.parquet, leaving out the first step (it pays for one-off work: allocator
warm-up, the reference model's first forward). Offline algorithms (dpo, kto, orpo, simpo, sft) also sample
their data from the base model before step 1; that one-off time is the "setup s" column. Beside each plain
run stands the same run with a random 30% mask (`--mask`), i.e. the cost of the exactness machinery over the
naive unmasked step.

    python benchmarks/bench_train.py                      # tiny model, every algorithm
    python benchmarks/bench_train.py --smollm2 --algos grpo,rloo,dpo,sft --steps 3
    python benchmarks/bench_train.py --out bench-train.json

Online settings follow the guide's reference step: 4 prompts x 4 completions of 24 tokens (16 completions).
PPO runs 2 optimizer steps (epochs) per rollout batch, so its steps alternate between sampling and not: the "x grpo"
column compares mean step times, and the default 7 steps leave 6 steady ones, three whole rollout batches.

    python benchmarks/bench_train.py --smollm2 --no-tiny --algos grpo,ppo,prime --steps 5 --no-mask
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _mask_for(model_dir: Path, path: Path, density: float = 0.3) -> Path:
    import torch

    from rldelta.checkpoint import open_checkpoint
    from rldelta.masks import Mask, save_mask

    ck = open_checkpoint(model_dir)
    g = torch.Generator().manual_seed(0)
    masks = {n: torch.rand(ck.info(n).shape, generator=g) < density for n in ck.names()}
    save_mask(Mask.from_tensors(masks), path)
    return path


def time_run(
    model_dir: Path,
    algo: str,
    root: Path,
    *,
    steps: int,
    precision: str,
    mask: Path | None,
    prompts: int,
    generations: int,
    length: int,
) -> dict:
    import pandas as pd

    from rldelta.train.config import TrainConfig
    from rldelta.train.trainers import train

    out = root / f"{algo}-{precision}-{'mask' if mask else 'plain'}"
    shutil.rmtree(out, ignore_errors=True)
    cfg = TrainConfig(
        model=str(model_dir),
        output=str(out),
        algo=algo,
        steps=steps,
        precision=precision,
        lr=1e-5,
        prompts_per_step=prompts,
        num_generations=generations,
        max_completion_length=length,
        offline_samples=generations,
        mask=str(mask) if mask else None,
        progress=False,
    )
    t0 = time.perf_counter()
    train(cfg)
    total = time.perf_counter() - t0
    secs = pd.read_parquet(out / "metrics.parquet")["seconds"].tolist()
    steady = secs[1:] or secs
    shutil.rmtree(out, ignore_errors=True)
    return {
        "s_per_step": statistics.median(steady),
        "mean": statistics.fmean(steady),
        "min": min(steady),
        "first_step": secs[0],
        "setup": total - sum(secs),
    }


def bench(model_name: str, model_dir: Path, algos: list[str], args, root: Path) -> list[dict]:
    mask = _mask_for(model_dir, root / f"{model_name}-mask.safetensors") if not args.no_mask else None
    rows = []
    for algo in algos:
        row = {"model": model_name, "algo": algo, "precision": args.precision}
        for label, m in (("plain", None), ("masked", mask)):
            if label == "masked" and m is None:
                continue
            try:
                r = time_run(
                    model_dir,
                    algo,
                    root,
                    steps=args.steps,
                    precision=args.precision,
                    mask=m,
                    prompts=args.prompts,
                    generations=args.generations,
                    length=args.length,
                )
                row[label] = r["s_per_step"]
                row[f"{label}_min"] = r["min"]
                row[f"{label}_mean"] = r["mean"]
                if label == "plain":
                    row["setup"] = r["setup"]
            except Exception as e:  # a benchmark reports a broken algorithm instead of stopping
                row[label] = None
                row["error"] = f"{e.__class__.__name__}: {str(e).splitlines()[0][:80]}"
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def print_table(rows: list[dict], device: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"seconds per training step ({device})")
    for col in (
        "model",
        "algo",
        "precision",
        "plain s/step",
        "(min)",
        "masked s/step",
        "(min)",
        "mask overhead",
        "x grpo (mean)",
        "setup s",
    ):
        table.add_column(col, justify="right")
    grpo = {r["model"]: r.get("plain_mean") for r in rows if r["algo"] == "grpo"}
    for r in rows:
        plain, masked = r.get("plain"), r.get("masked")
        ref = grpo.get(r["model"])
        vs = f"{r['plain_mean'] / ref:.2f}" if ref and r.get("plain_mean") else "-"
        over = f"{(masked / plain - 1) * 100:+.0f}%" if plain and masked else "-"
        pmin, mmin = r.get("plain_min"), r.get("masked_min")
        table.add_row(
            r["model"],
            r["algo"],
            r["precision"],
            f"{plain:.2f}" if plain else r.get("error", "-"),
            f"{pmin:.2f}" if pmin else "-",
            f"{masked:.2f}" if masked else "-",
            f"{mmin:.2f}" if mmin else "-",
            over,
            vs,
            f"{r['setup']:.1f}" if "setup" in r else "-",
        )
    Console(width=140).print(table)


def main() -> None:
    from rldelta.train.algorithms import ALGOS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--algos", default=",".join(ALGOS))
    p.add_argument("--steps", type=int, default=7, help="the first is left out of the figures")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--generations", type=int, default=4)
    p.add_argument("--length", type=int, default=24)
    p.add_argument("--no-tiny", action="store_true", help="skip the tiny model")
    p.add_argument("--smollm2", action="store_true", help="also SmolLM2-135M (minutes per algorithm on a CPU)")
    p.add_argument("--smollm2-dir", default="models/smollm2-135m", help="prepared once, reused")
    p.add_argument("--no-mask", action="store_true", help="skip the masked runs")
    p.add_argument("--out", help="also write the rows as JSON here")
    args = p.parse_args()

    import torch

    from rldelta.train.models import build_tiny, prepare_smollm2

    algos = [a.strip() for a in args.algos.split(",") if a.strip()]
    unknown = sorted(set(algos) - set(ALGOS))
    if unknown:
        p.error(f"unknown algorithms: {', '.join(unknown)}")
    device = (
        f"GPU {torch.cuda.get_device_name(0)}"
        if torch.cuda.is_available()
        else f"CPU, {torch.get_num_threads()} threads"
    )
    load_before = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        root = Path(tmp)
        if not args.no_tiny:
            rows += bench("tiny", build_tiny(root / "tiny"), algos, args, root)
        if args.smollm2:
            rows += bench("smollm2-135m", prepare_smollm2(args.smollm2_dir), algos, args, root)
    device += f", load average {load_before:.1f} at start, {os.getloadavg()[0]:.1f} at end"
    print_table(rows, device)
    if args.out:
        Path(args.out).write_text(json.dumps({"device": device, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
