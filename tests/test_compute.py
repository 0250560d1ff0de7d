"""Compute accounting (metrics/compute.py) against hand counts, and the generation rule (p + c − 1 token forwards)
against the tokens a real key-value-cached `generate` feeds its model."""

from __future__ import annotations

import pytest

from rldelta.metrics.compute import (
    Compute,
    Part,
    generation,
    generation_tokens,
    prefix_compute,
    rl_compute,
    sft_compute,
    vector_compute,
)

N = 1000
# Two sampled sequences: prompt 5 + completion 3 tokens, prompt 4 + completion 1.
PROMPTS, COMPLETIONS = [5, 4], [3, 1]


def test_rl_hand_count():
    # generation: (5 + 3 - 1) + (4 + 1 - 1) = 11 token forwards; whole sequences: 8 + 5 = 13 tokens
    plain = rl_compute(N, PROMPTS, COMPLETIONS)
    assert (plain.forward_tokens, plain.backward_tokens) == (11 + 13, 13)
    assert plain.flops == 2 * N * 24 + 4 * N * 13
    kl = rl_compute(N, PROMPTS, COMPLETIONS, beta=0.04)  # + the reference model's forward over 13 tokens
    assert (kl.forward_tokens, kl.backward_tokens, kl.flops) == (37, 13, 2 * N * 37 + 4 * N * 13)
    # PPO: 2 epochs (2 forwards + 2 backwards over 13, one old-log-prob forward) and a 500-parameter critic (a
    # scoring forward over 13, then 2 forwards + 2 backwards)
    ppo = rl_compute(N, PROMPTS, COMPLETIONS, beta=0.05, iterations=2, critic_params=500)
    by = {p.name: p for p in ppo.parts}
    assert by["policy update"].forward_tokens == 26 and by["old log-probabilities"].forward_tokens == 13
    assert by["critic"].flops == 500 * (2 * 39 + 4 * 26)
    assert ppo.flops == N * (2 * (11 + 26 + 13 + 13) + 4 * 26) + 500 * (2 * 39 + 4 * 26)


def test_sft_and_steering_hand_count():
    # 2 examples (8 and 5 tokens), 5 rows seen: two whole passes (26 tokens) and one row at the mean 6.5 -> 7
    sft = sft_compute(N, PROMPTS, COMPLETIONS, rows_seen=5)
    assert (sft.forward_tokens, sft.backward_tokens) == (33, 33)
    with_data = sft_compute(N, PROMPTS, COMPLETIONS, rows_seen=4, data=generation(N, PROMPTS, COMPLETIONS))
    assert with_data.forward_tokens == 11 + 26 and with_data.flops == 2 * N * 37 + 4 * N * 26
    assert prefix_compute(N, 6, 10).flops == 2 * N * 60  # 6 prefix tokens prefilled for each of 10 queries
    v = vector_compute(N, [7, 9, 4])
    assert (v.forward_tokens, v.backward_tokens, v.flops) == (20, 0, 2 * N * 20) and v.notes
    total = (sft + v).timed(3.0)
    assert total.forward_tokens == 53 and total.wall_seconds == 3.0
    assert Compute((Part("x", 10, 1),)).share_of(Compute((Part("y", 10, 4),))) == 0.25
    assert total.as_dict()["parts"][0]["name"] == "sft update"
    with pytest.raises(ValueError, match="differ in length"):
        rl_compute(N, [1], [1, 2])
    with pytest.raises(ValueError, match="params"):
        generation(0, [1], [1])


def test_generation_rule_matches_generate():
    """Count the tokens a cached `generate` passes through the model: the prefill's p and one per new token after
    the first, p + c − 1 in all."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=50,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    seen = []
    model.model.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append(
            (kwargs.get("input_ids") if kwargs.get("input_ids") is not None else args[0]).shape[1]
        ),
        with_kwargs=True,
    )
    prompt = torch.tensor([[3, 4, 5, 6, 7]])
    with torch.no_grad():
        out = model.generate(
            prompt, max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=0, eos_token_id=None
        )
    c = out.shape[1] - prompt.shape[1]
    assert c == 4 and sum(seen) == generation_tokens([5], [c]) == 5 + 4 - 1
