"""Exact subnetwork-only training: only the entries a mask selects may change, everything else stays bit-for-bit.

Two mechanisms, because neither alone is enough:

1. A gradient hook on every parameter zeroes the gradient outside the mask. This keeps the masked-out entries out
   of everything computed from gradients (the global grad-norm clip, Adam's moments), so the subnetwork trains as if
   the other entries were constants.
2. After every optimizer step the masked-out entries are copied back from a saved copy of the base weights
   (`torch.where(mask, param, base)`). A zero gradient does not mean zero update: AdamW's decoupled weight decay
   shrinks every entry, and optimizer state restored from elsewhere could move them. Restoring makes "unchanged"
   a guarantee instead of a hope, in fp32 and in bf16 alike (it is a copy, not arithmetic).

Tied embeddings: a tied model has one parameter under two names (`model.embed_tokens.weight` and
`lm_head.weight`). The mask of either name applies to the shared parameter; naming both with different masks is
an error. Parameters the mask file does not name are frozen entirely (a mask over a few modules is a valid mask).
"""

from __future__ import annotations

import os

import torch
from transformers import TrainerCallback

from rldelta.masks import Mask, MaskError, load_mask
from rldelta.metrics.sparsity import as_bits
from rldelta.train.stored_layout import stored_tensors


def bind_masks(model: torch.nn.Module, mask: Mask) -> dict[str, torch.Tensor]:  # noqa: C901
    """One bool mask per (deduplicated) parameter name of `model`; parameters the mask does not name get all-False.

    The mask names tensors as a checkpoint stores them (a diff's masks are keyed so): a model that holds some
    parameters in another layout (fused MoE experts) gets each stored tensor's mask put into its part of the
    parameter (stored_layout.py). Parameter names are accepted too. Names and shapes are checked against the model
    before any tensor is read.
    """
    params = dict(model.named_parameters())  # tied parameters appear once, under their first name
    by_id = {id(p): name for name, p in params.items()}
    canonical = {name: by_id[id(p)] for name, p in model.named_parameters(remove_duplicate=False)}
    stored = stored_tensors(model)
    for name in mask.names():
        if name in stored:
            want = stored[name].shape
        elif name in canonical:
            want = tuple(params[canonical[name]].shape)
        else:
            raise MaskError(f"{mask.source}: tensor {name!r} is not a parameter of the model")
        if mask.shape(name) != want:
            raise MaskError(
                f"{mask.source}: tensor {name!r} has shape {mask.shape(name)}, the model's parameter has {want}"
            )
    bound: dict[str, torch.Tensor] = {}
    given_as: dict[str, str] = {}
    parts: dict[str, torch.Tensor] = {}
    for name in mask.names():
        st = stored.get(name)
        if st is not None and st.index is not None:  # one stored tensor's part of a parameter
            flat = parts.setdefault(st.param, torch.zeros(params[st.param].numel(), dtype=torch.bool))
            st.put(flat, mask.get(name).cpu())
            continue
        target, m = (st.param if st is not None else canonical[name]), mask.get(name).cpu()
        if target in bound and not torch.equal(bound[target], m):
            raise MaskError(
                f"{mask.source}: tensors {given_as[target]!r} and {name!r} are tied in the model but their masks differ"
            )
        bound[target], given_as[target] = m, name
    for target, flat in parts.items():
        if target in bound:
            raise MaskError(f"{mask.source}: parameter {target!r} is named both whole and in stored parts")
        bound[target] = flat.reshape(params[target].shape)
    for name, p in params.items():
        bound.setdefault(name, torch.zeros(p.shape, dtype=torch.bool))
    return bound


class MaskedUpdate:
    """Gradient hooks plus post-step restoration that confine training to the masked entries of `model`."""

    def __init__(self, model: torch.nn.Module, masks: dict[str, torch.Tensor]):
        params = dict(model.named_parameters())
        self._entries: list[tuple[str, torch.nn.Parameter, torch.Tensor, torch.Tensor]] = []
        self._handles: list = []
        self.n_total = sum(int(m.numel()) for m in masks.values())
        self.n_trainable = sum(int(m.sum()) for m in masks.values())
        for name, mask in masks.items():
            p = params[name]
            if bool(mask.all()):
                continue  # nothing to hold fixed
            self._entries.append((name, p, mask, p.detach().clone()))

    @classmethod
    def from_file(cls, model: torch.nn.Module, path: str | os.PathLike) -> MaskedUpdate:
        """From a mask file (or a diff directory holding mask.safetensors) in `rldelta.masks` format."""
        return cls(model, bind_masks(model, load_mask(path)))

    def attach(self) -> MaskedUpdate:
        for _, p, mask, _ in self._entries:
            self._handles.append(p.register_hook(_zero_outside(mask)))
        return self

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    @torch.no_grad()
    def restore(self) -> None:
        """Copy the base values back into every entry outside the mask."""
        for i, (name, p, mask, base) in enumerate(self._entries):
            if mask.device != p.device:  # the trainer may move the model after the copy was taken
                mask, base = mask.to(p.device), base.to(p.device)
                self._entries[i] = (name, p, mask, base)
            p.copy_(torch.where(mask, p, base))

    @torch.no_grad()
    def violations(self) -> dict[str, int]:
        """Entries outside the mask that differ bitwise from the base, per parameter (empty when exact)."""
        out = {}
        for name, p, mask, base in self._entries:
            # Compare bit patterns: -0.0 == 0.0 and NaN != NaN would hide or invent changes.
            moved = as_bits(p.detach()) != as_bits(base.to(p.device))
            bad = int(torch.count_nonzero(~mask.to(p.device) & moved))
            if bad:
                out[name] = bad
        return out

    @property
    def density(self) -> float:
        """Fraction of the model's parameter entries that may change."""
        return self.n_trainable / self.n_total if self.n_total else 0.0


def _zero_outside(mask: torch.Tensor):
    holder = {"mask": mask}

    def hook(grad: torch.Tensor) -> torch.Tensor:
        m = holder["mask"]
        if m.device != grad.device:
            m = holder["mask"] = m.to(grad.device)
        return grad.masked_fill(~m, 0)

    return hook


class MaskedUpdateCallback(TrainerCallback):
    """Restores the masked-out entries after every optimizer step (and once before training, after a resume)."""

    def __init__(self, masked: MaskedUpdate):
        self.masked = masked

    def on_train_begin(self, args, state, control, **kwargs):
        self.masked.restore()

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.masked.restore()
