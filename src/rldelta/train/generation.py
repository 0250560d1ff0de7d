"""Generation for evaluation and probes: greedy completions and temperature samples of chat prompts, and loading a
model folder for it. Batched with left padding (greedy prompts sorted by length so batches pad little)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rldelta.train.models import ModelError, load_pretrained


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
