"""The naming vocabulary: a table of real parameter names (dense and MoE layouts) and what each parses to, written
by hand; the stacked-expert rule; and `parse_name` as the (layer, module) view of `parse_param`."""

from __future__ import annotations

import pytest

from rldelta.naming import ROLES, ParamName, is_stacked, parse_name, parse_param

# name -> (layer, module, expert, role)
TABLE = {
    # dense Llama / Qwen2 / GPT-2 names: the router reading must not touch `gate_proj`
    "model.layers.3.self_attn.q_proj.weight": (3, "self_attn.q_proj", None, "dense"),
    "model.layers.0.mlp.gate_proj.weight": (0, "mlp.gate_proj", None, "dense"),
    "model.layers.11.mlp.down_proj.weight": (11, "mlp.down_proj", None, "dense"),
    "model.layers.2.input_layernorm.weight": (2, "input_layernorm", None, "dense"),
    "model.embed_tokens.weight": (None, "embed_tokens", None, "dense"),
    "model.norm.weight": (None, "norm", None, "dense"),
    "lm_head.weight": (None, "lm_head", None, "dense"),
    "transformer.h.4.attn.c_attn.bias": (4, "attn.c_attn", None, "dense"),
    "model.language_model.layers.1.mlp.up_proj.weight": (1, "mlp.up_proj", None, "dense"),
    # Mixtral as saved (per-expert)
    "model.layers.5.block_sparse_moe.experts.7.w1.weight": (5, "block_sparse_moe.experts.w1", 7, "expert"),
    "model.layers.5.block_sparse_moe.experts.0.w2.weight": (5, "block_sparse_moe.experts.w2", 0, "expert"),
    "model.layers.5.block_sparse_moe.gate.weight": (5, "block_sparse_moe.gate", None, "router"),
    # Qwen-MoE / DeepSeek / OLMoE (per-expert), shared experts and their gate
    "model.layers.3.mlp.experts.17.gate_proj.weight": (3, "mlp.experts.gate_proj", 17, "expert"),
    "model.layers.60.mlp.experts.255.down_proj.weight": (60, "mlp.experts.down_proj", 255, "expert"),
    "model.layers.3.mlp.gate.weight": (3, "mlp.gate", None, "router"),
    "model.layers.3.mlp.gate.e_score_correction_bias": (3, "mlp.gate.e_score_correction_bias", None, "router"),
    "model.layers.3.mlp.shared_expert.gate_proj.weight": (3, "mlp.shared_expert.gate_proj", None, "shared_expert"),
    "model.layers.3.mlp.shared_experts.up_proj.weight": (3, "mlp.shared_experts.up_proj", None, "shared_expert"),
    "model.layers.3.mlp.shared_expert_gate.weight": (3, "mlp.shared_expert_gate", None, "router"),
    # stacked (fused) layouts: transformers 5 in memory, gpt-oss, Llama-4
    "model.layers.1.mlp.experts.gate_up_proj": (1, "mlp.experts.gate_up_proj", None, "expert"),
    "model.layers.1.mlp.experts.down_proj": (1, "mlp.experts.down_proj", None, "expert"),
    "model.layers.1.mlp.experts.down_proj_bias": (1, "mlp.experts.down_proj_bias", None, "expert"),
    "model.layers.1.mlp.router.weight": (1, "mlp.router", None, "router"),
    "model.layers.1.mlp.router.bias": (1, "mlp.router", None, "router"),
    "language_model.model.layers.2.feed_forward.experts.gate_up_proj": (
        2,
        "feed_forward.experts.gate_up_proj",
        None,
        "expert",
    ),
    "language_model.model.layers.2.feed_forward.router.weight": (2, "feed_forward.router", None, "router"),
    "language_model.model.layers.2.feed_forward.shared_expert.down_proj.weight": (
        2,
        "feed_forward.shared_expert.down_proj",
        None,
        "shared_expert",
    ),
}


@pytest.mark.parametrize("name", sorted(TABLE))
def test_each_name_parses_as_written(name):
    want = ParamName(*TABLE[name])
    assert parse_param(name) == want
    assert want.role in ROLES
    assert parse_name(name) == (want.layer, want.module)


def test_every_expert_of_a_projection_shares_one_module_label():
    labels = {parse_param(f"model.layers.3.mlp.experts.{e}.up_proj.weight").module for e in range(64)}
    assert labels == {"mlp.experts.up_proj"}
    assert [parse_param(f"model.layers.3.mlp.experts.{e}.up_proj.weight").expert for e in range(64)] == list(range(64))


@pytest.mark.parametrize(
    "name, shape, stacked",
    [
        ("model.layers.0.mlp.experts.gate_up_proj", (8, 64, 16), True),
        ("model.layers.0.mlp.experts.down_proj_bias", (8, 16), True),  # gpt-oss: one bias row per expert
        ("model.layers.0.mlp.experts.3.gate_proj.weight", (8, 16), False),  # one expert's own matrix
        ("model.layers.0.mlp.gate.weight", (8, 16), False),  # the router
        ("model.layers.0.mlp.gate_proj.weight", (32, 16), False),  # dense
        ("model.layers.0.mlp.experts.bias", (8,), False),  # 1-D: nothing to split
    ],
)
def test_stacked_experts_are_recognised_by_name_and_shape(name, shape, stacked):
    assert is_stacked(parse_param(name), shape) is stacked
