"""Layer index and module kind parsed from a parameter name, for grouping results per layer and per module."""

from __future__ import annotations

import re

# Transformer blocks are named `layers.N`, `h.N`, `blocks.N`, `layer.N` by the common architectures.
_BLOCK = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\.")
_PARAM_SUFFIXES = (".weight", ".bias")
_PREFIXES = ("model.", "transformer.", "language_model.", "model.language_model.")


def parse_name(name: str) -> tuple[int | None, str]:
    """`model.layers.3.self_attn.q_proj.weight` -> (3, "self_attn.q_proj"); `model.norm.weight` -> (None, "norm").

    The module is the path inside the block (or inside the model, outside blocks) without the parameter suffix,
    so the same projection in every layer shares one module label.
    """
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
