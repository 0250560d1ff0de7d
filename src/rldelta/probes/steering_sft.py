"""(c) of probes/steering.py: SFT on k examples of one format through the `rldelta train` harness (its sft
algorithm, fed by a task whose every training row is the example rendered in the format), measured like the other
interventions, with the bitwise changed set of the result and its overlap with a given run's."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from rldelta.metrics.compute import sft_compute
from rldelta.probes.steering import (
    SteeringError,
    SteeringResult,
    check_format,
    count_params,
    measure,
)
from rldelta.train.answer_formats import FORMATS
from rldelta.train.tasks import Example, MixArith

# ---- (c) SFT on k examples ---------------------------------------------------------------------------------------


def sft_examples(fmt: str, k: int, *, seed: int = 0, difficulties: Sequence[int] = (1, 2)) -> list[Example]:
    """`k` train-split mixarith problems, difficulties in turn (distinct while the split has enough of them; the
    smallest levels repeat), at the levels the model was pretrained on: a problem of a level it never saw teaches
    the format on numbers it cannot write."""
    check_format(fmt)
    if k < 1:
        raise SteeringError(f"k must be >= 1, got {k}")
    task = MixArith()
    pools = [task.generate(k, seed=seed, split="train", difficulty=d) for d in difficulties]
    return [ex for group in zip(*pools) for ex in group][:k] if len(pools) > 1 else pools[0]


class FormatSFTTask(MixArith):
    """The mixarith task as the SFT harness sees it for one format: its examples are the k given problems, each
    answer replaced by the example's index (two problems may share a result; the index names one), a completion
    counts as correct only when it is the exact rendering of its problem in the format, and the reference
    completion is that rendering. So every training row is the rendered example, whatever the base model samples
    when the harness builds its data."""

    def __init__(self, fmt: str, examples: Sequence[Example]):
        check_format(fmt)
        self.format = fmt
        self.examples = [replace(ex, answer=str(i)) for i, ex in enumerate(examples)]
        self.rendering = {
            str(i): FORMATS[fmt].render(MixArith.expression(ex.prompt[-1]["content"]), int(ex.answer))
            for i, ex in enumerate(examples)
        }

    def generate(self, n, *, seed, split="train", difficulty=None):
        return self.examples[:n]

    def correctness_reward(self, completion: str, answer: str) -> float:
        return 1.0 if completion.strip() == self.rendering.get(answer) else 0.0

    def reference_completion(self, answer: str) -> str:
        return self.rendering[answer]


def sft_on_format(
    base: str | os.PathLike,
    out: str | os.PathLike,
    fmt: str,
    k: int,
    *,
    steps: int = 20,
    batch_size: int = 4,
    lr: float = 1e-3,
    seed: int = 0,
    difficulties: Sequence[int] = (1, 2),
    max_completion_length: int = 40,
    progress: bool = False,
) -> Path:
    """Train `base` with the harness's sft algorithm on k examples of `fmt` (sft_examples), `steps` optimizer
    steps of `batch_size` rows (the examples cycled), into the run folder `out`."""
    from rldelta.train.config import TrainConfig
    from rldelta.train.trainers import train

    examples = sft_examples(fmt, k, seed=seed, difficulties=difficulties)
    config = TrainConfig(
        model=str(base),
        output=str(out),
        task=MixArith.name,
        algo="sft",
        seed=seed,
        steps=steps,
        lr=lr,
        prompts_per_step=batch_size,
        train_size=k,
        max_completion_length=max_completion_length,
        offline_samples=1,
        offline_gold_fallback=True,
        record_steps=False,
        progress=progress,
    )
    return train(config, task=FormatSFTTask(fmt, examples))


def changed_and_overlap(
    base: str | os.PathLike, tuned: str | os.PathLike, out: str | os.PathLike, rl_mask: str | os.PathLike | None
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The bitwise diff of `tuned` against `base` into OUT/diff (with its mask), and the overlap of that changed
    set with `rl_mask` (a mask file or diff folder) into OUT/overlap; (diff totals, the pair row tuned->rl or
    None)."""
    from rldelta.diff import run_diff
    from rldelta.overlap import run_overlap

    out = Path(out)
    summary = run_diff(base, tuned, out / "diff", save_mask=True, rank=False)
    if rl_mask is None:
        return summary["totals"], None
    result = run_overlap([out / "diff", rl_mask], out / "overlap", plot=False)
    a = result["inputs"][0]
    row = next(r for r in result["pairs"] if r["a"] == a)
    return summary["totals"], row


def steer_sft(
    base: str | os.PathLike,
    out: str | os.PathLike,
    examples: Sequence[Example],
    fmt: str,
    k: int,
    *,
    rl_mask: str | os.PathLike | None = None,
    baseline=None,
    steps: int = 20,
    batch_size: int = 4,
    lr: float = 1e-3,
    seed: int = 0,
    **measure_kw,
) -> SteeringResult:
    """(c) SFT on k examples of `fmt` into OUT/run, measured on `examples`; its compute is the training forwards
    and backwards (the harness's one base-model sample per example, which the rendered rows do not need, is not
    counted), its wall time the whole harness run (that sampling and the start-up included); the changed fraction
    is the bitwise diff of the last step (bf16) against the base, and the overlap is with `rl_mask`'s changed set."""
    from rldelta.train.generation import load_for_eval
    from rldelta.train.mixture import read_mixture
    from rldelta.train.runfiles import step_dir

    out = Path(out)
    t0 = time.perf_counter()
    levels = (read_mixture(base) or {}).get("difficulties") or (1, 2)  # the levels it was pretrained on
    run = sft_on_format(
        base, out / "run", fmt, k, steps=steps, batch_size=batch_size, lr=lr, seed=seed, difficulties=levels
    )
    seconds = time.perf_counter() - t0
    model, tokenizer = load_for_eval(base, device="cpu")
    baseline = baseline or measure(model, tokenizer, examples, fmt, **measure_kw)
    rows = [json.loads(line) for line in (run / "offline_data.jsonl").read_text().splitlines() if line.strip()]
    # Tokenized from the text: apply_chat_template(tokenize=True) returns an encoding dict in recent transformers.
    prompts = [tokenizer.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=False) for r in rows]
    p_len = [len(tokenizer(t, add_special_tokens=False).input_ids) for t in prompts]
    c_len = [len(tokenizer(r["completion"][0]["content"], add_special_tokens=False).input_ids) + 1 for r in rows]
    compute = sft_compute(count_params(model), p_len, c_len, rows_seen=steps * batch_size).timed(seconds)
    tuned = step_dir(run, steps)
    t_model, t_tok = load_for_eval(tuned, device="cpu")
    result = measure(t_model, t_tok, examples, fmt, **measure_kw)
    totals, overlap = changed_and_overlap(base, tuned, out, rl_mask)
    settings = {"k": k, "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "rows": len(rows)}
    settings["difficulties"] = list(levels)
    return SteeringResult(
        "sft",
        fmt,
        settings,
        baseline,
        result,
        compute,
        changed_fraction=totals["changed_frac"],
        changed=totals["changed"],
        overlap=overlap,
        run=str(run),
    )
