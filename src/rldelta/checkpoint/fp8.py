"""FP8 weights with block scales (DeepSeek-V3's layout): which tensor is whose scale, and the block size.

An FP8 `X.weight` comes with an fp32 `X.weight_scale_inv` holding one factor per block of 128×128 entries (the
size is `quantization_config.weight_block_size` in config.json); the weight's value is the stored FP8 number times
its block's factor. The scale is part of the weight, not a weight of its own.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from rldelta.checkpoint.dtypes import FP8_DTYPES

if TYPE_CHECKING:
    from rldelta.checkpoint.info import TensorInfo

SCALE_SUFFIX = "_scale_inv"
DEFAULT_BLOCK = (128, 128)


def block_size(config: dict) -> tuple[int, int]:
    q = config.get("quantization_config") or {}
    b = q.get("weight_block_size") or DEFAULT_BLOCK
    return int(b[0]), int(b[1])


def scale_names(infos: dict[str, TensorInfo], block: tuple[int, int]) -> tuple[dict[str, str], str | None]:
    """weight name -> the name of its block scale, for every FP8 weight stored with one; and the first problem
    (a scale whose shape does not fit its weight's blocks), as a one-line message, or None."""
    found: dict[str, str] = {}
    for name, s in infos.items():
        if not name.endswith(SCALE_SUFFIX):
            continue
        weight = name[: -len(SCALE_SUFFIX)]
        w = infos.get(weight)
        if w is None or w.dtype not in FP8_DTYPES:
            continue  # not a block scale of an FP8 weight: an ordinary tensor
        want = tuple(math.ceil(d / b) for d, b in zip(w.shape, block)) if len(w.shape) == 2 else None
        if s.shape != want:
            return found, (
                f"{s.file}: scale {name!r} has shape {list(s.shape)}, but FP8 weight {weight!r} of shape "
                f"{list(w.shape)} in {block[0]}×{block[1]} blocks needs {list(want) if want else 'a 2-D weight'}"
            )
        found[weight] = name
    return found, None
