"""SFT rows tokenized as inference sees them: the prompt apart from its completion.

TRL's SFTTrainer tokenizes a conversational prompt-completion row as one rendered text and takes the completion to
start where that text's tokens and the prompt's own tokens diverge. When a token merges across the boundary (the
mixture models' template ends the prompt with "Answer: " and the byte-level BPE has a " ```" token), the trained
sequence lacks the prompt's last token and starts the completion with the merged one: the model learns to follow
"Answer:" with " ```", while at inference the prompt ends with " " and it must write "```". Here the prompt is
rendered with the generation prompt and tokenized alone, and the rest of the rendered conversation is tokenized
alone after it, as `generate` continues a tokenized prompt. Where nothing merges this gives TRL's tokens exactly.
TRL takes a dataset with `input_ids` and `completion_mask` as already processed (its documented path).
"""

from __future__ import annotations

from rldelta.train.models import ModelError


def tokenize_apart(dataset, tokenizer):
    """`dataset` (conversational prompt and completion rows) as input_ids and completion_mask rows."""

    def row(ex: dict) -> dict:
        prompt_text = tokenizer.apply_chat_template(ex["prompt"], add_generation_prompt=True, tokenize=False)
        full_text = tokenizer.apply_chat_template(ex["prompt"] + ex["completion"], tokenize=False)
        if not full_text.startswith(prompt_text):
            raise ModelError(
                "the chat template renders a prompt differently alone and with its completion; SFT cannot tell "
                f"where the completion starts ({prompt_text[-40:]!r} vs {full_text[len(prompt_text) - 40 :][:60]!r})"
            )
        p = tokenizer(prompt_text, add_special_tokens=False).input_ids
        c = tokenizer(full_text[len(prompt_text) :], add_special_tokens=False).input_ids
        return {"input_ids": p + c, "completion_mask": [0] * len(p) + [1] * len(c)}

    return dataset.map(row, remove_columns=dataset.column_names)
