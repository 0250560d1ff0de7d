"""The model sizes of mixture pretraining (test, 1m, 5m, 30m): a Llama shape, default steps and learning rate each."""

from __future__ import annotations

from dataclasses import dataclass

from rldelta.train.corpus import MixtureError


@dataclass(frozen=True)
class Size:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    # Default steps at batch 32 fit ~15 minutes on a shared 2-core machine with 1 torch thread (measured: 1m 0.08 s,
    # 5m 0.5 s, 30m 2.8 s a step). Steps are the budget; pretrain_mixture's max_minutes is only a safety stop.
    steps: int
    lr: float


SIZES: dict[str, Size] = {
    "test": Size(hidden=32, layers=2, heads=4, kv_heads=2, intermediate=64, steps=20, lr=3e-3),
    "1m": Size(hidden=128, layers=4, heads=4, kv_heads=2, intermediate=384, steps=800, lr=3e-3),  # 827,136 params
    "5m": Size(hidden=256, layers=6, heads=8, kv_heads=4, intermediate=768, steps=1500, lr=2e-3),  # 4,801,024 params
    "30m": Size(hidden=512, layers=9, heads=8, kv_heads=4, intermediate=1536, steps=300, lr=1e-3),  # 28,479,488 params
}


def llama_config(size: str, tokenizer):
    """The LlamaConfig of a size preset (tied embeddings, grouped-query attention, fp32)."""
    from transformers import LlamaConfig  # lazy: the sizes table is read without loading transformers

    if size not in SIZES:
        raise MixtureError(f"unknown size {size!r}; known: {', '.join(SIZES)}")
    s = SIZES[size]
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=s.hidden,
        intermediate_size=s.intermediate,
        num_hidden_layers=s.layers,
        num_attention_heads=s.heads,
        num_key_value_heads=s.kv_heads,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
    )
