"""Steering a mixture model's format without RL (probes/steering.py) on a tiny model pretrained here: each method
moves the chosen format's share in the planted direction against the unsteered model on the same prompts with the
same seed, and its counts (vector, compute, changed weights, overlap) agree with an independent computation."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from rldelta.masks import load_mask, random_mask, save_mask
from rldelta.probes.steering import PromptSteer, SteeringError, format_lead, steer_prompt
from rldelta.probes.steering_sft import steer_sft
from rldelta.probes.steering_vector import corpus_documents, steer_activation, steered, steering_vector
from rldelta.train.answer_formats import classify_format
from rldelta.train.format_behaviour import test_problems
from rldelta.train.generation import load_for_eval
from rldelta.train.mixture import encode, pretrain_mixture, read_mixture

# Code in 60% of the documents, plain 30%, boxed 10%, no wrong answers: after pretraining the model writes boxed
# about one answer in ten, plain one in four.
MIXTURE = dict(proportions={"code": 0.6, "plain": 0.3, "boxed": 0.1}, noise=(0, 0, 0), difficulties=(1,))
MEASURE = dict(samples=8, seed=0)
CODE = "```python\nprint(3 + 4)\n```\n7"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    out = tmp_path_factory.mktemp("steer") / "base"
    pretrain_mixture(
        out, size="test", steps=300, batch_size=32, lr=1e-2, eval_prompts=2, eval_samples=1, progress=False, **MIXTURE
    )
    model, tok = load_for_eval(out, device="cpu")
    return out, model, tok, test_problems(16, (1,), seed=0)


def test_format_lead():
    assert format_lead("code", "23 + 45") == "```python\nprint(23"
    assert format_lead("plain", "23 + 45") == "23 plus"
    assert format_lead("boxed", "23 + 45") == "23 +"
    with pytest.raises(SteeringError, match="unknown format 'latex'"):
        format_lead("latex", "1 + 2")


def test_prompt_lead_raises_a_rare_format(base):
    path, model, tok, examples = base
    r = steer_prompt(model, tok, examples, "boxed", PromptSteer(lead=True), **MEASURE)
    assert r.baseline.share < 0.25 and r.steered.low > r.baseline.high  # clearly up, intervals apart
    # every completion starts with the lead, and what it classifies as is what the measure counted
    assert r.steered.completions == len(examples) * 8 and r.steered.count == round(r.steered.share * 128)
    # its compute: the lead's tokens (tokenized apart from the prompt), prefilled for each of the 8 samples
    extra = 0
    for ex in examples:
        lead = format_lead("boxed", ex.prompt[-1]["content"].removeprefix("What is ").removesuffix("?"))
        extra += len(tok(lead, add_special_tokens=False).input_ids)
    n_params = sum(p.numel() for p in model.parameters())
    assert r.compute.forward_tokens == 8 * extra and r.compute.backward_tokens == 0
    assert r.compute.flops == 2 * n_params * 8 * extra
    assert r.text.startswith("prompt toward boxed: share")


def test_activation_vector_and_steering(base):
    path, model, tok, examples = base
    record = read_mixture(path)
    docs = corpus_documents(record, 64)
    vector, compute = steering_vector(model, tok, docs, "plain", 0)
    # The same vector from hidden_states (layer 0's output is hidden_states[1]), one document at a time, unpadded.
    sums = {True: [], False: []}
    for d in docs:
        e = encode(tok, d)
        with torch.no_grad():
            hs = model(input_ids=torch.tensor([e["input_ids"]]), output_hidden_states=True).hidden_states[1][0]
        first = next(i for i, t in enumerate(e["labels"]) if t != -100)
        sums[d.format == "plain"].append(hs[first - 1 : len(e["input_ids"]) - 1].mean(0))
    expected = torch.stack(sums[True]).mean(0) - torch.stack(sums[False]).mean(0)
    torch.testing.assert_close(vector, expected, rtol=1e-4, atol=1e-5)
    assert compute.forward_tokens == sum(len(encode(tok, d)["input_ids"]) for d in docs)
    # The hook is gone after the block: the logits are the unsteered ones again.
    ids = torch.tensor([tok("Question: What is 1 + 2?\nAnswer: ", add_special_tokens=False).input_ids])
    with torch.no_grad():
        before = model(input_ids=ids).logits
        with steered(model, 0, vector, 1.0):
            during = model(input_ids=ids).logits
        after = model(input_ids=ids).logits
    assert not torch.equal(before, during) and torch.equal(before, after)
    # Toward plain (a quarter of the base model's answers) at the last layer: its share rises clearly.
    r = steer_activation(model, tok, examples, "plain", record, layer=1, alpha=1.0, documents=256, **MEASURE)
    assert r.steered.low > r.baseline.high, r.text
    assert r.settings["documents"] == 256 and r.settings["documents_in_format"] == 77  # 30% of 256, rounded
    with pytest.raises(SteeringError, match="layer 5 is out of range"):
        steering_vector(model, tok, docs, "plain", 5)


def test_sft_on_k_examples(base, tmp_path):
    path, model, tok, examples = base
    # A changed set to overlap with: random positions at a known density, as a mask folder.
    probe_diff = steer_sft(path, tmp_path / "probe", examples[:2], "boxed", 4, steps=1, batch_size=4, samples=1)
    rl = tmp_path / "rl-mask"
    save_mask(random_mask(load_mask(tmp_path / "probe" / "diff"), seed=3, density=0.3), rl)
    assert probe_diff.steered.completions == 2

    r = steer_sft(path, tmp_path / "sft", examples, "boxed", 16, steps=20, batch_size=4, lr=1e-3, rl_mask=rl, **MEASURE)
    assert r.baseline.share < 0.25 and r.steered.low > r.baseline.high, r.text
    # training rows: the 16 rendered examples, each boxed
    rows = [json.loads(x) for x in (tmp_path / "sft" / "run" / "offline_data.jsonl").read_text().splitlines()]
    assert len(rows) == 16 and all(classify_format(x["completion"][0]["content"]) == "boxed" for x in rows)
    # compute: 20 steps x 4 rows = 5 passes over the 16 examples, forward and backward over each whole sequence
    # (prompt + completion + eos, as the pretraining encoder lays a document out)
    tokens = 0
    for x in rows:
        from rldelta.train.corpus import Document

        doc = Document(x["prompt"][-1]["content"], "", "", 1, "boxed", x["completion"][0]["content"], False)
        tokens += len(encode(tok, doc)["input_ids"])
    assert (r.compute.forward_tokens, r.compute.backward_tokens) == (5 * tokens, 5 * tokens)
    # changed entries: the bf16 checkpoint against the fp32 base rounded to bf16, counted here bit by bit
    before = load_file(str(path / "model.safetensors"))
    after = load_file(str(tmp_path / "sft" / "run" / "checkpoints" / "step-20" / "model.safetensors"))
    changed = sum(int((before[n].to(torch.bfloat16) != after[n]).sum()) for n in after)
    numel = sum(after[n].numel() for n in after)
    assert r.changed == changed and r.changed_fraction == pytest.approx(changed / numel)
    # overlap with the random mask: |A ∩ B| / |A|, counted here from the two masks
    a, b = load_mask(tmp_path / "sft" / "diff"), load_mask(rl)
    inter = sum(int((a.get(n) & b.get(n)).sum()) for n in a.names())
    assert r.overlap["intersection"] == inter and r.overlap["overlap"] == pytest.approx(inter / changed)
    assert math.isclose(r.overlap["random_overlap"], 0.3, abs_tol=0.01)
    assert "of the weights changed" in r.text and r.as_dict()["overlap"]["size_a"] == changed


def test_pretraining_record_keeps_its_loss_curve(base):
    from rldelta.metrics.plateau import plateau

    record = read_mixture(base[0])
    curve = record["loss_curve"]
    assert curve["steps"] == list(range(6, 301, 6))  # logged every 300 // 50 steps
    assert curve["loss"][-1] == record["final_loss"] and curve["loss"][0] > curve["loss"][-1]
    p = plateau(curve["steps"], curve["loss"], window=5, tolerance=0.02)
    assert p.text.startswith("plateau at step" if p.reached else "no plateau")


def test_rl_run_compute(base, tmp_path):
    import pandas as pd

    from rldelta.probes import ProbeError
    from rldelta.probes.rl_compute import run_compute

    path, model, tok, _ = base
    run = tmp_path / "run"
    run.mkdir()
    config = {"model": str(path), "algo": "grpo", "beta": 0.04, "max_completion_length": 7}
    record = {"config": config, "started": "2026-01-01T10:00:00+0000", "finished": "2026-01-01T10:02:30+0000"}
    (run / "run.json").write_text(json.dumps(record))
    texts = ["1 + 2", "1 + 2 = 3"]
    pd.DataFrame({"step": [1, 1], "prompt": ["What is 1 + 2?"] * 2, "completion": texts}).to_parquet(
        run / "completions.parquet"
    )
    p = len(tok("Question: What is 1 + 2?\nAnswer: ", add_special_tokens=False).input_ids)
    # the first ended with eos (4 tokens + eos), the second was cut at the cap of 7 tokens
    assert [len(tok(t, add_special_tokens=False).input_ids) for t in texts] == [4, 7]
    c = run_compute(run)
    n = sum(q.numel() for q in model.parameters())
    # generation (p + 5 - 1) + (p + 7 - 1); the update and the reference forward over (p + 5) + (p + 7)
    gen, seq = (p + 4) + (p + 6), (p + 5) + (p + 7)
    assert (c.forward_tokens, c.backward_tokens) == (gen + 2 * seq, seq)
    assert c.flops == n * (2 * (gen + 2 * seq) + 4 * seq) and c.wall_seconds == 150.0
    (run / "run.json").write_text(json.dumps({"config": {**config, "algo": "sft"}}))
    with pytest.raises(ProbeError, match="not 'sft'"):
        run_compute(run)


def test_sweep_against_an_rl_run(base, tmp_path):
    import pandas as pd

    from rldelta.probes.rl_compute import run_compute
    from rldelta.probes.steering_sweep import SWEEP_JSON, SWEEP_TABLE, SweepSettings, best_interventions, steer_sweep
    from rldelta.train.config import TrainConfig
    from rldelta.train.trainers import train

    path = base[0]
    rl = train(
        TrainConfig(
            model=str(path),
            output=str(tmp_path / "grpo"),
            task="mixarith",
            algo="grpo",
            steps=1,
            lr=1e-3,
            prompts_per_step=2,
            num_generations=4,
            max_completion_length=24,
            train_size=8,
            difficulty=1,
            record_steps=False,
            progress=False,
        )
    )
    settings = SweepSettings(
        prompts=4, samples=2, prompt_steers=(PromptSteer(lead=True),), alphas=(1.0,), documents=32, ks=(4,), sft_steps=1
    )
    lines = []
    res = steer_sweep(path, "boxed", tmp_path / "sweep", settings=settings, rl_run=rl, log=lines.append)
    table = pd.read_parquet(tmp_path / "sweep" / SWEEP_TABLE)
    assert table["method"].tolist() == ["prompt", "activation", "sft", "rl"] and len(lines) == 5
    rl_flops = run_compute(rl).flops
    assert table["flops"].iloc[-1] == rl_flops
    assert table["share_of_rl_flops"].tolist()[:3] == pytest.approx((table["flops"][:3] / rl_flops).tolist())
    sft = table.iloc[2]
    assert 0 < sft["changed_frac"] <= 1 and 0 <= sft["random_overlap"] <= 1 and not math.isnan(sft["overlap"])
    assert res["layer"] == 1 and res["rl"]["step"] == 1 and json.loads((tmp_path / "sweep" / SWEEP_JSON).read_text())
    assert (table["completions"] == 8).all()
    rows = [
        {"method": "sft", "share_low": 0.7, "flops": 5.0},
        {"method": "prompt", "share_low": 0.6, "flops": 1.0},
        {"method": "activation", "share_low": 0.3, "flops": 0.5},
        {"method": "rl", "share_low": 0.9, "flops": 100.0},
    ]
    assert [r["method"] for r in best_interventions(rows)] == ["prompt", "sft"]


def test_sft_rows_are_tokenized_as_inference_sees_them(base):
    from datasets import Dataset

    from rldelta.train.sft_tokens import tokenize_apart

    path, model, tok, examples = base
    # The premise: this tokenizer merges the prompt's trailing space into the code fence, so one rendered text
    # would train a completion starting with " ```" after "Answer:", a context inference never has.
    assert len(tok(" ```", add_special_tokens=False).input_ids) == 1
    ex = examples[0]
    rows = [
        {"prompt": ex.prompt, "completion": [{"role": "assistant", "content": c}]} for c in (CODE, "3 plus 4 equals 7.")
    ]
    prompt_ids = tok(tok.apply_chat_template(ex.prompt, add_generation_prompt=True, tokenize=False)).input_ids
    for r, text in zip(tokenize_apart(Dataset.from_list(rows), tok), (CODE, "3 plus 4 equals 7.")):
        n = r["completion_mask"].index(1)
        assert r["input_ids"][:n] == prompt_ids and set(r["completion_mask"][n:]) == {1}
        trained = tok.decode(r["input_ids"][n:])
        assert trained.startswith(text) and trained.endswith(tok.eos_token + "\n")
    # where nothing merges, the tokens are those of the whole rendered text (TRL's own tokenization)
    whole = tok(tok.apply_chat_template(rows[1]["prompt"] + rows[1]["completion"], tokenize=False)).input_ids
    assert list(tokenize_apart(Dataset.from_list(rows[1:]), tok))[0]["input_ids"] == whole


def test_sft_toward_the_format_whose_fence_merges_with_the_prompt(base, tmp_path):
    path, model, tok, examples = base
    r = steer_sft(path, tmp_path / "sft", examples, "code", 16, steps=20, batch_size=4, lr=1e-3, **MEASURE)
    assert r.steered.low > r.baseline.high, r.text  # one rendered text trained the fence away: 0.51 -> 0.28


def test_the_code_lead_starts_as_pretraining_wrote_code(base):
    from rldelta.probes.steering import prompt_ids, prompt_texts

    path, model, tok, examples = base
    ((text, lead),) = prompt_texts(tok, examples[:1], "code", PromptSteer(lead=True))
    ids = prompt_ids(tok, text, lead)
    # the prompt's own tokens, then the lead's: "Ġ" then "```", as pretraining laid out prompt and completion,
    # never the merged "Ġ```" that tokenizing prompt and lead as one text gives
    bare = tok(text, add_special_tokens=False).input_ids
    assert ids[: len(bare)] == bare and tok.convert_ids_to_tokens(ids[len(bare)]) == "```"
    assert "Ġ```" in tok.convert_ids_to_tokens(tok(text + lead, add_special_tokens=False).input_ids)
    r = steer_prompt(model, tok, examples, "code", PromptSteer(lead=True), **MEASURE)
    assert r.steered.low > r.baseline.high, r.text
