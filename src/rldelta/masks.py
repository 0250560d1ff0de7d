"""Masks: one bool tensor per model tensor (same name and shape), True where an entry belongs to the set.

The file format is defined here (`rldelta diff --save-mask` writes it with these constants): a `.safetensors` file
of BOOL tensors with metadata {"format": "rldelta.mask", "version": "1", ...}. A `Mask` is lazy like a `Checkpoint`:
names and shapes come from the header, tensors are produced one at a time by `get(name)`. Set operations and
builders return lazy masks too, so `save_mask(intersection(a, b), path)` streams tensor by tensor and never holds a
whole model's mask.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from rldelta.checkpoint import Checkpoint, CheckpointError, SafetensorsStreamWriter, open_checkpoint, pair_tensors
from rldelta.metrics.nulls import derive_seed
from rldelta.metrics.overlap import count as count_true
from rldelta.runtime.errors import RldeltaError, missing
from rldelta.runtime.files import MASK_FILE, SUMMARY_FILE, TENSORS_FILE
from rldelta.runtime.lock import output_lock

MASK_FORMAT = "rldelta.mask"
MASK_VERSION = "1"


class MaskError(RldeltaError):
    """A mask that cannot be read or combined as asked; the message names the file or tensor."""


@dataclass(frozen=True)
class MaskCounts:
    """Set sizes per tensor; `density` per tensor and in total follow from them."""

    count: dict[str, int]
    numel: dict[str, int]

    def density(self, name: str) -> float:
        n = self.numel[name]
        return self.count[name] / n if n else float("nan")

    @property
    def total_count(self) -> int:
        return sum(self.count.values())

    @property
    def total_numel(self) -> int:
        return sum(self.numel.values())

    @property
    def total_density(self) -> float:
        n = self.total_numel
        return self.total_count / n if n else float("nan")


class Mask:
    """Names and shapes up front; each bool tensor computed or read when asked for."""

    def __init__(
        self,
        shapes: dict[str, tuple[int, ...]],
        getter: Callable[[str], torch.Tensor],
        *,
        metadata: dict[str, str] | None = None,
        source: str = "<mask>",
    ):
        self.shapes = {n: tuple(int(d) for d in s) for n, s in shapes.items()}
        self._getter = getter
        self.metadata = dict(metadata or {})
        self.source = source

    @classmethod
    def from_tensors(
        cls, tensors: dict[str, torch.Tensor], *, metadata: dict[str, str] | None = None, source: str = "<memory>"
    ) -> Mask:
        """A mask held in memory (tests, small models)."""
        for n, t in tensors.items():
            if t.dtype != torch.bool:
                raise MaskError(f"{source}: tensor {n!r} has dtype {t.dtype}, a mask needs bool")
        return cls(
            {n: tuple(t.shape) for n, t in tensors.items()}, lambda n: tensors[n], metadata=metadata, source=source
        )

    def names(self) -> list[str]:
        return list(self.shapes)

    def __contains__(self, name: object) -> bool:
        return name in self.shapes

    def __len__(self) -> int:
        return len(self.shapes)

    def shape(self, name: str) -> tuple[int, ...]:
        try:
            return self.shapes[name]
        except KeyError:
            raise MaskError(f"{self.source}: no tensor named {name!r}") from None

    def get(self, name: str) -> torch.Tensor:
        shape = self.shape(name)
        t = self._getter(name)
        if t.dtype != torch.bool or tuple(t.shape) != shape:
            raise MaskError(f"{self.source}: tensor {name!r} is {t.dtype} {tuple(t.shape)}, expected bool {shape}")
        return t

    @property
    def numel(self) -> int:
        return sum(math.prod(s) for s in self.shapes.values())


# ---- reading and writing -------------------------------------------------------------------------------------


def resolve_mask_path(path: str | os.PathLike) -> Path:
    """A mask file, or the mask.safetensors inside a diff output directory."""
    p = Path(path)
    if not p.exists():
        raise MaskError(missing(p))
    if p.is_dir():
        f = p / MASK_FILE
        if f.is_file():
            return f
        if (p / TENSORS_FILE).is_file() or (p / SUMMARY_FILE).is_file():
            raise MaskError(f"{p}: diff directory without {MASK_FILE} (run `rldelta diff ... --save-mask`)")
        raise MaskError(f"{p}: neither a mask file nor a diff directory holding {MASK_FILE}")
    if p.suffix != ".safetensors":
        raise MaskError(f"{p}: not a mask (expected a .safetensors file or a diff directory)")
    return p


def load_mask(path: str | os.PathLike) -> Mask:
    """Open a mask file (or a diff dir's mask.safetensors) lazily; every tensor must be bool."""
    f = resolve_mask_path(path)
    try:
        ck: Checkpoint = open_checkpoint(f)
    except CheckpointError as e:
        raise MaskError(str(e)) from None
    for name in ck.names():
        info = ck.info(name)
        if info.dtype != torch.bool:
            raise MaskError(f"{f}: not a mask (tensor {name!r} has dtype {info.dtype}, a mask needs bool)")
    try:
        with safe_open(str(f), framework="pt") as sf:
            metadata = dict(sf.metadata() or {})
    except SafetensorError as e:
        raise MaskError(f"{f}: cannot read ({e})") from None
    if metadata.get("format", MASK_FORMAT) != MASK_FORMAT:
        raise MaskError(f"{f}: not a mask (metadata format is {metadata['format']!r}, expected {MASK_FORMAT!r})")

    def read(name: str) -> torch.Tensor:
        try:
            return ck.get(name)
        except CheckpointError as e:
            raise MaskError(str(e)) from None

    return Mask({n: ck.info(n).shape for n in ck.names()}, read, metadata=metadata, source=str(f))


def mask_target(path: str | os.PathLike) -> Path:
    """The file `save_mask(mask, path)` writes: PATH itself, or PATH/mask.safetensors for a directory (existing, or a
    path without suffix)."""
    p = Path(path)
    return p / MASK_FILE if p.is_dir() or p.suffix == "" else p


def save_mask(
    mask: Mask,
    path: str | os.PathLike,
    *,
    metadata: dict[str, str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> MaskCounts:
    """Stream `mask` into a safetensors file (atomically) and return its per-tensor counts.

    A directory (existing, or a path without suffix) receives `mask.safetensors`. The write holds the output's lock
    (lock.py): a mask.safetensors is a diff folder's, locked as that folder, so that it and a diff into it exclude
    each other.
    """
    p = mask_target(path)
    meta = {**mask.metadata, **(metadata or {}), "format": MASK_FORMAT, "version": MASK_VERSION}
    names = mask.names()
    count: dict[str, int] = {}
    with output_lock(p.parent if p.name == MASK_FILE else p, f"mask ({p})"):
        p.parent.mkdir(parents=True, exist_ok=True)
        writer = SafetensorsStreamWriter(p, [(n, torch.bool, mask.shape(n)) for n in names], metadata=meta)
        try:
            for n in names:
                t = mask.get(n)
                writer.write(n, t.contiguous())
                count[n] = count_true(t)
                if progress:
                    progress(n)
        except BaseException:
            writer.abort()
            writer.partial.unlink(missing_ok=True)  # a mask is rebuilt from scratch; no resume to keep it for
            raise
        writer.close()
    return MaskCounts(count=count, numel={n: math.prod(mask.shape(n)) for n in names})


def mask_counts(mask: Mask, progress: Callable[[str], None] | None = None) -> MaskCounts:
    """Number of True entries per tensor (one tensor in memory at a time)."""
    count = {}
    for n in mask.names():
        count[n] = count_true(mask.get(n))
        if progress:
            progress(n)
    return MaskCounts(count=count, numel={n: math.prod(mask.shape(n)) for n in mask.names()})


# ---- set operations ------------------------------------------------------------------------------------------


def check_compatible(a: Mask, b: Mask) -> None:
    """Same tensor names and shapes, or a MaskError naming the first tensor that differs."""
    for n in a.names():
        if n not in b:
            raise MaskError(f"tensor {n!r} is in {a.source} but not in {b.source}")
        if a.shape(n) != b.shape(n):
            raise MaskError(f"tensor {n!r} has shape {a.shape(n)} in {a.source} but {b.shape(n)} in {b.source}")
    for n in b.names():
        if n not in a:
            raise MaskError(f"tensor {n!r} is in {b.source} but not in {a.source}")


def _combine(a: Mask, b: Mask, op: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], label: str) -> Mask:
    check_compatible(a, b)
    return Mask(
        dict(a.shapes),
        lambda n: op(a.get(n), b.get(n)),
        metadata={"builder": label},
        source=f"{label}({a.source}, {b.source})",
    )


def intersection(a: Mask, b: Mask) -> Mask:
    return _combine(a, b, torch.logical_and, "intersection")


def union(a: Mask, b: Mask) -> Mask:
    return _combine(a, b, torch.logical_or, "union")


def difference(a: Mask, b: Mask) -> Mask:
    """Entries in A and not in B."""
    return _combine(a, b, lambda x, y: x & ~y, "difference")


# ---- builders ------------------------------------------------------------------------------------------------


def mask_from_diff(diff_dir: str | os.PathLike) -> Mask:
    """The changed-mask `rldelta diff --save-mask` left in DIFF_DIR."""
    p = Path(diff_dir)
    if p.exists() and not p.is_dir():
        raise MaskError(f"{p}: not a diff directory")
    return load_mask(p)


def _paired_shapes(base: Checkpoint, tuned: Checkpoint) -> dict[str, tuple[int, ...]]:
    """Tensors of BASE that TUNED holds too (paired as `rldelta diff` pairs them); anything missing or reshaped
    means the two are not the same model."""
    p = pair_tensors(base, tuned)
    if problem := p.mismatch(base, tuned):
        raise MaskError(problem)
    return {n: base.info(n).shape for n in p.names}


def _abs_delta(base: Checkpoint, tuned: Checkpoint, name: str) -> torch.Tensor:
    d = tuned.get(name).to(torch.float32, copy=True)
    d -= base.get(name).float()
    return d.abs_()


def threshold_delta_mask(base: Checkpoint, tuned: Checkpoint, threshold: float) -> Mask:
    """|tuned − base| > threshold, computed in fp32 (threshold 1e-5 is the published study's criterion)."""
    if not threshold >= 0:
        raise MaskError(f"threshold must be >= 0, not {threshold}")
    return Mask(
        _paired_shapes(base, tuned),
        lambda n: _abs_delta(base, tuned, n) > threshold,
        metadata={
            "builder": "threshold_delta",
            "threshold": repr(threshold),
            "base": str(base.path),
            "tuned": str(tuned.path),
        },
        source=f"|Δ|>{threshold:g}",
    )


def threshold_weight_mask(ckpt: Checkpoint, threshold: float, *, below: bool = False) -> Mask:
    """|W| > threshold (or |W| < threshold with `below`), e.g. to select the weights rounding lets move."""
    if not threshold >= 0:
        raise MaskError(f"threshold must be >= 0, not {threshold}")

    def get(n: str) -> torch.Tensor:
        w = ckpt.get(n).float().abs_()
        return w < threshold if below else w > threshold

    shapes = {n: ckpt.info(n).shape for n in ckpt.names()}
    sign = "<" if below else ">"
    return Mask(
        shapes,
        get,
        metadata={
            "builder": "threshold_weight",
            "threshold": repr(threshold),
            "below": str(below),
            "base": str(ckpt.path),
        },
        source=f"|W|{sign}{threshold:g}",
    )


def topk_delta_mask(base: Checkpoint, tuned: Checkpoint, frac: float) -> Mask:
    """Per tensor, the round(frac·numel) entries with the largest |Δ| (ties broken by position order of topk)."""
    if not 0.0 <= frac <= 1.0:
        raise MaskError(f"top-k fraction must lie in [0, 1], not {frac}")

    def get(n: str) -> torch.Tensor:
        d = _abs_delta(base, tuned, n).reshape(-1)
        k = round(frac * d.numel())
        m = torch.zeros(d.numel(), dtype=torch.bool)
        if k:
            m[torch.topk(d.nan_to_num_(nan=-1.0), k, sorted=False).indices] = True
        return m.reshape(base.info(n).shape)

    return Mask(
        _paired_shapes(base, tuned),
        get,
        metadata={"builder": "topk_delta", "frac": repr(frac), "base": str(base.path), "tuned": str(tuned.path)},
        source=f"top{frac:g}|Δ|",
    )


def random_mask(like: Mask, seed: int = 0, *, density: float | None = None) -> Mask:
    """Uniformly random positions, with exactly LIKE's count per tensor (or round(density·numel) if given).

    Each tensor draws from its own generator seeded by (seed, name), so a tensor's mask does not depend on
    which other tensors are present or on the reading order.
    """
    if density is not None and not 0.0 <= density <= 1.0:
        raise MaskError(f"density must lie in [0, 1], not {density}")

    def get(n: str) -> torch.Tensor:
        shape = like.shape(n)
        numel = math.prod(shape)
        k = round(density * numel) if density is not None else count_true(like.get(n))
        g = torch.Generator().manual_seed(derive_seed(seed, n))
        m = torch.zeros(numel, dtype=torch.bool)
        m[torch.randperm(numel, generator=g)[:k]] = True
        return m.reshape(shape)

    meta = {"builder": "random", "seed": str(seed), "like": like.source}
    if density is not None:
        meta["density"] = repr(density)
    return Mask(dict(like.shapes), get, metadata=meta, source=f"random(seed={seed})")


def describe(counts: MaskCounts) -> dict:
    """JSON-ready densities per tensor and in total."""
    return {
        "total": {"count": counts.total_count, "numel": counts.total_numel, "density": counts.total_density},
        "tensors": {
            n: {"count": counts.count[n], "numel": counts.numel[n], "density": counts.density(n)} for n in counts.count
        },
    }


__all__ = [
    "Mask",
    "MaskCounts",
    "MaskError",
    "load_mask",
    "save_mask",
    "mask_target",
    "mask_counts",
    "check_compatible",
    "intersection",
    "union",
    "difference",
    "mask_from_diff",
    "threshold_delta_mask",
    "threshold_weight_mask",
    "topk_delta_mask",
    "random_mask",
    "describe",
    "resolve_mask_path",
]
