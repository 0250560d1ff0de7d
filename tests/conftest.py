"""Shared test helpers: write hand-built checkpoints in each layout a user may point rldelta at."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from rldelta.checkpoint import open_checkpoint
from rldelta.masks import Mask, save_mask


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


def bf16_rne(x: np.ndarray) -> torch.Tensor:
    """fp32 values rounded to bf16 by the definition (round to nearest, ties to even), independently of torch's
    casts."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return torch.from_numpy(rounded.view(np.int16)).view(torch.bfloat16)


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


def bits(t: torch.Tensor) -> torch.Tensor:
    """The bit pattern of a float tensor, so comparisons are bitwise (-0.0 vs 0.0, NaN) and not numeric."""
    return t.view({2: torch.int16, 4: torch.int32}[t.element_size()])


def load_all(path: Path) -> dict[str, torch.Tensor]:
    ck = open_checkpoint(path)
    return {n: ck.get(n) for n in ck.names()}


def masked_training_changes(base: Path, tmp_path: Path, precision: str, run) -> tuple[dict, dict]:
    """Train `base` 2 steps (lr 1e-2, weight decay 0.1) under a random 30% mask of every tensor, through the test
    file's `run(base, out, **settings)`; returns the masks and, per saved checkpoint folder, each tensor's
    bitwise-changed entries against the base (in the checkpoint's dtype: the base's rounding is what an untouched
    entry is)."""
    ck = open_checkpoint(base)
    g = torch.Generator().manual_seed(1)
    masks = {n: torch.rand(ck.info(n).shape, generator=g) < 0.3 for n in ck.names()}
    save_mask(Mask.from_tensors(masks), tmp_path / "mask.safetensors")
    out = run(
        base,
        tmp_path / "run",
        precision=precision,
        steps=2,
        lr=1e-2,
        weight_decay=0.1,
        mask=str(tmp_path / "mask.safetensors"),
    )
    assert not (out / "checkpoints" / "step-2-fp32").exists() or precision == "fp32"
    base_w = load_all(base)
    changes = {}
    for d in ["step-2", "step-2-fp32"] if precision == "fp32" else ["step-2"]:
        tuned = load_all(out / "checkpoints" / d)
        assert set(tuned) == set(base_w)
        changes[d] = {n: bits(base_w[n].to(w.dtype)) != bits(w) for n, w in tuned.items()}
    return masks, changes
