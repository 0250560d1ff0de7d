"""The step recorder's files read back: a run's steps table and summary, the union mask at any step, the union log."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from safetensors.torch import load_file

from rldelta.columns import unit_schema
from rldelta.masks import Mask
from rldelta.metrics.steps import StepCounts, patch_bytes
from rldelta.runtime.errors import RldeltaError
from rldelta.runtime.files import FIRST_CHANGED_FILE, STEPS_DIR, STEPS_FILE, STEPS_SUMMARY_FILE

UNION_LOG = "union.log"
RECORD = struct.Struct("<qqq")  # step, tensor index, number of entries; then that many int64 flat indices


STEPS_SCHEMA = unit_schema(
    [
        ("step", pa.int64()),
        ("module", pa.string()),
        ("numel", pa.int64()),
        ("changed_step", pa.int64()),
        ("changed_step_frac", pa.float64()),
        ("changed_base", pa.int64()),
        ("changed_base_frac", pa.float64()),
        ("overlap_prev_step", pa.float64()),
        ("overlap_union", pa.float64()),
        ("new_in_union", pa.int64()),
        ("union_frac", pa.float64()),
        ("learning_rate", pa.float64()),
        ("bytes_index", pa.int64()),
        ("bytes_bitmask", pa.int64()),
        ("bytes_dense", pa.int64()),
    ]
)


def _ratio(a: int, b: int) -> float:
    return a / b if b else float("nan")


def step_row(step: int, module: str, c: StepCounts, learning_rate: float | None) -> dict[str, Any]:
    """One row of steps.parquet."""
    return {
        "step": step,
        "module": module,
        "numel": c.numel,
        "changed_step": c.changed_step,
        "changed_step_frac": _ratio(c.changed_step, c.numel),
        "changed_base": c.changed_base,
        "changed_base_frac": _ratio(c.changed_base, c.numel),
        "overlap_prev_step": _ratio(c.overlap_prev, c.changed_step),
        "overlap_union": _ratio(c.overlap_union, c.changed_step),
        "new_in_union": c.new_in_union,
        "union_frac": _ratio(c.union, c.numel),
        "learning_rate": learning_rate,
        **patch_bytes(c.changed_step, c.numel),
    }


def mask_file(run_dir: str | os.PathLike, step: int) -> Path:
    """Where the set that differs from the base at `step` is saved."""
    return Path(run_dir) / STEPS_DIR / f"step-{step}.mask.safetensors"


def read_steps(run_dir: str | os.PathLike) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A run's recorded steps (RUN/steps.parquet) and their summary; one-line errors for a folder without them."""
    run = Path(run_dir)
    path = run / STEPS_FILE
    if not path.is_file():
        raise RldeltaError(f"{run}: no {STEPS_FILE} (train with the step recorder on: `rldelta train --record-steps`)")
    try:
        table = pd.read_parquet(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise RldeltaError(f"{path}: unreadable ({e}); a run killed mid-step leaves it without its footer") from None
    summary_path = run / STEPS_DIR / STEPS_SUMMARY_FILE
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    return table, summary


def union_mask(run_dir: str | os.PathLike, step: int) -> Mask:
    """Every entry that differed from the base at some step <= `step` (from RUN/steps/first_changed.safetensors)."""
    path = Path(run_dir) / STEPS_DIR / FIRST_CHANGED_FILE
    if not path.is_file():
        raise RldeltaError(f"{path}: missing (written when a recorded run ends)")
    first = load_file(path)
    return Mask.from_tensors(
        {n: (t > 0) & (t <= step) for n, t in first.items()}, metadata={"step": str(step), "source": "union"}
    )


def first_changed(log: Path) -> dict[int, list[tuple[int, np.ndarray]]]:
    """The union log read back: per tensor index, (step, flat indices new to the union at that step)."""
    out: dict[int, list[tuple[int, np.ndarray]]] = {}
    with open(log, "rb") as f:
        while head := f.read(RECORD.size):
            step, tensor, count = RECORD.unpack(head)
            idx = np.frombuffer(f.read(8 * count), dtype="<i8")
            out.setdefault(tensor, []).append((step, idx))
    return out
