"""Greedy evaluation of a model on a task's test split: accuracy and format rate, overall and per difficulty.

Generation is batched with left padding (prompts sorted by length so batches pad little). `score` is the pure
part — completions in, numbers out — so it can be checked without a model.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rldelta.atomic import atomic_write_bytes
from rldelta.errors import RldeltaError
from rldelta.train.models import ModelError, load_pretrained
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


def generate_greedy(
    model, tokenizer, prompts: list[list[dict]], *, batch_size: int = 16, max_new_tokens: int = 64, progress=None
) -> list[str]:
    """Greedy completions (special tokens stripped) for chat prompts, in the order given."""
    import torch

    texts = [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts]
    lengths = [len(tokenizer(t, add_special_tokens=False).input_ids) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    out: list[str] = [""] * len(texts)
    tokenizer.padding_side = "left"  # decoder-only: new tokens must follow the prompt directly
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        enc = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(device) for k, v in enc.items()}
        with torch.no_grad():
            gen = model.generate(
                **enc,
                do_sample=False,
                max_new_tokens=max_new_tokens,
                pad_token_id=pad_id,
                eos_token_id=tokenizer.eos_token_id,
                temperature=None,
                top_p=None,
                top_k=None,
            )
        new = gen[:, enc["input_ids"].shape[1] :]
        for i, seq in zip(idx, tokenizer.batch_decode(new, skip_special_tokens=True)):
            out[i] = seq
        if progress is not None:
            progress(len(idx))
    return out


@dataclass(frozen=True)
class Sample:
    """One sampled completion: its text (special tokens stripped) and the exact token ids, so it can be re-scored."""

    text: str
    prompt_ids: list[int]
    completion_ids: list[int]  # up to and including the end-of-sequence token, without padding


def sample(
    model,
    tokenizer,
    prompts: list[list[dict]],
    *,
    k: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 16,
) -> list[list[Sample]]:
    """`k` completions sampled (pure temperature sampling, no top-k/top-p) for each chat prompt.

    Uses a private RNG stream seeded by `seed`, so the caller's random state is untouched and the same call gives
    the same samples.
    """
    import torch

    texts = [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts]
    out: list[list[Sample]] = []
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stop = {tokenizer.eos_token_id, pad_id}
    tokenizer.padding_side = "left"
    was_training = model.training
    model.eval()
    with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]), torch.no_grad():
        torch.manual_seed(seed)
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            gen = model.generate(
                **enc,
                do_sample=True,
                temperature=temperature,
                top_p=1.0,
                top_k=0,
                max_new_tokens=max_new_tokens,
                num_return_sequences=k,
                pad_token_id=pad_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            width = enc["input_ids"].shape[1]
            for i in range(len(chunk)):
                row = enc["input_ids"][i][enc["attention_mask"][i].bool()].tolist()
                group = []
                for seq in gen[i * k : (i + 1) * k, width:].tolist():
                    ids = []
                    for t in seq:
                        if t in stop:
                            if t == tokenizer.eos_token_id:
                                ids.append(t)
                            break
                        ids.append(t)
                    group.append(Sample(tokenizer.decode(ids, skip_special_tokens=True), row, ids))
                out.append(group)
    model.train(was_training)
    return out


def load_for_eval(model_dir: str | os.PathLike, *, device: str | None = None):
    """(model, tokenizer) from a model folder, in eval mode.

    On CPU the weights are upcast to fp32 (exact for bf16 weights; bf16 matmuls are slow on most CPUs);
    on a GPU they keep the dtype they were saved in.
    """
    import torch

    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise ModelError(f"{path}: not a model folder (no config.json)")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer = load_pretrained(path, torch.float32 if device == "cpu" else "auto")
    if not tokenizer.chat_template:
        raise ModelError(f"{path}: tokenizer has no chat template")
    return model.to(device).eval(), tokenizer


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
    show_progress: bool = True,
    out: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Greedy accuracy and format rate of the model in `model_dir` on `n` problems of `task` (a JSON-ready dict).

    The result keeps the first `samples` prompts with their completions, so a reader can see what the model does.
    With `out`, it is also written there as JSON (atomically).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    task = get_task(task) if isinstance(task, str) else task
    if n < 1:
        raise RldeltaError(f"n must be >= 1, got {n}")
    if batch_size < 1 or max_new_tokens < 1:
        raise RldeltaError(f"batch_size and max_new_tokens must be >= 1, got {batch_size} and {max_new_tokens}")
    examples = task.generate(n, seed=seed, split=split, difficulty=difficulty)
    model, tokenizer = load_for_eval(model_dir, device=device)
    t0 = time.perf_counter()
    with Progress(
        TextColumn(f"eval {task.name}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not show_progress,
        transient=True,
    ) as bar:
        job = bar.add_task("generate", total=n)
        completions = generate_greedy(
            model,
            tokenizer,
            [ex.prompt for ex in examples],
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
            progress=lambda k: bar.advance(job, k),
        )
    seconds = time.perf_counter() - t0
    scored = score(task, examples, completions)
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
        "device": str(next(model.parameters()).device),
        "seconds": round(seconds, 3),
        "samples": [
            {
                "prompt": ex.prompt[-1]["content"],
                "answer": ex.answer,
                "difficulty": ex.difficulty,
                "completion": c,
                "correct": ok,
            }
            for ex, c, ok in list(zip(examples, completions, scored["correct"]))[:samples]
        ],
    }
    if out is not None:
        atomic_write_bytes(out, (json.dumps(result, indent=2) + "\n").encode())
    return result
