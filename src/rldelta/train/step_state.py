"""The step recorder's state of one stored tensor, kept where the weights live (torch tensors on the parameter's
device), and the three places the base can be kept.

Per entry: the previous step's bf16 bits (2 bytes) and three bits, packed eight to a byte in np.packbits' order
(the first entry is the byte's high bit, so a state file is the same whichever side wrote it): the previous step's
change set D_t-1, the set that differs from the base now S_t, and the union U_t of the S so far.

One step costs a dense compare of the new bf16 copy with the previous one (the only pass over every entry); all the
rest runs on the changed entries D_t only. S is kept incrementally: an entry's since-base status can change only
where it changed this step, and for a changed entry that equalled the base (not in S_t-1) the answer is known
without the base (it equalled the previous value, and the new one differs); only the entries of D_t ∩ S_t-1 need
their base values. Those are fetched from the base where it is kept:

    device  the base's bf16 copy on the parameter's device          +2 bytes per parameter there
    host    that copy in host memory (pinned when the model is on a GPU) +2 bytes per parameter of host memory
    file    RUN/steps/base.safetensors, mapped, read at those offsets   nothing of its own (the page cache; at 1%
            of the entries changing per step most 4 KB pages hold one, so the base's pages end up cached)

Only counts, and the index lists a patch or the union log needs, cross to the host.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

BASE_PLACEMENTS = ("device", "host", "file")
_LUT = torch.tensor([bin(i).count("1") for i in range(256)], dtype=torch.int64)


def _at(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return idx >> 3, (128 >> (idx & 7)).to(torch.uint8)


def test_bits(packed: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    byte, bit = _at(idx)
    return (packed[byte] & bit) != 0


def set_bits(packed: torch.Tensor, idx: torch.Tensor) -> None:
    """Set the bits at `idx` (distinct, all 0 now): adding a byte's distinct zero bits is OR-ing them."""
    byte, bit = _at(idx)
    packed.index_add_(0, byte, bit)


def clear_bits(packed: torch.Tensor, idx: torch.Tensor) -> None:
    """Clear the bits at `idx` (distinct, all 1 now): subtracting them, as uint8 additions modulo 256."""
    byte, bit = _at(idx)
    packed.index_add_(0, byte, (256 - bit.to(torch.int32)).to(torch.uint8))


def packed_size(numel: int) -> int:
    return (numel + 7) // 8


def pack(mask: torch.Tensor) -> torch.Tensor:
    """A bool tensor's bits, packed (np.packbits' order), on its device."""
    flat = mask.reshape(-1)
    packed = torch.zeros(packed_size(flat.numel()), dtype=torch.uint8, device=flat.device)
    set_bits(packed, torch.nonzero(flat).reshape(-1))
    return packed


def unpack(packed: torch.Tensor, numel: int) -> torch.Tensor:
    shifts = torch.arange(7, -1, -1, device=packed.device, dtype=torch.uint8)
    return ((packed[:, None] >> shifts) & 1).bool().reshape(-1)[:numel]


def ones(packed: torch.Tensor) -> int:
    return int(_LUT.to(packed.device)[packed.long()].sum())


def _nonzero(mask: torch.Tensor) -> torch.Tensor:
    """The flat indices of a bool tensor's set entries; numpy's on the CPU (measured 3x faster than torch's there)."""
    if mask.device.type == "cpu":
        return torch.from_numpy(np.flatnonzero(mask.numpy()))
    return torch.nonzero(mask).reshape(-1)


@dataclass
class TensorState:
    """One stored tensor's state (see the module docstring); `prev` the int16 bits of its bf16 values, flat."""

    prev: torch.Tensor
    prev_set: torch.Tensor
    since: torch.Tensor
    union: torch.Tensor
    changed_base: int = 0
    union_count: int = 0

    @classmethod
    def fresh(cls, bits: torch.Tensor) -> TensorState:
        zeros = torch.zeros(packed_size(bits.numel()), dtype=torch.uint8, device=bits.device)
        return cls(bits.clone(), zeros, zeros.clone(), zeros.clone())

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.prev, self.prev_set, self.since, self.union))

    def advance(self, cur: torch.Tensor, base_at) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step: `cur` the int16 bits of the bf16 values now (flat), `base_at(idx)` the base's bits at idx.
        Returns D_t's indices, the entries new to the union, and the counts (overlap with D_t-1, overlap with
        U_t-1, entries that came to differ from the base, entries back at the base) as one device tensor."""
        idx = _nonzero(cur != self.prev)
        was = test_bits(self.since, idx)
        now = torch.ones_like(was)
        back = idx[was]
        if back.numel():
            now[was] = cur[back] != base_at(back)
        in_union = test_bits(self.union, idx)
        fresh = idx[now & ~in_union]
        came, left = idx[now & ~was], idx[was & ~now]
        counts = torch.stack([test_bits(self.prev_set, idx).sum(), in_union.sum()])
        set_bits(self.since, came)
        clear_bits(self.since, left)
        set_bits(self.union, fresh)
        self.prev_set.zero_()
        set_bits(self.prev_set, idx)
        self.prev[idx] = cur[idx]
        self.changed_base += came.numel() - left.numel()
        self.union_count += fresh.numel()
        return idx, fresh, counts


class FileBase:
    """The base read from RUN/steps/base.safetensors at the offsets asked for, through a read-only memory map."""

    def __init__(self, path: Path, offsets: dict[str, int] | None = None):
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        header.pop("__metadata__", None)
        data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
        self._arrays = {
            name: data[h["data_offsets"][0] : h["data_offsets"][1]].view("<i2") for name, h in header.items()
        }
        self._offsets = offsets or {}  # a shard's entries start there in the whole tensor

    def at(self, name: str, idx: torch.Tensor) -> torch.Tensor:
        got = self._arrays[name][idx.cpu().numpy() + self._offsets.get(name, 0)]
        return torch.from_numpy(got).to(idx.device)

    def whole(self, name: str, numel: int | None = None) -> torch.Tensor:
        start = self._offsets.get(name, 0)
        return torch.from_numpy(np.array(self._arrays[name][start : None if numel is None else start + numel]))


class TensorBase:
    """The base's bits held as tensors, on the parameters' device or in (pinned) host memory."""

    def __init__(self, tensors: dict[str, torch.Tensor], on_host: bool):
        pin = on_host and torch.cuda.is_available()
        self._t = {n: (t.cpu().pin_memory() if pin else t.cpu()) if on_host else t for n, t in tensors.items()}
        self.on_host = on_host

    def at(self, name: str, idx: torch.Tensor) -> torch.Tensor:
        t = self._t[name]
        if t.device == idx.device:
            return t[idx]
        return t[idx.to(t.device)].to(idx.device, non_blocking=True)

    def whole(self, name: str) -> torch.Tensor:
        return self._t[name]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._t.values())
