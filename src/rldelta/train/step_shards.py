"""The step recorder under torch.distributed with FSDP2 (`fully_shard`): each rank compares its own shard.

FSDP2 holds every parameter as a DTensor sharded on its first dimension (`Shard(0)`): rank r holds a run of whole
rows, which is one contiguous run of the flat tensor starting at a known offset. The recorder keeps its state for
that run only (2.375 bytes per local entry); the counts of a step are summed over the ranks (one all-reduce of a few
integers per tensor), the indices that go to files are made global by adding the offset, and rank 0 writes every
file, so they are the same files a single process writes. The base is gathered once, at the start, to be written.

DeepSpeed ZeRO-3 is not supported, and refused with a one-line error: outside its gather hooks a ZeRO-3
parameter is an empty placeholder, and this rank's values are in `param.ds_tensor`, a flat partition of the
parameter, padded to the same size on every rank. That is again one contiguous run (at rank x partition size), so
the same scheme would carry over (local = ds_tensor less its padding, offset = rank x ds_tensor.ds_numel), but it
rests on DeepSpeed's internal attributes and is untested here, so the recorder does not claim it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.distributed as dist

from rldelta.runtime.errors import RldeltaError


def _is_dtensor(p: torch.Tensor) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # a torch built without distributed
        return False
    return isinstance(p, DTensor)


class Shards:
    """Which part of each parameter this process holds, and the collectives the recorder needs."""

    def __init__(self, params: dict[str, torch.nn.Parameter]):
        if any(hasattr(p, "ds_id") or hasattr(p, "ds_tensor") for p in params.values()):
            raise RldeltaError("the step recorder does not support DeepSpeed ZeRO-3 parameters (see train.step_shards)")
        self.sharded = any(_is_dtensor(p) for p in params.values())
        self.rank = dist.get_rank() if self.sharded else 0
        self.world = dist.get_world_size() if self.sharded else 1
        self._offsets = {n: self._offset(n, p) for n, p in params.items()}

    @staticmethod
    def _offset(name: str, p: torch.Tensor) -> int:
        if not _is_dtensor(p):
            return 0
        from torch.distributed.tensor import Shard
        from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

        if tuple(p.placements) != (Shard(0),):
            raise RldeltaError(f"{name}: sharded as {p.placements}; the step recorder follows FSDP2's Shard(0) only")
        _, offset = compute_local_shape_and_global_offset(p.shape, p.device_mesh, p.placements)
        return int(offset[0]) * math.prod(p.shape[1:]) if offset else 0

    def local(self, p: torch.Tensor) -> torch.Tensor:
        return p.to_local() if _is_dtensor(p) else p

    def offset(self, param: str) -> int:
        """The flat position in the whole parameter of this rank's first entry."""
        return self._offsets[param]

    def full_bf16(self, p: torch.Tensor) -> torch.Tensor:
        """The whole parameter's bf16 copy (a collective: every rank calls it, in the same order)."""
        p = p.detach().to(torch.bfloat16)
        return p.full_tensor() if _is_dtensor(p) else p

    def sum(self, counts: torch.Tensor) -> torch.Tensor:
        """Counts summed over the ranks (int64, on the host)."""
        if not self.sharded:
            return counts
        on = counts.to("cuda") if dist.get_backend() == "nccl" else counts
        dist.all_reduce(on)
        return on.cpu()

    def gather(self, obj):
        """Every rank's `obj` on rank 0, in rank order (None elsewhere)."""
        if not self.sharded:
            return [obj]
        out = [None] * self.world if self.rank == 0 else None
        dist.gather_object(obj, out, dst=0)
        return out

    def broadcast(self, obj):
        if not self.sharded:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.sharded:
            dist.barrier()

    def concat(self, parts: list[np.ndarray] | None) -> np.ndarray | None:
        return None if parts is None else np.concatenate(parts)
