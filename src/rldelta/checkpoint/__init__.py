"""Checkpoint I/O: open a checkpoint and read its tensors lazily (`reader`, with `pickled` for `.bin`/`.pt`
weights, `fp8` for block-scaled FP8 and `hub` for hub ids), pair the tensors of two checkpoints of one model
(`pairing`), and write a `.safetensors` file tensor by tensor (`writer`).

Callers import from `rldelta.checkpoint`; the submodules are its parts.
"""

from rldelta.checkpoint.hub import FetchPlan, human_size, parse_hub_id, plan, resolve_checkpoint
from rldelta.checkpoint.pairing import Pairing, pair_tensors
from rldelta.checkpoint.reader import (
    INDEX_FILE,
    SINGLE_FILE,
    Checkpoint,
    CheckpointError,
    TensorInfo,
    open_checkpoint,
)
from rldelta.checkpoint.writer import SafetensorsStreamWriter

__all__ = [
    "INDEX_FILE",
    "SINGLE_FILE",
    "Checkpoint",
    "CheckpointError",
    "FetchPlan",
    "Pairing",
    "SafetensorsStreamWriter",
    "TensorInfo",
    "human_size",
    "open_checkpoint",
    "pair_tensors",
    "parse_hub_id",
    "plan",
    "resolve_checkpoint",
]
