"""`rldelta selfcheck`'s planted pair: a Llama-shaped bf16 pair where a known subset of weights moved.

Planted: in every layer, 20% of the entries of q_proj and v_proj moved by exactly one unit in the last place,
and mlp.down_proj of layer 0 received a rank-2 update, added in fp32 and stored in bf16; everything else is
untouched. The diff must find exactly the planted entries. The rank-2 matrix shows why both rank measures are
reported: rounding to bf16 adds noise in every entry, so its numerical rank (matrix_rank's tolerance) is nearly
full while its effective rank stays near 2.
"""

from __future__ import annotations

from pathlib import Path

import torch

LOW_RANK_TENSOR = "model.layers.0.mlp.down_proj.weight"


def build_planted_pair(root: Path, seed: int = 0) -> tuple[Path, Path, dict]:
    """Write base/ and tuned/ under root; return their paths and the planted answer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=512,
        hidden_size=128,
        intermediate_size=344,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    base_dir, tuned_dir = root / "base", root / "tuned"
    model.save_pretrained(base_dir)
    g = torch.Generator().manual_seed(seed + 1)
    planted: dict[str, int] = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("q_proj.weight", "v_proj.weight")):
                moved = torch.rand(p.shape, generator=g) < 0.2
                bits = p.data.view(torch.int16)
                bits += moved.to(torch.int16)  # one ULP away from zero, exactly
                planted[name] = int(moved.sum())
            elif name == LOW_RANK_TENSOR:
                upd = 0.05 * torch.randn(p.shape[0], 2, generator=g) @ torch.randn(2, p.shape[1], generator=g)
                new = (p.data.float() + upd).to(torch.bfloat16)
                planted[name] = int((new.view(torch.int16) != p.data.view(torch.int16)).sum())
                p.data.copy_(new)
    model.save_pretrained(tuned_dir)
    return base_dir, tuned_dir, planted
