"""Pickled PyTorch weights (`pytorch_model.bin`, `*.bin`/`*.pt` shards): read so that nothing but tensors is ever
unpickled.

`torch.load(weights_only=True)` unpickles with an allow-list of tensor types only: a file that would call anything
else while loading (the way a pickle runs code) is refused before that call happens. `mmap=True` maps the data
instead of reading it, so listing a shard's tensors costs its pickle, not its size; a read copies one tensor out.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

import torch

from rldelta.checkpoint.info import CheckpointError, TensorInfo

PICKLE_SINGLE = "pytorch_model.bin"
PICKLE_INDEX = "pytorch_model.bin.index.json"
SUFFIXES = (".bin", ".pt", ".pth")
# What a trainer leaves beside its weights in the same pickled format: never weights.
_NOT_WEIGHTS = re.compile(r"^(training_args|optimizer|scheduler|scaler|rng_state.*|trainer_state)\.(bin|pt|pth)$")
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def weight_files(path: Path) -> list[Path]:
    """The pickled weight files of a directory without an index (`pytorch_model.bin` alone when it is there)."""
    if (path / PICKLE_SINGLE).is_file():
        return [path / PICKLE_SINGLE]
    return sorted(f for f in path.iterdir() if f.suffix in SUFFIXES and f.is_file() and not _NOT_WEIGHTS.match(f.name))


def _load(file: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as e:
        what = _GLOBAL.search(str(e))
        called = f"it would call {what.group(1)} while unpickling" if what else str(e).splitlines()[0]
        raise CheckpointError(
            f"{file}: refused: holds more than tensors ({called}); only tensors are unpickled"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
        first = (str(e).splitlines() or [e.__class__.__name__])[0]
        raise CheckpointError(f"{file}: cannot read as a torch.save zip file ({first})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{file}: refused: holds a {type(obj).__name__}, not a dict of named tensors")
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{file}: refused: entry {key!r} is a {type(value).__name__}, not a tensor")
    return obj


def infos_of_pickle(file: Path, only: set[str] | None = None) -> dict[str, TensorInfo]:
    """Name, dtype and shape of every tensor in one pickled file (the data stays on disk)."""
    out: dict[str, TensorInfo] = {}
    for i, (name, t) in enumerate(_load(file).items()):
        if only is None or name in only:
            out[name] = TensorInfo(name=name, file=file, dtype=t.dtype, shape=tuple(t.shape), offset=i)
    return out


def read_pickled(file: Path, name: str) -> torch.Tensor:
    """One tensor, copied out of the map (tied tensors share storage in a pickle; the copy is its own)."""
    tensors = _load(file)
    if name not in tensors:
        raise CheckpointError(f"{file}: no tensor named {name!r}")
    return tensors[name].clone()
