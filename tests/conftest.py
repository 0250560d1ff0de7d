"""Shared test helpers: write hand-built checkpoints in each layout a user may point rldelta at."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file


def write_checkpoint(
    path: Path, tensors: dict[str, torch.Tensor], layout: str = "dir", config: dict | None = None, shards: int = 2
) -> Path:
    """Save `tensors` as a `dir` (model.safetensors), `file`, `sharded` (index + shards) or `hub` cache folder.

    Returns the path a user would pass to rldelta.
    """
    path = Path(path)
    if layout == "file":
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(path))
        return path
    if layout == "hub":
        snap = path / "snapshots" / "abc123"
        write_checkpoint(snap, tensors, "dir", config)
        (path / "refs").mkdir(parents=True)
        (path / "refs" / "main").write_text("abc123")
        return path
    path.mkdir(parents=True, exist_ok=True)
    if config is not None:
        (path / "config.json").write_text(json.dumps(config))
    if layout == "dir":
        save_file(tensors, str(path / "model.safetensors"))
    elif layout == "sharded":
        names = list(tensors)
        groups = [names[i::shards] for i in range(shards)]
        weight_map = {}
        for i, group in enumerate(groups):
            shard = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
            save_file({n: tensors[n] for n in group}, str(path / shard))
            weight_map.update({n: shard for n in group})
        (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    else:
        raise ValueError(layout)
    return path


def bf16_to_f32(x: torch.Tensor) -> np.ndarray:
    """Decode bf16 by its definition (the top 16 bits of an fp32), independently of torch's casts."""
    bits = x.contiguous().view(torch.int16).numpy().astype(np.uint16).astype(np.uint32) << 16
    return bits.view(np.float32)


@pytest.fixture(autouse=True)
def _hub_offline(monkeypatch):
    """No test reaches the network: a hub id that is not in a test's own cache fails at once, offline."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def ckpt(tmp_path):
    def make(name: str, tensors: dict[str, torch.Tensor], layout: str = "dir", config: dict | None = None) -> Path:
        target = tmp_path / (name + (".safetensors" if layout == "file" else ""))
        return write_checkpoint(target, tensors, layout, config)

    return make


# One optimizer step of a tiny model: the settings the training tests share.
TRAIN_ONE_STEP = dict(
    task="digits",
    steps=1,
    prompts_per_step=2,
    num_generations=2,
    max_completion_length=8,
    lr=1e-3,
    train_size=16,
    offline_samples=2,
    progress=False,
)
