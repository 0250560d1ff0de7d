"""The files of a training run folder, by name, and its run.json. Light on purpose (no torch): the probes and the
study read runs without loading the training stack. `saving` writes the rest of what is listed there."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rldelta.runtime.atomic import atomic_write_bytes
from rldelta.runtime.files import CHECKPOINTS_DIR, RUN_JSON


def write_run_json(run_dir: str | os.PathLike, record: dict[str, Any]) -> Path:
    path = Path(run_dir) / RUN_JSON
    atomic_write_bytes(path, (json.dumps(record, indent=2, default=str) + "\n").encode())
    return path


def read_run_json(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(run_dir) / RUN_JSON
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def step_dir(run_dir: str | os.PathLike, step: int, fp32: bool = False) -> Path:
    return Path(run_dir) / CHECKPOINTS_DIR / (f"step-{step}-fp32" if fp32 else f"step-{step}")


def saved_steps(run_dir: str | os.PathLike) -> list[int]:
    """Steps with a complete published checkpoint, ascending."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    steps = []
    for p in root.iterdir():
        name = p.name
        if name.startswith("step-") and name[5:].isdigit() and (p / "config.json").is_file():
            steps.append(int(name[5:]))
    return sorted(steps)
