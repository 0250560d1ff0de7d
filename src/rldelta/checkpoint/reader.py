"""Open a checkpoint in any of the layouts a hub or a trainer leaves behind, and read its tensors lazily.

Layouts: a directory holding `model.safetensors`; a directory holding a sharded `model.safetensors.index.json`;
a single `.safetensors` file; a directory of `*.safetensors` files without an index; the same with pickled
weights (`pytorch_model.bin`, `pytorch_model.bin.index.json`, `*.bin`/`*.pt`; see pickled.py); a local hub cache
folder (`models--org--name`, or one of its `snapshots/<rev>/`); a hub id `org/name[@rev]` (see hub.py). FP8
weights keep their block scales beside them (see fp8.py).

Every read opens the file, copies one tensor out of the memory map and closes it again. Keeping the map open
would let the file's touched pages count towards this process's RSS until the end, so a whole model would look
resident even though only one tensor is in use.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from rldelta.checkpoint.dtypes import ST_DTYPES
from rldelta.checkpoint.fp8 import block_size, scale_names
from rldelta.checkpoint.hub import resolve_checkpoint
from rldelta.checkpoint.info import CheckpointError, TensorInfo
from rldelta.checkpoint.pickled import PICKLE_INDEX, infos_of_pickle, read_pickled, weight_files

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

# Output embeddings that a `tie_word_embeddings` config shares with the input embeddings.
_TIED_PAIRS = (("lm_head.weight", "model.embed_tokens.weight"),)


def _read_header(file: Path) -> dict:  # noqa: C901
    """The JSON header of a safetensors file, validated enough to give a clear error for a corrupt one."""
    try:
        with open(file, "rb") as f:
            raw_len = f.read(8)
            if len(raw_len) < 8:
                raise CheckpointError(f"{file}: not a safetensors file (shorter than its 8-byte header length)")
            (n,) = struct.unpack("<Q", raw_len)
            size = os.fstat(f.fileno()).st_size
            if n > size - 8:
                raise CheckpointError(f"{file}: corrupt safetensors header (claims {n} bytes, file has {size})")
            header = json.loads(f.read(n))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{file}: corrupt safetensors header ({e.__class__.__name__})") from None
    except OSError as e:
        raise CheckpointError(f"{file}: cannot read ({e.strerror})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{file}: corrupt safetensors header (not a JSON object)")
    data_len = size - 8 - n
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        try:
            start, end = meta["data_offsets"]
            dtype = meta["dtype"]
            shape = meta["shape"]
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{file}: corrupt safetensors header (bad entry for tensor {name!r})") from None
        if dtype not in ST_DTYPES:
            raise CheckpointError(f"{file}: tensor {name!r} has unsupported dtype {dtype}")
        if not (0 <= start <= end <= data_len):
            raise CheckpointError(f"{file}: corrupt safetensors header (tensor {name!r} lies outside the file)")
        itemsize = ST_DTYPES[dtype].itemsize
        if not all(isinstance(d, int) and d >= 0 for d in shape) or math.prod(shape) * itemsize != end - start:
            raise CheckpointError(
                f"{file}: corrupt safetensors header (tensor {name!r}: shape {shape} does not fit {end - start} bytes)"
            )
    header["__data_start__"] = 8 + n
    return header


def _infos_of_file(file: Path, only: set[str] | None = None) -> dict[str, TensorInfo]:
    header = _read_header(file)
    out: dict[str, TensorInfo] = {}
    for name, meta in header.items():
        if name.startswith("__") or (only is not None and name not in only):
            continue
        out[name] = TensorInfo(
            name=name,
            file=file,
            dtype=ST_DTYPES[meta["dtype"]],
            shape=tuple(int(d) for d in meta["shape"]),
            offset=header["__data_start__"] + int(meta["data_offsets"][0]),
        )
    return out


def _resolve_hub_cache(path: Path) -> Path:
    """`models--org--name` -> the snapshot named by refs/main, or the only snapshot there is."""
    snaps = path / "snapshots"
    ref = path / "refs" / "main"
    if ref.is_file():
        rev = ref.read_text().strip()
        if (snaps / rev).is_dir():
            return snaps / rev
        raise CheckpointError(f"{path}: refs/main names snapshot {rev}, which is not in {snaps}")
    revs = sorted(p for p in snaps.iterdir() if p.is_dir())
    if len(revs) == 1:
        return revs[0]
    if not revs:
        raise CheckpointError(f"{path}: hub cache folder without any snapshot")
    raise CheckpointError(f"{path}: hub cache holds {len(revs)} snapshots and no refs/main; pass one snapshots/<rev>/")


@dataclass
class Checkpoint:
    """The tensors of one checkpoint: names, dtypes and shapes from the headers, data read on demand."""

    path: Path
    infos: dict[str, TensorInfo]
    config: dict = field(default_factory=dict)
    # name -> the name it is tied to (the alias is not a tensor of its own; reading it reads the target)
    aliases: dict[str, str] = field(default_factory=dict)
    # FP8 weight name -> its block scale (not a tensor of its own either), and the block size of the scales
    scales: dict[str, TensorInfo] = field(default_factory=dict)
    block: tuple[int, int] = (128, 128)

    def names(self) -> list[str]:
        """Tensor names in on-disk order (file, then offset), so a full pass reads each file front to back."""
        return sorted(self.infos, key=lambda n: (str(self.infos[n].file), self.infos[n].offset))

    def __contains__(self, name: object) -> bool:
        return name in self.infos

    def __len__(self) -> int:
        return len(self.infos)

    def info(self, name: str) -> TensorInfo:
        try:
            return self.infos[name]
        except KeyError:
            raise CheckpointError(f"{self.path}: no tensor named {name!r}") from None

    def get(self, name: str) -> torch.Tensor:
        """Read one tensor (a fresh copy; the file is not kept mapped)."""
        return _read(self.info(name))

    def prefetch(self, name: str) -> None:
        """Ask the OS to start reading tensor `name` (and its FP8 scale) into the page cache, so that a `get` soon
        after finds it there instead of faulting it in a few pages at a time. A hint only: nothing happens for
        pickled files or where the OS has no posix_fadvise, and a failure shows up, if at all, when it is read."""
        if not hasattr(os, "posix_fadvise"):
            return
        for info in (self.infos.get(name), self.scales.get(name)):
            if info is None or info.file.suffix != ".safetensors":
                continue
            try:
                fd = os.open(info.file, os.O_RDONLY)
                try:
                    os.posix_fadvise(fd, info.offset, info.numel * info.dtype.itemsize, os.POSIX_FADV_WILLNEED)
                finally:
                    os.close(fd)
            except OSError:
                pass

    def scale(self, name: str) -> torch.Tensor | None:
        """The block scale of FP8 weight `name` (one factor per `block`), or None for a weight stored without."""
        info = self.scales.get(name)
        return None if info is None else _read(info)

    def tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        for name in self.names():
            yield name, self.get(name)

    @property
    def numel(self) -> int:
        return sum(i.numel for i in self.infos.values())


def _read(info: TensorInfo) -> torch.Tensor:
    if info.file.suffix != ".safetensors":
        return read_pickled(info.file, info.name)
    try:
        with safe_open(str(info.file), framework="pt") as f:
            return f.get_tensor(info.name)
    except SafetensorError as e:
        raise CheckpointError(f"{info.file}: cannot read tensor {info.name!r} ({e})") from None


def _files_of_dir(path: Path) -> tuple[list[Path], dict[str, Path] | None]:
    """The safetensors files of a checkpoint directory, and for a sharded one the index's name -> file map."""
    index = path / INDEX_FILE
    if not index.is_file() and not (path / SINGLE_FILE).is_file() and not any(path.glob("*.safetensors")):
        index = path / PICKLE_INDEX  # safetensors win where a repo ships both
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            if not isinstance(weight_map, dict):
                raise TypeError
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
            raise CheckpointError(f"{index}: corrupt index (no 'weight_map' object)") from None
        by_name = {name: path / shard for name, shard in weight_map.items()}
        files = sorted(set(by_name.values()))
        for f in files:
            if not f.is_file():
                raise CheckpointError(f"{index}: names shard {f.name}, which is missing from {path}")
        return files, by_name
    if (path / SINGLE_FILE).is_file():
        return [path / SINGLE_FILE], None
    files = sorted(path.glob("*.safetensors")) or weight_files(path)
    if files:
        return files, None
    if any(path.glob("*.gguf")):
        raise CheckpointError(
            f"{path}: holds a GGUF file, not safetensors; convert it once with "
            f"`rldelta models prepare FILE.gguf -o DIR` and pass DIR"
        )
    raise CheckpointError(
        f"{path}: not a checkpoint (no {SINGLE_FILE}, no {INDEX_FILE}, no *.safetensors, no pickled *.bin/*.pt)"
    )


def open_checkpoint(path: str | os.PathLike) -> Checkpoint:  # noqa: C901
    """Open a checkpoint for lazy reading. Raises CheckpointError with a one-line reason on bad input."""
    given = resolve_checkpoint(path)
    root = given
    if root.is_dir() and (root / "snapshots").is_dir():
        root = _resolve_hub_cache(root)

    config: dict = {}
    if root.is_file():
        if root.suffix == ".gguf":
            raise CheckpointError(
                f"{root}: a GGUF file (quantized, llama.cpp names); convert it once with "
                f"`rldelta models prepare {root} -o DIR` and pass DIR"
            )
        if root.suffix not in (".safetensors", ".bin", ".pt", ".pth"):
            raise CheckpointError(
                f"{root}: not a checkpoint (expected a .safetensors or .bin/.pt file, or a directory)"
            )
        files, by_name = [root], None
        cfg_file = root.parent / "config.json"
    else:
        files, by_name = _files_of_dir(root)
        cfg_file = root / "config.json"
    if cfg_file.is_file():
        try:
            config = json.loads(cfg_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            config = {}  # a config is a hint for tied weights, never required

    infos: dict[str, TensorInfo] = {}
    for file in files:
        wanted = None if by_name is None else {n for n, f in by_name.items() if f == file}
        found = _infos_of_file(file, wanted) if file.suffix == ".safetensors" else infos_of_pickle(file, wanted)
        if wanted is not None and (lost := wanted - found.keys()):
            raise CheckpointError(f"{file}: index lists tensor {sorted(lost)[0]!r} but the shard does not hold it")
        for name, info in found.items():
            if name in infos:
                raise CheckpointError(f"{file}: tensor {name!r} also appears in {infos[name].file}")
            infos[name] = info

    block = block_size(config)
    scales, problem = scale_names(infos, block)
    if problem:
        raise CheckpointError(problem)
    scale_infos = {weight: infos.pop(scale) for weight, scale in scales.items()}

    aliases: dict[str, str] = {}
    if _config_ties_embeddings(config):
        for alias, target in _TIED_PAIRS:
            if target in infos:
                aliases[alias] = target
                infos.pop(alias, None)  # a stored copy of a tied tensor is the same parameter: count it once
    return Checkpoint(path=given, infos=infos, config=config, aliases=aliases, scales=scale_infos, block=block)


def _config_ties_embeddings(config: dict) -> bool:
    tie = config.get("tie_word_embeddings")
    if tie is None:
        tie = config.get("text_config", {}).get("tie_word_embeddings")
    return bool(tie)
