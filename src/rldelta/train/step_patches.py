"""Sparse step patches: each optimizer step's change of the bf16 weights as a file a rollout engine can apply, and
the weights of any step rebuilt from the base and the patches, bit for bit.

RUN/steps/patches/step-N.safetensors holds, per stored tensor that changed at step N, `NAME.indices` (the flat
positions that changed, ascending; int32, int64 only for a tensor of 2**31 entries or more) and `NAME.values` (their
new bf16 values). This is the layout of vLLM's `SparseWeightPatch` in checkpoint coordinates (name, int32 flat
indices, values in the weights' dtype, the full shape), the one TRL's delta weight sync sends it, so a patch is
loadable into that API with no conversion; the header (safetensors metadata) adds the step, the full shapes and the
base's fingerprint.

The fingerprint is a SHA-256 over the base's bf16 copy (names in sorted order, shape, bytes): patches are deltas, so
applying them to any other base would give weights that never existed; `apply_patches` refuses that in one line.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from rldelta.runtime.atomic import atomic_dir
from rldelta.runtime.errors import RldeltaError
from rldelta.runtime.files import STEPS_BASE_FILE, STEPS_DIR

PATCH_DIR = "patches"
PATCH_FORMAT = "rldelta-step-patch/1"
FINGERPRINT_KEY = "base_fingerprint"


def patch_file(steps_dir: str | os.PathLike, step: int) -> Path:
    return Path(steps_dir) / PATCH_DIR / f"step-{step}.safetensors"


def fingerprint(tensors: Iterable[tuple[str, torch.Tensor]]) -> str:
    """SHA-256 of bf16 tensors (name, shape, bytes), taken in sorted name order whatever order they come in."""
    parts = {}
    for name, t in tensors:
        h = hashlib.sha256(f"{name}|{tuple(t.shape)}|".encode())
        h.update(t.detach().to(torch.bfloat16).contiguous().view(torch.int16).cpu().numpy().tobytes())
        parts[name] = h.digest()
    total = hashlib.sha256()
    for name in sorted(parts):
        total.update(parts[name])
    return total.hexdigest()


def index_dtype(numel: int) -> torch.dtype:
    return torch.int32 if numel < 2**31 else torch.int64


def write_patch(
    path: Path, step: int, base_fingerprint: str, changes: dict[str, tuple[torch.Tensor, torch.Tensor]], shapes
) -> None:
    """`changes`: stored name -> (flat indices, new bf16 values), on any device; only changed tensors."""
    tensors = {}
    for name, (idx, values) in changes.items():
        numel = 1
        for d in shapes[name]:
            numel *= d
        tensors[f"{name}.indices"] = idx.to("cpu", index_dtype(numel)).contiguous()
        tensors[f"{name}.values"] = values.to("cpu", torch.bfloat16).contiguous()
    meta = {
        "format": PATCH_FORMAT,
        "step": str(step),
        FINGERPRINT_KEY: base_fingerprint,
        "shapes": json.dumps({n: list(shapes[n]) for n in changes}),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    save_file(tensors, tmp, metadata=meta)
    os.replace(tmp, path)


def _base_bf16(base: str | os.PathLike, names: list[str]) -> dict[str, torch.Tensor]:
    from rldelta.checkpoint import CheckpointError, open_checkpoint

    try:
        ckpt = open_checkpoint(base)
        return {n: ckpt.get(n).to(torch.bfloat16) for n in names}
    except CheckpointError as e:
        raise RldeltaError(f"{base}: {e}") from None


def apply_patches(base: str | os.PathLike, run_dir: str | os.PathLike, to: int, out: str | os.PathLike) -> int:
    """Write the bf16 weights of step `to` (OUT/model.safetensors, with BASE's config and tokenizer files beside, or
    OUT itself when it ends in .safetensors), from BASE and RUN's patches 1..to. Returns the entries patched."""
    steps_dir = Path(run_dir) / STEPS_DIR
    files = [patch_file(steps_dir, s) for s in range(1, to + 1)]
    missing = [f for f in files if not f.is_file()]
    if to < 1 or missing:
        where = missing[0] if missing else f"--to {to}"
        raise RldeltaError(f"{where}: no such patch (record the run with --patches; steps start at 1)")
    with safe_open(steps_dir / STEPS_BASE_FILE, "pt") as f:
        names = list(f.keys())
        want = f.metadata().get(FINGERPRINT_KEY) if f.metadata() else None
    weights = _base_bf16(base, names)
    have = fingerprint(weights.items())
    patched = 0
    for path in files:
        with safe_open(path, "pt") as f:
            meta = f.metadata() or {}
            if meta.get(FINGERPRINT_KEY) != have or (want and want != have):
                raise RldeltaError(
                    f"{path}: made for a base with fingerprint {meta.get(FINGERPRINT_KEY)}; {base} has {have}"
                )
            for key in f.keys():
                if key.endswith(".indices"):
                    name = key[: -len(".indices")]
                    idx = f.get_tensor(key).long()
                    weights[name].view(-1)[idx] = f.get_tensor(f"{name}.values")
                    patched += idx.numel()
    _write_weights(Path(base), weights, Path(out))
    return patched


def _write_weights(base: Path, weights: dict[str, torch.Tensor], out: Path) -> None:
    if out.suffix == ".safetensors":
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".partial")
        save_file({n: t.contiguous() for n, t in weights.items()}, tmp)
        os.replace(tmp, out)
        return
    with atomic_dir(out) as tmp:
        save_file({n: t.contiguous() for n, t in weights.items()}, tmp / "model.safetensors")
        if base.is_dir():  # the config and tokenizer, so OUT loads as a model
            for f in base.iterdir():
                if f.is_file() and f.suffix not in (".safetensors", ".bin", ".pt") and "index" not in f.name:
                    shutil.copy2(f, tmp / f.name)
