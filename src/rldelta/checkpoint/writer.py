"""Write a `.safetensors` file whose tensors arrive one at a time (in any order).

An output as large as the model (a mask, a patched checkpoint) never has to be held in memory whole. The
`safetensors` library only writes whole dicts; the on-disk format is a documented 8-byte length, a JSON header and
raw little-endian bytes, which is all this writer produces; every file it writes is read back by `safe_open`.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Sequence
from pathlib import Path

import torch

from rldelta.checkpoint.dtypes import ST_NAMES


class SafetensorsStreamWriter:
    """Write a .safetensors file tensor by tensor; nothing but the current tensor is held in memory.

    All (name, dtype, shape) must be known up front, because the header (with every offset) comes first.
    Data goes to `<path>.partial`; `close()` fsyncs and renames it onto `path`, so `path` is never half-written.
    A `.partial` left by an interrupted run can be reopened with `resume=True` and filled in further.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        layout: Sequence[tuple[str, torch.dtype, Sequence[int]]],
        metadata: dict[str, str] | None = None,
        resume: bool = False,
        partial: str | os.PathLike | None = None,
    ):
        self.path = Path(path)
        # `partial`: where the data goes until close() (default `<path>.partial`; same file system as `path`)
        self.partial = Path(partial) if partial is not None else self.path.with_name(self.path.name + ".partial")
        header: dict = {}
        if metadata:
            header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
        self._slots: dict[str, tuple[int, int, torch.dtype, tuple[int, ...]]] = {}
        pos = 0
        for name, dtype, shape in layout:
            shape = tuple(int(d) for d in shape)
            nbytes = math.prod(shape) * dtype.itemsize
            header[name] = {"dtype": ST_NAMES[dtype], "shape": list(shape), "data_offsets": [pos, pos + nbytes]}
            self._slots[name] = (pos, nbytes, dtype, shape)
            pos += nbytes
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)  # the format asks for the data to start 8-byte aligned
        self._data_start = 8 + len(blob)
        head = struct.pack("<Q", len(blob)) + blob
        self.resumed = resume and self.partial.is_file() and self._same_head(head)
        if self.resumed:
            self._f = open(self.partial, "r+b")
        else:
            self._f = open(self.partial, "wb")
            try:
                self._f.write(head)
                self._f.truncate(self._data_start + pos)
            except BaseException:  # a full disk: no open file left behind
                self._f.close()
                raise

    def _same_head(self, head: bytes) -> bool:
        with open(self.partial, "rb") as f:
            return f.read(len(head)) == head

    def write(self, name: str, tensor: torch.Tensor) -> None:
        pos, nbytes, dtype, shape = self._slots[name]
        if tensor.dtype != dtype or tuple(tensor.shape) != shape:
            raise ValueError(f"{name}: expected {dtype} {shape}, got {tensor.dtype} {tuple(tensor.shape)}")
        data = tensor.detach().contiguous().cpu().view(torch.uint8).numpy().tobytes() if nbytes else b""
        self._f.seek(self._data_start + pos)
        self._f.write(data)

    def flush(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> Path:
        self.flush()
        self._f.close()
        os.replace(self.partial, self.path)
        return self.path

    def abort(self) -> None:
        """Close without publishing; the .partial stays for a later resume."""
        if not self._f.closed:
            try:
                self.flush()
            finally:  # closed even when the flush fails (a full disk)
                self._f.close()
