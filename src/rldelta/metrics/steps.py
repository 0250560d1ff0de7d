"""Per-step change sets of a training run: counts, overlaps and the size of a sparse weight patch.

Pure functions over the bit patterns of bf16 tensors (as int16 numpy views), no I/O. A step's change set is
compared bitwise, like `rldelta diff`: a weight changed if its stored bits differ.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INDEX_BYTES = 4  # a sparse patch's entry index (int32)
VALUE_BYTES = 2  # a bf16 value


@dataclass
class StepCounts:
    """One tensor's (or a sum of tensors') numbers for one optimizer step."""

    numel: int = 0
    changed_step: int = 0  # |D_t|: entries whose bits differ from the previous step
    changed_base: int = 0  # |S_t|: entries whose bits differ from the base
    overlap_prev: int = 0  # |D_t ∩ D_t-1|
    overlap_union: int = 0  # |D_t ∩ U_t-1|, U = every entry that differed from the base at some earlier step
    new_in_union: int = 0  # |S_t \ U_t-1|: entries that differ from the base for the first time
    union: int = 0  # |U_t| = |U_t-1 ∪ S_t|

    def __iadd__(self, other: StepCounts) -> StepCounts:
        for k in self.__dataclass_fields__:
            setattr(self, k, getattr(self, k) + getattr(other, k))
        return self


def ones(packed: np.ndarray) -> int:
    """The number of set bits in a packed bit array (np.packbits)."""
    return int(np.bitwise_count(packed).sum(dtype=np.int64))


def set_bits(packed: np.ndarray) -> np.ndarray:
    """The flat indices of the set bits of a packed bit array, ascending; fast when few bytes are non-zero."""
    nonzero = np.flatnonzero(packed)
    bits = np.unpackbits(packed[nonzero]).reshape(-1, 8).view(bool)
    return (nonzero[:, None] * 8 + np.arange(8))[bits]


def step_counts(
    current: np.ndarray,
    previous: np.ndarray,
    base: np.ndarray,
    previous_step_set: np.ndarray,
    union: np.ndarray,
) -> tuple[StepCounts, np.ndarray, np.ndarray]:
    """The counts of one tensor at one step, the step's change set D_t, and the entries new to the union.

    `current`, `previous`, `base`: int16 views of the bf16 values, flat. `previous_step_set` (D_t-1) and `union`
    (U_t-1, every entry that differed from the base at some earlier step) are packed bits (np.packbits), and so are
    the two sets returned: the set operations and counts run on bytes, eight entries at a time.
    """
    d = np.packbits(np.not_equal(current, previous))
    s = np.packbits(np.not_equal(current, base))
    fresh = s & ~union  # the padding bits of the last byte stay 0: they are 0 in s
    new = ones(fresh)
    c = StepCounts(
        numel=int(current.size),
        changed_step=ones(d),
        changed_base=ones(s),
        overlap_prev=ones(d & previous_step_set),
        overlap_union=ones(d & union),
        new_in_union=new,
        union=ones(union) + new,
    )
    return c, d, fresh


def patch_bytes(changed: int, numel: int) -> dict[str, int]:
    """The bytes that ship one step's changed bf16 entries under the common encodings, and the dense size.

    index: an int32 index and a bf16 value per changed entry; bitmask: one bit per entry plus the changed values;
    dense: every entry.
    """
    return {
        "bytes_index": changed * (INDEX_BYTES + VALUE_BYTES),
        "bytes_bitmask": -(-numel // 8) + changed * VALUE_BYTES,
        "bytes_dense": numel * VALUE_BYTES,
    }


def share_reached(first_changed_in_final: np.ndarray, steps: list[int]) -> list[float]:
    """For each step t, the share of the final change set whose entries had differed from the base by step t.

    `first_changed_in_final`: the first-change step of each entry of the final set (all > 0).
    """
    total = first_changed_in_final.size
    if total == 0:
        return [float("nan")] * len(steps)
    ordered = np.sort(first_changed_in_final)
    return [float(np.searchsorted(ordered, t, side="right")) / total for t in steps]
