"""Per-problem scores: the reference log-probability against transformers' own loss, pass rates with common random
numbers, one row per distinct problem."""

from __future__ import annotations

import pytest
import torch

from rldelta.train import evaluate as ev
from rldelta.train import scores as sc
from rldelta.train.generation import Sample
from rldelta.train.models import build_tiny
from rldelta.train.tasks import get_task


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny(tmp_path_factory.mktemp("m") / "tiny", seed=0)


def _hf_logprob(model, tok, task, ex) -> tuple[float, int]:
    """log p of the reference completion from transformers' cross-entropy with the prompt's labels masked."""
    text = tok.apply_chat_template(ex.prompt, add_generation_prompt=True, tokenize=False)
    p = tok(text, add_special_tokens=False).input_ids
    c = tok(task.reference_completion(ex.answer), add_special_tokens=False).input_ids
    ids = torch.tensor([p + c])
    labels = ids.clone()
    labels[0, : len(p)] = -100
    with torch.no_grad():
        loss = model(input_ids=ids, labels=labels).loss
    return -float(loss) * len(c), len(c)


def test_reference_logprobs_equal_transformers_loss_and_do_not_depend_on_batching(tiny):
    model, tok = ev.load_for_eval(tiny)
    task = get_task("arith")
    examples = task.generate(7, seed=3, split="test")
    batched = sc.reference_logprobs(model, tok, task, examples, batch_size=4)
    for ex, (lp, n) in zip(examples, batched):
        ref, ref_n = _hf_logprob(model, tok, task, ex)
        assert n == ref_n and lp == pytest.approx(ref, rel=1e-4, abs=1e-4)
    alone = sc.reference_logprobs(model, tok, task, examples, batch_size=1)
    assert [n for _, n in alone] == [n for _, n in batched]
    assert [lp for lp, _ in alone] == pytest.approx([lp for lp, _ in batched], rel=1e-4)


def test_pass_rates_use_common_random_numbers(tiny):
    model, tok = ev.load_for_eval(tiny)
    task = get_task("digits")
    examples = task.generate(6, seed=1, split="test")
    a = sc.pass_rates(model, tok, task, examples, k=3, max_new_tokens=4, seed=5, batch_size=4)
    b = sc.pass_rates(model, tok, task, examples, k=3, max_new_tokens=4, seed=5, batch_size=4)
    assert a == b and len(a) == 6 and all(0 <= r <= 1 for r in a)


def test_pass_rates_count_correct_samples(tiny, monkeypatch):
    task = get_task("arith")
    examples = task.generate(4, seed=0, split="test")
    right = {i: i for i in range(4)}  # problem i: i of its 4 samples right

    def fake_sample(model, tokenizer, prompts, *, k, **kw):
        out = []
        for p in prompts:
            i = next(j for j, ex in enumerate(examples) if ex.prompt == p)
            ans = examples[i].answer
            out.append([Sample(f"<answer>{ans if s < right[i] else 'x'}</answer>", [], []) for s in range(k)])
        return out

    monkeypatch.setattr(sc, "sample", fake_sample)
    assert sc.pass_rates(None, None, task, examples, k=4, max_new_tokens=4, batch_size=3) == [0, 0.25, 0.5, 0.75]


def test_evaluate_writes_one_row_per_distinct_problem(tiny):
    task = get_task("arith")
    examples = task.generate(60, seed=0, split="test", difficulty=1)  # a small space: problems repeat
    distinct = {sc.problem_id(ex) for ex in examples}
    assert len(distinct) < 60
    result = ev.evaluate(tiny, task, 60, seed=0, difficulty=1, max_new_tokens=2, pass_k=2, show_progress=False)
    rows = result["problems"]
    assert [r["problem"] for r in rows] == list(dict.fromkeys(sc.problem_id(ex) for ex in examples))
    assert all(r["correct"] in (0.0, 1.0) and r["ref_logprob"] < 0 and 0 <= r["pass_rate"] <= 1 for r in rows)
