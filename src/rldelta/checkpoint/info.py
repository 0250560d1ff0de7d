"""What every reader shares: the error a checkpoint raises and the record of one stored tensor."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from rldelta.runtime.errors import RldeltaError


class CheckpointError(RldeltaError):
    """A checkpoint that cannot be read, with a one-line reason that names the file or tensor."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    offset: int  # byte offset of the data inside the file (its position, in a pickle), to read files front to back

    @property
    def numel(self) -> int:
        return math.prod(self.shape)
