"""The one naming vocabulary: layer, module kind, expert index and role parsed from a parameter name.

`parse_param(name)` is what every engine groups by. The module label is the path inside the block (or inside the
model, outside blocks) without the parameter suffix and without an expert index, so the same projection of every
layer and of every expert shares one label. The role says what kind of weight it is:

- "expert": a routed expert's weight. Per-expert layouts carry the index in the name, right after `experts`
  (Mixtral `block_sparse_moe.experts.N.w1`, Qwen-MoE / DeepSeek / OLMoE `mlp.experts.N.gate_proj`): it becomes
  `expert`. A stacked (fused) layout stores all experts of a layer in one tensor with no index in its name
  (transformers 5's in-memory Mixtral/Qwen-MoE, gpt-oss and Llama-4 checkpoints: `mlp.experts.gate_up_proj` of
  shape (E, a, b), `mlp.experts.down_proj_bias` of shape (E, b)): `expert` is None and `is_stacked` says so.
- "shared_expert": an always-on expert (`mlp.shared_expert.*` of Qwen-MoE and Llama-4, `mlp.shared_experts.*` of
  DeepSeek): a dense MLP, no index.
- "router": the gate that picks experts (`mlp.gate`, `block_sparse_moe.gate`, `mlp.router`, `feed_forward.router`,
  DeepSeek's `mlp.gate.e_score_correction_bias`) and Qwen-MoE's `mlp.shared_expert_gate`. Only a path component
  that *is* `gate` or `router` counts: the dense `mlp.gate_proj` is a projection, not a router.
- "dense": everything else.

Stacked experts are recognised by name and shape alone: a tensor under `experts` whose name has no expert index and
that has 2 or more dimensions stores one slice per expert along its first dimension (dim 0 is the expert count).
Every stacked layout of the architectures above does so; an experts tensor stored flat in some other way (DBRX's
`ffn.experts.mlp.w1` of shape (E·I, H)) is not split and stays one row.
"""

from __future__ import annotations

import re
from typing import NamedTuple

# Transformer blocks are named `layers.N`, `h.N`, `blocks.N`, `layer.N` by the common architectures.
_BLOCK = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\.")
_PARAM_SUFFIXES = (".weight", ".bias")
_PREFIXES = ("model.", "transformer.", "language_model.", "model.language_model.")
_EXPERT_INDEX = re.compile(r"(?:^|\.)experts\.(\d+)(?=\.|$)")
_EXPERTS = "experts"
_SHARED = ("shared_expert", "shared_experts")
_ROUTER = ("gate", "router", "shared_expert_gate")

ROLES = ("dense", "expert", "shared_expert", "router")


class ParamName(NamedTuple):
    """What a parameter name says: its block (None outside blocks), module label, expert index and role."""

    layer: int | None
    module: str
    expert: int | None
    role: str


def _strip(name: str) -> tuple[int | None, str]:
    stem = name
    for suffix in _PARAM_SUFFIXES:
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    m = _BLOCK.search(stem + ".")
    if m:
        return int(m.group(1)), stem[m.end() :] if m.end() <= len(stem) else stem
    for prefix in sorted(_PREFIXES, key=len, reverse=True):
        if stem.startswith(prefix):
            stem = stem[len(prefix) :]
            break
    return None, stem


def parse_param(name: str) -> ParamName:
    """`model.layers.3.mlp.experts.17.gate_proj.weight` -> ParamName(3, "mlp.experts.gate_proj", 17, "expert");
    `model.layers.3.self_attn.q_proj.weight` -> ParamName(3, "self_attn.q_proj", None, "dense")."""
    layer, module = _strip(name)
    expert = None
    m = _EXPERT_INDEX.search(module)
    if m:
        expert = int(m.group(1))
        module = module[: m.start(1) - 1] + module[m.end(1) :]
    parts = module.split(".")
    if _EXPERTS in parts:
        role = "expert"
    elif any(p in _SHARED for p in parts):
        role = "shared_expert"
    elif any(p in _ROUTER for p in parts):
        role = "router"
    else:
        role = "dense"
    return ParamName(layer, module, expert, role)


def parse_name(name: str) -> tuple[int | None, str]:
    """`model.layers.3.self_attn.q_proj.weight` -> (3, "self_attn.q_proj"); `model.norm.weight` -> (None, "norm");
    `model.layers.3.mlp.experts.17.gate_proj.weight` -> (3, "mlp.experts.gate_proj")."""
    p = parse_param(name)
    return p.layer, p.module


def is_stacked(p: ParamName, shape: tuple[int, ...] | list[int]) -> bool:
    """Whether a tensor of this name and shape holds all experts of its layer stacked along dim 0."""
    return p.role == "expert" and p.expert is None and len(shape) >= 2
