"""Greedy evaluation of a model on a task's test split: accuracy and format rate, overall and per difficulty, and
the per-problem scores of train/scores.py. `score` is the pure part — completions in, numbers out — so it can be
checked without a model.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from rldelta.runtime.atomic import atomic_write_bytes
from rldelta.runtime.errors import RldeltaError
from rldelta.train.generation import generate_greedy, load_for_eval
from rldelta.train.scores import score_problems
from rldelta.train.tasks import Example, Task, get_task


def score(task: Task, examples: list[Example], completions: list[str]) -> dict[str, Any]:
    """Accuracy and format rate of `completions` (one per example), overall and per difficulty."""
    if len(examples) != len(completions):
        raise ValueError(f"{len(examples)} examples but {len(completions)} completions")
    correct = [task.correctness_reward(c, ex.answer) for ex, c in zip(examples, completions)]
    formatted = [task.format_reward(c) for c in completions]
    per: dict[str, dict[str, float | int]] = {}
    for level in sorted({ex.difficulty for ex in examples}):
        idx = [i for i, ex in enumerate(examples) if ex.difficulty == level]
        per[str(level)] = {
            "n": len(idx),
            "accuracy": sum(correct[i] for i in idx) / len(idx),
            "format_rate": sum(formatted[i] for i in idx) / len(idx),
        }
    n = len(examples)
    return {
        "n": n,
        "accuracy": sum(correct) / n if n else 0.0,
        "format_rate": sum(formatted) / n if n else 0.0,
        "per_difficulty": per,
        "correct": correct,
        "formatted": formatted,
    }


def evaluate(
    model_dir: str | os.PathLike,
    task: Task | str,
    n: int = 200,
    *,
    seed: int = 0,
    split: str = "test",
    difficulty: int | None = None,
    batch_size: int = 16,
    max_new_tokens: int = 64,
    device: str | None = None,
    samples: int = 8,
    pass_k: int = 0,
    show_progress: bool = True,
    out: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Greedy accuracy and format rate of the model in `model_dir` on `n` problems of `task` (a JSON-ready dict).

    The result keeps the first `samples` prompts with their completions, so a reader can see what the model does,
    and under "problems" one row per distinct problem with its paired scores (train/scores.py; the pass rate over
    `pass_k` sampled completions when pass_k > 0). With `out`, it is also written there as JSON (atomically).
    """
    task = get_task(task) if isinstance(task, str) else task
    if n < 1:
        raise RldeltaError(f"n must be >= 1, got {n}")
    if pass_k < 0:
        raise RldeltaError(f"pass_k must be >= 0, got {pass_k}")
    if batch_size < 1 or max_new_tokens < 1:
        raise RldeltaError(f"batch_size and max_new_tokens must be >= 1, got {batch_size} and {max_new_tokens}")
    examples = task.generate(n, seed=seed, split=split, difficulty=difficulty)
    model, tokenizer = load_for_eval(model_dir, device=device)
    t0 = time.perf_counter()
    completions = _greedy(model, tokenizer, task, examples, batch_size, max_new_tokens, show_progress)
    scored = score(task, examples, completions)
    problems = score_problems(
        model,
        tokenizer,
        task,
        examples,
        scored["correct"],
        pass_k=pass_k,
        max_new_tokens=max_new_tokens,
        seed=seed,
        batch_size=batch_size,
    )
    seconds = time.perf_counter() - t0
    result = {
        "model": str(model_dir),
        "task": task.name,
        "split": split,
        "seed": seed,
        "difficulty": difficulty,
        "n": scored["n"],
        "accuracy": scored["accuracy"],
        "format_rate": scored["format_rate"],
        "per_difficulty": scored["per_difficulty"],
        "max_new_tokens": max_new_tokens,
        "batch_size": batch_size,
        "pass_k": pass_k,
        "device": str(next(model.parameters()).device),
        "seconds": round(seconds, 3),
        "samples": _samples(examples, completions, scored["correct"], samples),
        "problems": problems,
    }
    if out is not None:
        atomic_write_bytes(out, (json.dumps(result, indent=2) + "\n").encode())
    return result


def _greedy(model, tokenizer, task: Task, examples: list, batch_size: int, max_new_tokens: int, show: bool) -> list:
    """Greedy completions of every example's prompt, with a transient bar on the terminal when `show`."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn(f"eval {task.name}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not show,
        transient=True,
    ) as bar:
        job = bar.add_task("generate", total=len(examples))
        return generate_greedy(
            model,
            tokenizer,
            [ex.prompt for ex in examples],
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
            progress=lambda k: bar.advance(job, k),
        )


def _samples(examples: list, completions: list, correct: list, k: int) -> list[dict]:
    """The first `k` prompts with their completions, for a reader to see what the model does."""
    return [
        {
            "prompt": ex.prompt[-1]["content"],
            "answer": ex.answer,
            "difficulty": ex.difficulty,
            "completion": c,
            "correct": ok,
        }
        for ex, c, ok in list(zip(examples, completions, correct))[:k]
    ]
