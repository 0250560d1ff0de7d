"""The one way rldelta makes a tokenizer from scratch: a byte-level BPE trained in code on given texts, digits one
per token, wrapped as a transformers tokenizer with a chat template. The tiny test model and the mixture models
both use it, with their own texts, specials and template.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def train_bpe_tokenizer(
    texts: Sequence[str],
    *,
    vocab_size: int,
    special_tokens: Sequence[str],
    eos_token: str,
    pad_token: str,
    chat_template: str,
    model_max_length: int,
    bos_token: str | None = None,
    additional_special_tokens: Sequence[str] | None = None,
):
    """A `PreTrainedTokenizerFast`: byte-level BPE learned from `texts` (deterministic), `special_tokens` first in
    the vocabulary. `bos_token` and `additional_special_tokens` are set only when given."""
    # Lazy: tokenizers/transformers load only when a tokenizer is built, not when the train package is imported.
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # Digits one per token (as SmolLM2 does), so numbers of every size share the same ten embeddings.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    optional: dict[str, Any] = {}
    if bos_token is not None:
        optional["bos_token"] = bos_token
    if additional_special_tokens is not None:
        optional["additional_special_tokens"] = list(additional_special_tokens)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=eos_token,
        pad_token=pad_token,
        unk_token=None,
        chat_template=chat_template,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
        **optional,
    )
