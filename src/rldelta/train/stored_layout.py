"""The tensors a model stores, each as a part of one of its parameters: the map between a checkpoint's tensor names
(what `diff`, masks and step sets are keyed by) and the parameters training holds in memory.

For most models the two are the same. transformers 5 holds some layouts differently in memory than on disk: a
mixture-of-experts model keeps its experts fused (`mlp.experts.gate_up_proj`, shape (E, 2I, H)) and
`save_pretrained` writes them one tensor per expert and projection (`mlp.experts.N.gate_proj.weight`), Mixtral's
router is `mlp.gate` in memory and `block_sparse_moe.gate` on disk. The map is not written by hand: every
parameter is filled with its own flat positions and put through `revert_weight_conversion`, the very function
`save_pretrained` uses. What comes out under each stored name is then exactly which entries of which parameter that
stored tensor holds, for any conversion transformers registers (renames, splits, chunks, transposes).

Memory: nothing for a model stored as it is held; for one with conversions, one int32/int64 index per entry of the
converted parameters (the MoE experts), kept for as long as the map is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rldelta.runtime.errors import RldeltaError


@dataclass(frozen=True)
class StoredTensor:
    """One tensor as `save_pretrained` writes it: `param` (a name of `model.named_parameters()`), and `index`, the
    flat positions in that parameter of its entries, in its own shape; None: the whole parameter, as it is."""

    name: str
    param: str
    shape: tuple[int, ...]
    index: torch.Tensor | None = None

    def take(self, flat: torch.Tensor) -> torch.Tensor:
        """This tensor's entries out of its parameter's values, flattened (`p.reshape(-1)` or a copy of it)."""
        return flat.reshape(self.shape) if self.index is None else flat[self.index]

    def put(self, flat: torch.Tensor, values: torch.Tensor) -> None:
        """Write `values` (this tensor's shape) into its entries of `flat` (the parameter, flattened, in place)."""
        if self.index is None:
            flat.copy_(values.reshape(-1))
        else:
            flat[self.index.reshape(-1)] = values.reshape(-1).to(flat.dtype)


def _revert(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    from transformers.core_model_loading import revert_weight_conversion

    if not hasattr(model, "config"):  # not a transformers model: stored as held
        return state
    return revert_weight_conversion(model, dict(state))


def stored_tensors(model: torch.nn.Module) -> dict[str, StoredTensor]:
    """Every parameter tensor `model.save_pretrained` would write, by stored name, grouped by parameter (in
    `named_parameters` order). Tied parameters appear once, under their first name, as save_pretrained stores them."""
    params = dict(model.named_parameters())
    meta = {n: torch.empty(p.shape, device="meta") for n, p in params.items()}
    shapes = {n: tuple(t.shape) for n, t in _revert(model, meta).items()}
    if shapes == {n: tuple(p.shape) for n, p in params.items()}:
        return {n: StoredTensor(n, n, tuple(p.shape)) for n, p in params.items()}
    # Global positions: each stored tensor's values say which parameter, and which of its entries, it came from.
    offsets, total = {}, 0
    for n, p in params.items():
        offsets[n], total = total, total + p.numel()
    dtype = torch.int32 if total < 2**31 else torch.int64
    positions = {
        n: torch.arange(offsets[n], offsets[n] + p.numel(), dtype=dtype).reshape(p.shape) for n, p in params.items()
    }
    starts = sorted((o, n) for n, o in offsets.items())
    found: dict[str, list[StoredTensor]] = {n: [] for n in params}
    for name, pos in _revert(model, positions).items():
        lo = int(pos.min()) if pos.numel() else 0
        param = next(n for o, n in reversed(starts) if o <= lo)
        local = pos - offsets[param]
        whole = local.numel() == params[param].numel() and bool(
            torch.equal(local.reshape(-1), torch.arange(local.numel(), dtype=dtype))
        )
        if not whole and (local.numel() and int(local.max()) >= params[param].numel()):
            raise RldeltaError(f"stored tensor {name!r} spans more than one parameter")  # no transformers layout does
        found[param].append(StoredTensor(name, param, tuple(pos.shape), None if whole else local.contiguous()))
    return {st.name: st for group in found.values() for st in group}


def is_identity(stored: dict[str, StoredTensor]) -> bool:
    """True when every parameter is stored whole under its own name (the model is stored as it is held)."""
    return all(st.index is None and st.name == st.param for st in stored.values())


@torch.no_grad()
def load_stored(model: torch.nn.Module, tensors: dict[str, torch.Tensor], stored: dict[str, StoredTensor]) -> None:
    """Copy checkpoint tensors (stored names) into `model`'s parameters; names the map does not hold are ignored."""
    params = dict(model.named_parameters())
    for name, values in tensors.items():
        st = stored.get(name)
        if st is not None:
            flat = params[st.param].data.view(-1)
            st.put(flat, values.to(flat.device))
