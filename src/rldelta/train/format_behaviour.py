"""How a freshly pretrained mixture model writes its answers: the share of each format and the accuracy within it,
sampled and greedy, on `mixarith` test problems."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rldelta.metrics.formats import format_table
from rldelta.train.answer_formats import FORMAT_NAMES, OTHER, classify_format
from rldelta.train.corpus import allocate
from rldelta.train.generation import generate_greedy
from rldelta.train.tasks import Example, MixArith


def format_behaviour(
    model, tokenizer, examples: Sequence[Example], *, samples: int = 8, max_new_tokens: int = 40, seed: int = 0
) -> dict[str, Any]:
    """Share of each format and accuracy within it over `samples` temperature-1 completions per prompt, and
    greedy accuracy with greedy format shares."""
    import torch  # lazy: loaded when a model is evaluated, not when the train package is imported

    task = MixArith()
    names = (*FORMAT_NAMES, OTHER)
    prompts = [ex.prompt for ex in examples]
    texts = [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts]
    tokenizer.padding_side = "left"
    sampled: list[str] = []
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for start in range(0, len(texts), 16):
            enc = tokenizer(texts[start : start + 16], return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(model.device) for k, v in enc.items()}
            gen = model.generate(
                **enc,
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                num_return_sequences=samples,
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            sampled += tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    answers = [ex.answer for ex in examples for _ in range(samples)]
    rows = format_table(
        [0] * len(sampled),
        [classify_format(c) for c in sampled],
        [task.correctness_reward(c, a) for c, a in zip(sampled, answers)],
        names=names,
    )
    greedy = generate_greedy(model, tokenizer, prompts, max_new_tokens=max_new_tokens)
    g_correct = [task.correctness_reward(c, ex.answer) for c, ex in zip(greedy, examples)]
    g_rows = format_table([0] * len(greedy), [classify_format(c) for c in greedy], g_correct, names=names)
    return {
        "split": "test",
        "prompts": len(examples),
        "samples_per_prompt": samples,
        "temperature": 1.0,
        "formats": {r["format"]: {"count": r["count"], "share": r["share"], "accuracy": r["accuracy"]} for r in rows},
        "accuracy": sum(r["count"] * (r["accuracy"] or 0.0) for r in rows) / max(len(sampled), 1),
        "greedy_accuracy": sum(g_correct) / max(len(g_correct), 1),
        "greedy_formats": {r["format"]: r["share"] for r in g_rows},
        "examples": [
            {
                "prompt": ex.prompt[-1]["content"],
                "answer": ex.answer,
                "greedy": g,
                "sampled": sampled[i * samples : (i + 1) * samples][:3],
            }
            for i, (ex, g) in enumerate(zip(examples[:4], greedy[:4]))
        ],
    }


def test_problems(n: int, difficulties: Sequence[int], seed: int = 0) -> list[Example]:
    """`n` test-split mixarith problems, difficulties in equal shares."""
    task = MixArith()
    out: list[Example] = []
    for level, count in allocate({d: 1 / len(difficulties) for d in sorted(set(difficulties))}, n).items():
        out += task.generate(count, seed=seed, split="test", difficulty=level)
    return out


test_problems.__test__ = False  # not a pytest test despite the name
