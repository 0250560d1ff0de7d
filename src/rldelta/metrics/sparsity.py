"""Which entries of a tensor an update changed: bitwise in a storage dtype, or beyond an absolute tolerance."""

from __future__ import annotations

import torch

COMPARE_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# What `rldelta diff --compare-dtype` accepts: the narrower of the two stored dtypes (the default), the base's, or one
# dtype for every tensor.
COMPARE_CHOICES = ("narrower", "base", *COMPARE_DTYPES)
_FP8 = (torch.float8_e4m3fn, torch.float8_e5m2)

_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def as_bits(x: torch.Tensor) -> torch.Tensor:
    """The tensor's storage reinterpreted as integers of the same width (so -0.0 != +0.0 and NaN == same NaN)."""
    if x.dtype == torch.bool:
        return x.view(torch.uint8)
    return x.view(_BITS[x.element_size()])


def narrower(base: torch.dtype, tuned: torch.dtype) -> torch.dtype:
    """The dtype a publisher's cast produces: the narrower of two float dtypes, the tuned side's at equal widths
    (fp16 against bf16: a base cast for publication ends in the tuned side's format). An FP8 side is dequantized,
    never compared in, so the other side's dtype is taken."""
    if base in _FP8:
        return tuned
    if tuned in _FP8:
        return base
    return tuned if tuned.itemsize <= base.itemsize else base


def compare_dtype(choice: str, base: torch.dtype, tuned: torch.dtype) -> torch.dtype:
    """The dtype one tensor pair is compared in under `--compare-dtype CHOICE` (one of COMPARE_CHOICES)."""
    if choice == "narrower":
        return narrower(base, tuned)
    return base if choice == "base" else COMPARE_DTYPES[choice]


def cast_changed(base: torch.Tensor, tuned: torch.Tensor, chunk: int = 1 << 20) -> int:
    """Entries that differ by the cast alone: of the side stored in the wider dtype (the base at equal widths, as in
    `narrower`), those whose value the other side's dtype cannot hold (cast to it, round-to-nearest-even, and back,
    the bits differ). It is what a comparison in the wider dtype counts when the narrow side is an unchanged cast
    copy. 0 where both sides share a dtype, and for integer, bool and FP8 sides."""
    if base.dtype == tuned.dtype or not (base.is_floating_point() and tuned.is_floating_point()):
        return 0
    if base.dtype in _FP8 or tuned.dtype in _FP8:
        return 0
    narrow = narrower(base.dtype, tuned.dtype)
    wide = base if narrow == tuned.dtype else tuned
    flat = wide.reshape(-1)
    n = 0
    for lo in range(0, flat.numel(), chunk):  # a few MiB of temporaries, whatever the tensor's size
        x = flat[lo : lo + chunk]
        n += int(torch.count_nonzero(as_bits(x.to(narrow).to(x.dtype)) != as_bits(x)))
    return n


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
