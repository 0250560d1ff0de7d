"""The per-tensor numbers of a diff as the tensors are stored: FP8 with block scales (DeepSeek-V3's layout), and
a vocabulary the tuned side grew (its shared rows); any other pair goes to `delta_stats` as it is.

A stored FP8 entry means `fp8 · scale[block]`. Two FP8 sides: an entry changed if its stored bits differ or its
block's scale does (a new scale moves every value of the block, zeros aside, without touching their bits). The
values (|Δ| > atol, norms, rank) are those of the dequantized weights in fp32. One FP8 side against, say, a bf16
base: the FP8 side is dequantized and compared in the other side's dtype, as any two dtypes are.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from rldelta.metrics.delta import DeltaStats, delta_stats
from rldelta.metrics.sparsity import as_bits, coverage

FP8 = (torch.float8_e4m3fn, torch.float8_e5m2)


def expand_blocks(scale: torch.Tensor, shape: tuple[int, ...], block: tuple[int, int]) -> torch.Tensor:
    """One scale per block -> one per entry of a `shape` matrix (the last blocks may be cut short)."""
    return scale.repeat_interleave(block[0], 0).repeat_interleave(block[1], 1)[: shape[0], : shape[1]]


def _entry_scale(w: torch.Tensor, scale: torch.Tensor | None, block: tuple[int, int]) -> torch.Tensor:
    if scale is None:
        return torch.ones(w.shape, dtype=torch.float32)
    return expand_blocks(scale.to(torch.float32), tuple(w.shape), block)


def dequantize(w: torch.Tensor, scale: torch.Tensor | None, block: tuple[int, int]) -> torch.Tensor:
    """The fp32 value of a weight: FP8 times its block scale; a weight without scale only widened."""
    out = w.to(torch.float32)
    if scale is not None:
        out *= expand_blocks(scale.to(torch.float32), tuple(w.shape), block)
    return out


def stored_delta(
    base: torch.Tensor,
    tuned: torch.Tensor,
    *,
    scales: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None),
    blocks: tuple[tuple[int, int], tuple[int, int]] = ((128, 128), (128, 128)),
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Δ in fp32 on `device`, the one `stored_delta_stats` takes the rank of: scales applied, base's rows only."""
    base_scale, tuned_scale = scales
    if tuned.ndim == 2 and tuned.shape[0] > base.shape[0]:
        tuned = tuned[: base.shape[0]]
        if tuned_scale is not None:
            tuned_scale = tuned_scale[: -(-base.shape[0] // blocks[1][0])]

    def value(w: torch.Tensor, scale: torch.Tensor | None, block: tuple[int, int]) -> torch.Tensor:
        w = w.to(device)
        if w.dtype in FP8:
            return dequantize(w, None if scale is None else scale.to(device), block)
        return w.to(torch.float32)

    return value(tuned, tuned_scale, blocks[1]) - value(base, base_scale, blocks[0])


def fp8_delta_stats(
    base: torch.Tensor,
    tuned: torch.Tensor,
    *,
    base_scale: torch.Tensor | None,
    tuned_scale: torch.Tensor | None,
    base_block: tuple[int, int] = (128, 128),
    tuned_block: tuple[int, int] = (128, 128),
    compare_dtype: torch.dtype,
    atol: float,
    rank: bool = True,
) -> tuple[DeltaStats, torch.Tensor]:
    """`delta_stats` for a pair where at least one side is FP8 (its scale None when stored without one)."""
    b32 = dequantize(base, base_scale, base_block) if base.dtype in FP8 else base
    t32 = dequantize(tuned, tuned_scale, tuned_block) if tuned.dtype in FP8 else tuned
    if base.dtype in FP8 and tuned.dtype in FP8:
        stats, _ = delta_stats(b32, t32, compare_dtype=torch.float32, atol=atol, rank=rank)
        if base.dtype == tuned.dtype:
            mask = as_bits(base) != as_bits(tuned)
        else:  # two FP8 formats: no shared bits, the stored numbers compared as values
            mask = base.to(torch.float32) != tuned.to(torch.float32)
        if base_scale is not None or tuned_scale is not None:
            bs = _entry_scale(base, base_scale, base_block)
            ts = _entry_scale(tuned, tuned_scale, tuned_block)
            mask |= as_bits(bs) != as_bits(ts)
        n = mask.numel()
        changed = int(mask.sum())
        cov = coverage(mask) if mask.ndim == 2 else (None, None)
        stats = replace(
            stats,
            changed=changed,
            changed_frac=changed / n if n else float("nan"),
            row_coverage=cov[0],
            col_coverage=cov[1],
        )
        return stats, mask
    if compare_dtype in FP8:  # an FP8 base against a wider tuned side: compared in the tuned side's dtype
        compare_dtype = tuned.dtype
    return delta_stats(b32, t32, compare_dtype=compare_dtype, atol=atol, rank=rank)


def stored_delta_stats(
    base: torch.Tensor,
    tuned: torch.Tensor,
    *,
    scales: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None),
    blocks: tuple[tuple[int, int], tuple[int, int]] = ((128, 128), (128, 128)),
    compare_dtype: torch.dtype,
    atol: float,
    rank: bool = True,
) -> tuple[DeltaStats, torch.Tensor]:
    """`delta_stats` of a pair as read from two checkpoints: block scales applied where a side is FP8, and only the
    base's rows of a tuned matrix with more rows (a grown vocabulary; the caller counts the added ones)."""
    base_scale, tuned_scale = scales
    if tuned.ndim == 2 and tuned.shape[0] > base.shape[0]:
        tuned = tuned[: base.shape[0]]
        if tuned_scale is not None:
            tuned_scale = tuned_scale[: -(-base.shape[0] // blocks[1][0])]
    if base.dtype not in FP8 and tuned.dtype not in FP8:
        return delta_stats(base, tuned, compare_dtype=compare_dtype, atol=atol, rank=rank)
    return fp8_delta_stats(
        base,
        tuned,
        base_scale=base_scale,
        tuned_scale=tuned_scale,
        base_block=blocks[0],
        tuned_block=blocks[1],
        compare_dtype=compare_dtype,
        atol=atol,
        rank=rank,
    )
