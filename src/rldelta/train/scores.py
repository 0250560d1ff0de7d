"""Per-problem scores that two models can be compared on problem by problem (paired).

Greedy correctness is 0/1 and moves in whole problems; two continuous scores resolve much smaller effects on the
same problems: the teacher-forced log-probability of the task's reference completion (how much the model prefers
the right answer, in nats), and the pass rate over k completions sampled at temperature 1. The sampling seed of each
batch is fixed by the evaluation seed and the batch's position, so every model meets the same random numbers on
the same problems (common random numbers: what differs between two models' pass rates is the models).
"""

from __future__ import annotations

import hashlib

from rldelta.train.generation import sample
from rldelta.train.tasks import Example, Task


def problem_id(example: Example) -> str:
    """A stable id of a problem (its prompt and answer), the key of the per-problem tables."""
    text = "\x1f".join(m["content"] for m in example.prompt) + "\x1e" + example.answer
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def reference_logprobs(
    model, tokenizer, task: Task, examples: list[Example], *, batch_size: int = 16
) -> list[tuple[float, int]]:
    """(sum of log p, number of tokens) of the task's reference completion after each chat prompt, teacher-forced.

    The prompt and the completion are tokenized apart and joined, so the scored tokens are exactly the
    completion's, whatever the tokenizer would merge across the boundary. The vocabulary projection is computed
    only at the completion's positions (it is most of a small model's cost over a whole sequence)."""
    import torch

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows = []
    for ex in examples:
        text = tokenizer.apply_chat_template(ex.prompt, add_generation_prompt=True, tokenize=False)
        p = tokenizer(text, add_special_tokens=False).input_ids
        c = tokenizer(task.reference_completion(ex.answer), add_special_tokens=False).input_ids
        rows.append((p, c))
    out: list[tuple[float, int]] = []
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            width = max(len(p) + len(c) for p, c in chunk)
            keep = max(len(c) for _, c in chunk) + 1
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            att = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, (p, c) in enumerate(chunk):  # left padding: every completion ends at the last position
                ids[i, width - len(p) - len(c) :] = torch.tensor(p + c)
                att[i, width - len(p) - len(c) :] = 1
            pos = (att.cumsum(-1) - 1).clamp(min=0)  # each sequence's own positions, as if unpadded
            # the vocabulary projection only where a completion token is predicted: the last `keep` positions
            logits = model(
                input_ids=ids.to(device),
                attention_mask=att.to(device),
                position_ids=pos.to(device),
                logits_to_keep=keep,
            ).logits.float()
            for i, (_, c) in enumerate(chunk):
                n = len(c)
                logp = torch.log_softmax(logits[i, keep - n - 1 : keep - 1], dim=-1)
                target = torch.tensor(c, device=logp.device)[:, None]
                out.append((float(logp.gather(-1, target).sum()), n))
    return out


def pass_rates(
    model,
    tokenizer,
    task: Task,
    examples: list[Example],
    *,
    k: int,
    max_new_tokens: int,
    seed: int = 0,
    batch_size: int = 16,
) -> list[float]:
    """Share of `k` completions sampled at temperature 1 that are correct, per problem; each batch of problems has
    its own fixed seed (the evaluation seed and the batch's start), so two models draw with the same numbers."""
    rates: list[float] = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        groups = sample(
            model,
            tokenizer,
            [ex.prompt for ex in chunk],
            k=k,
            max_new_tokens=max_new_tokens,
            seed=seed * 1_000_003 + start,
            batch_size=batch_size,
        )
        for ex, group in zip(chunk, groups):
            rates.append(sum(task.correctness_reward(s.text, ex.answer) for s in group) / k)
    return rates


def score_problems(
    model,
    tokenizer,
    task: Task,
    examples: list[Example],
    correct: list[float],
    *,
    pass_k: int,
    max_new_tokens: int,
    seed: int,
    batch_size: int,
) -> list[dict]:
    """One row per distinct problem (a repeated problem is scored once): id, difficulty, greedy correct, reference
    log-probability (sum and per token) and, with pass_k > 0, the pass rate over pass_k samples."""
    first: dict[str, int] = {}
    for i, ex in enumerate(examples):
        first.setdefault(problem_id(ex), i)
    keep = list(first.values())
    exs = [examples[i] for i in keep]
    lps = reference_logprobs(model, tokenizer, task, exs, batch_size=batch_size)
    rates = (
        pass_rates(
            model, tokenizer, task, exs, k=pass_k, max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size
        )
        if pass_k > 0
        else [None] * len(exs)
    )
    return [
        {
            "problem": pid,
            "difficulty": examples[i].difficulty,
            "correct": float(correct[i]),
            "ref_logprob": lp,
            "ref_logprob_per_token": lp / n if n else 0.0,
            "pass_rate": rate,
        }
        for (pid, i), (lp, n), rate in zip(first.items(), lps, rates)
    ]
