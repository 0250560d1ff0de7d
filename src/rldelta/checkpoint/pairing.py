"""Pair the tensors of two checkpoints of one model: which both hold in equal shapes, and what is on one side only."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from rldelta.checkpoint.reader import Checkpoint
from rldelta.naming import parse_name

# Modules whose rows are the vocabulary: a tokenizer that gained tokens adds rows here and nowhere else.
VOCAB_MODULES = frozenset({"embed_tokens", "lm_head", "wte", "embed_in", "embed_out", "word_embeddings", "embed"})


@dataclass
class Pairing:
    """Which tensors the two checkpoints share, and what is on one side only."""

    names: list[str]
    missing_in_tuned: list[str] = field(default_factory=list)
    extra_in_tuned: list[str] = field(default_factory=list)
    shape_mismatch: list[dict] = field(default_factory=list)
    # A float tensor against an integer/bool one (or two different integer dtypes): no comparison of the two is a
    # change of weights, so they are listed here rather than diffed (they would count as 100% changed).
    dtype_mismatch: list[dict] = field(default_factory=list)
    tied: list[str] = field(default_factory=list)
    # vocabulary tensors the tuned side holds more rows of (also in shape_mismatch; see `for_diff`)
    resized: list[dict] = field(default_factory=list)

    def for_diff(self) -> Pairing:
        """The pairing a diff uses: resized vocabulary tensors are compared on their shared rows (the added
        rows counted apart), so they move from the skipped shape mismatches to the paired names."""
        grown = {r["name"] for r in self.resized}
        if not grown:
            return self
        return replace(
            self,
            names=self.names + [r["name"] for r in self.resized],
            shape_mismatch=[m for m in self.shape_mismatch if m["name"] not in grown],
        )

    def mismatch(self, base: Checkpoint, tuned: Checkpoint) -> str | None:
        """One line naming the first base tensor that TUNED lacks or holds in another shape; None if every base
        tensor is paired (then the two are the same model)."""
        if self.missing_in_tuned:
            return f"tensor {self.missing_in_tuned[0]!r} is in {base.path} but not in {tuned.path}"
        if self.shape_mismatch:
            m = self.shape_mismatch[0]
            return (
                f"tensor {m['name']!r} has shape {tuple(m['base_shape'])} in {base.path} "
                f"but {tuple(m['tuned_shape'])} in {tuned.path}"
            )
        return None


def pair_tensors(base: Checkpoint, tuned: Checkpoint) -> Pairing:
    """Tensors present in both with equal shapes, in the base's on-disk order; tied aliases counted once."""
    aliases = set(base.aliases) | set(tuned.aliases)
    base_names = [n for n in base.names() if n not in aliases]
    tuned_names = {n for n in tuned.names() if n not in aliases}
    p = Pairing(names=[], tied=sorted(aliases))
    for n in base_names:
        if n not in tuned_names:
            p.missing_in_tuned.append(n)
        elif base.info(n).shape != tuned.info(n).shape:
            m = {"name": n, "base_shape": list(base.info(n).shape), "tuned_shape": list(tuned.info(n).shape)}
            p.shape_mismatch.append(m)
            if _vocab_grown(n, m["base_shape"], m["tuned_shape"]):
                p.resized.append(m)
        elif not _comparable(base.info(n).dtype, tuned.info(n).dtype):
            p.dtype_mismatch.append(
                {"name": n, "base_dtype": _name(base.info(n).dtype), "tuned_dtype": _name(tuned.info(n).dtype)}
            )
        else:
            p.names.append(n)
    p.extra_in_tuned = sorted(tuned_names - set(base_names))
    return p


def _comparable(a: torch.dtype, b: torch.dtype) -> bool:
    """Floats compare across widths (bf16 vs fp32 is a real update); integers and bools only with their own dtype."""
    return (a.is_floating_point and b.is_floating_point) or a == b


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _vocab_grown(name: str, base_shape: list[int], tuned_shape: list[int]) -> bool:
    """A vocabulary tensor to which the tuned side added rows (Tulu-3: 128,256 -> 128,264), columns unchanged."""
    return (
        parse_name(name)[1] in VOCAB_MODULES
        and len(base_shape) == len(tuned_shape) == 2
        and base_shape[1] == tuned_shape[1]
        and tuned_shape[0] > base_shape[0]
    )
