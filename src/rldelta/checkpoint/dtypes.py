"""The dtype codes of the safetensors header, shared by the reader and the writer."""

from __future__ import annotations

import torch

ST_DTYPES: dict[str, torch.dtype] = {
    "BOOL": torch.bool,
    "U8": torch.uint8,
    "I8": torch.int8,
    "I16": torch.int16,
    "I32": torch.int32,
    "I64": torch.int64,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F32": torch.float32,
    "F64": torch.float64,
}
ST_NAMES = {v: k for k, v in ST_DTYPES.items()}
FP8_DTYPES = frozenset({torch.float8_e4m3fn, torch.float8_e5m2})


def dtype_label(dtype: torch.dtype) -> str:
    """How a dtype is named in results: torch's name (`bfloat16`), but FP8 by its safetensors code (`F8_E4M3`),
    which says which of the two FP8 formats it is without torch's `fn` suffix."""
    return ST_NAMES[dtype] if dtype in FP8_DTYPES else str(dtype).removeprefix("torch.")


def dtype_of_label(label: str) -> torch.dtype:
    """The dtype `dtype_label` named (`bfloat16`, `F8_E4M3`, ...)."""
    if label in ST_DTYPES:
        return ST_DTYPES[label]
    dtype = getattr(torch, label, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"not a dtype label: {label!r}")
    return dtype
