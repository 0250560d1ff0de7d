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
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F32": torch.float32,
    "F64": torch.float64,
}
ST_NAMES = {v: k for k, v in ST_DTYPES.items()}
