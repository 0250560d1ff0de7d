"""`rldelta surgery`: graft part of an RL update onto the base (patch) or cut it out of the tuned model (revert).

    patch:  out = where(mask, TUNED, BASE)   is the masked subnetwork sufficient for what RL taught?
    revert: out = where(mask, BASE, TUNED)   is it necessary?

`control="random"` swaps the mask for a seeded random one with exactly the same number of entries per tensor
(`rldelta.masks.random_mask`), the baseline any effect of the real mask must beat.

The output is an ordinary checkpoint in the BASE's layout and dtypes: OUT/model.safetensors, the base's config,
generation config, tokenizer and chat template, and OUT/surgery.json (what was done, entries taken from each side
per tensor). Keeping the base's dtypes means that when BASE and TUNED share dtypes every output entry is bitwise
one of the two inputs (patch with the full changed mask reproduces TUNED exactly; revert with it, BASE); when TUNED
holds fp32 master weights of a bf16 base, its entries are rounded to the base dtype (round to nearest even, torch's
cast), which is what publishing those weights as a bf16 checkpoint would do.

Tensors the mask does not name count as mask=False everywhere (patch keeps them from BASE, revert from TUNED) and
are listed in surgery.json under `absent_from_mask`. Tied aliases (lm_head tied to the embeddings) are not tensors
of their own: the config copied from BASE ties them again on load.

Streams one tensor at a time into a hidden folder beside OUT, renamed onto OUT only when complete.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch

from rldelta import __version__
from rldelta.checkpoint import SINGLE_FILE, Checkpoint, SafetensorsStreamWriter, open_checkpoint, pair_tensors
from rldelta.masks import Mask, load_mask, random_mask
from rldelta.metrics.overlap import count as count_true
from rldelta.runtime.atomic import atomic_dir_over, atomic_write_bytes, remove_scratch
from rldelta.runtime.errors import RldeltaError
from rldelta.runtime.files import SURGERY_JSON
from rldelta.runtime.lock import locks_output
from rldelta.runtime.progress import progress_bar

KINDS = ("patch", "revert")
CONTROLS = (None, "random")

# The non-weight files a model folder needs to load with transformers and to be scored by `rldelta eval`.
# An allowlist, not "everything but the weights": a base given as a single .safetensors file may sit in any folder.
MODEL_FILES: Sequence[str] = (
    "config.json",
    "generation_config.json",
    "tokenizer*",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.*",
    "merges.txt",
    "chat_template.*",
    "*.tiktoken",
    "spiece.model",
    "sentencepiece*.model",
    "preprocessor_config.json",
    "processor_config.json",
    "configuration_*.py",
    "modeling_*.py",
    "tokenization_*.py",  # trust_remote_code models
)


class SurgeryError(RldeltaError):
    """Inputs that cannot be combined (mismatched tensors or shapes, a bad option); the message names them."""


def patch(
    base: str | os.PathLike,
    tuned: str | os.PathLike,
    mask: str | os.PathLike | Mask,
    out: str | os.PathLike,
    *,
    control: str | None = None,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """BASE with TUNED's values on the masked entries: where(mask, tuned, base), in the base's dtypes.

    MASK is a mask file, a diff directory holding mask.safetensors, or a `Mask`. Returns the record also written
    to OUT/surgery.json.
    """
    return run_surgery("patch", base, tuned, mask, out, control=control, seed=seed, progress=progress)


def revert(
    base: str | os.PathLike,
    tuned: str | os.PathLike,
    mask: str | os.PathLike | Mask,
    out: str | os.PathLike,
    *,
    control: str | None = None,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """TUNED with the masked entries reset to BASE: where(mask, base, tuned), in the base's dtypes."""
    return run_surgery("revert", base, tuned, mask, out, control=control, seed=seed, progress=progress)


@locks_output("surgery")
def run_surgery(
    kind: str,
    base: str | os.PathLike,
    tuned: str | os.PathLike,
    mask: str | os.PathLike | Mask,
    out: str | os.PathLike,
    *,
    control: str | None = None,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """`patch` or `revert` by name (what the study and the CLI dispatch on)."""
    if kind not in KINDS:
        raise SurgeryError(f"surgery kind must be patch or revert, not {kind!r}")
    if control not in CONTROLS:
        raise SurgeryError(f"--control must be random (or left out), not {control!r}")
    base_ck, tuned_ck = open_checkpoint(base), open_checkpoint(tuned)
    names = _paired_names(base_ck, tuned_ck)
    given = mask if isinstance(mask, Mask) else load_mask(mask)
    _check_mask(given, base_ck, names)
    used = random_mask(given, seed) if control == "random" else given

    out = Path(out)
    record: dict = {
        "version": __version__,
        "kind": kind,
        "base": str(base),
        "tuned": str(tuned),
        "mask": given.source,
        "mask_metadata": given.metadata,
        "control": control,
        "seed": seed,
        "dtypes": "base",
        "absent_from_mask": [n for n in names if n not in given],
        "cast_to_base_dtype": [n for n in names if tuned_ck.info(n).dtype != base_ck.info(n).dtype],
        "tied": sorted(base_ck.aliases),
        "tensors": {},
    }
    with _building(out) as tmp:
        layout = [(n, base_ck.info(n).dtype, base_ck.info(n).shape) for n in names]
        writer = SafetensorsStreamWriter(tmp / SINGLE_FILE, layout, metadata={"format": "pt", "rldelta.surgery": kind})
        try:
            with progress_bar(kind, len(names), progress) as advance:
                for n in names:
                    tensor, row = _operate(kind, base_ck, tuned_ck, used, n)
                    writer.write(n, tensor)
                    record["tensors"][n] = row
                    advance(n)
        except BaseException:
            writer.abort()
            raise
        writer.close()
        copied = _copy_model_files(_model_dir(base_ck), tmp)
        rows = record["tensors"].values()
        numel = sum(r["numel"] for r in rows)
        masked = sum(r["masked"] for r in rows)
        record["copied_files"] = copied
        record["totals"] = {
            "tensors": len(names),
            "numel": numel,
            "masked": masked,
            "masked_frac": masked / numel if numel else None,
            "from_tuned": sum(r["from_tuned"] for r in rows),
            "from_base": sum(r["from_base"] for r in rows),
        }
        atomic_write_bytes(tmp / SURGERY_JSON, json.dumps(record, indent=2).encode())
    return {**record, "out": str(out)}


def _operate(kind: str, base: Checkpoint, tuned: Checkpoint, mask: Mask, name: str) -> tuple[torch.Tensor, dict]:
    b = base.get(name)
    t = tuned.get(name).to(b.dtype)  # no-op for equal dtypes; fp32 -> bf16 rounds to nearest even
    info = base.info(name)
    numel = info.numel
    if name in mask:
        m = mask.get(name)
        masked = count_true(m)
        res = torch.where(m, t, b) if kind == "patch" else torch.where(m, b, t)
    else:
        masked = 0
        res = b if kind == "patch" else t
    from_tuned = masked if kind == "patch" else numel - masked
    row = {
        "numel": numel,
        "in_mask": name in mask,
        "masked": masked,
        "from_tuned": from_tuned,
        "from_base": numel - from_tuned,
        "dtype_base": str(b.dtype).removeprefix("torch."),
        "dtype_tuned": str(tuned.info(name).dtype).removeprefix("torch."),
    }
    return res, row


def _paired_names(base: Checkpoint, tuned: Checkpoint) -> list[str]:
    """BASE's tensors, in its on-disk order, once it is certain TUNED holds the same tensors with the same shapes."""
    if set(base.aliases) != set(tuned.aliases):
        only = sorted(set(base.aliases) ^ set(tuned.aliases))[0]
        side = "base" if only in base.aliases else "tuned"
        raise SurgeryError(
            f"tensor {only!r} is tied to the embeddings in {side} ({base.path if side == 'base' else tuned.path}) "
            "but stored on its own in the other: tie_word_embeddings differs, so these are not the same model"
        )
    p = pair_tensors(base, tuned)
    if p.shape_mismatch:
        m = p.shape_mismatch[0]
        raise SurgeryError(
            f"tensor {m['name']!r} has shape {tuple(m['base_shape'])} in {base.path} "
            f"but {tuple(m['tuned_shape'])} in {tuned.path}"
        )
    if p.dtype_mismatch:
        m = p.dtype_mismatch[0]
        raise SurgeryError(
            f"tensor {m['name']!r} is {m['base_dtype']} in {base.path} but {m['tuned_dtype']} in {tuned.path}"
        )
    if p.missing_in_tuned:
        raise SurgeryError(
            f"tensor {p.missing_in_tuned[0]!r} is in {base.path} but not in {tuned.path}"
            + _and_more(p.missing_in_tuned)
        )
    if p.extra_in_tuned:
        raise SurgeryError(
            f"tensor {p.extra_in_tuned[0]!r} is in {tuned.path} but not in {base.path}" + _and_more(p.extra_in_tuned)
        )
    return p.names


def _and_more(names: list[str]) -> str:
    return f" (and {len(names) - 1} more)" if len(names) > 1 else ""


def _check_mask(mask: Mask, base: Checkpoint, names: list[str]) -> None:
    known = set(names)
    for n in mask.names():
        if n not in known:
            if n in base.aliases:
                raise SurgeryError(
                    f"{mask.source}: tensor {n!r} is tied to {base.aliases[n]!r} in {base.path}; "
                    f"the mask must name {base.aliases[n]!r} instead"
                )
            raise SurgeryError(f"{mask.source}: tensor {n!r} is not in the checkpoints ({base.path})")
        if mask.shape(n) != base.info(n).shape:
            raise SurgeryError(
                f"{mask.source}: tensor {n!r} has shape {mask.shape(n)} in the mask "
                f"but {base.info(n).shape} in the checkpoints"
            )


def _model_dir(ck: Checkpoint) -> Path:
    """The folder the weights really live in (a hub cache resolves to its snapshot; a file to its parent)."""
    if ck.infos:
        return next(iter(ck.infos.values())).file.parent
    return ck.path if ck.path.is_dir() else ck.path.parent


def _copy_model_files(src: Path, dest: Path) -> list[str]:
    copied = []
    for f in sorted(src.iterdir()):
        if f.is_file() and any(fnmatch.fnmatch(f.name, pat) for pat in MODEL_FILES):
            shutil.copyfile(f, dest / f.name)  # follows the symlinks of a hub cache snapshot
            copied.append(f.name)
    return copied


def _building(out: Path):
    remove_scratch(out)  # what a killed surgery left (OUT's lock is held, so no other run is building it now)
    return atomic_dir_over(out, SURGERY_JSON, SurgeryError, "a surgery output")


__all__ = ["patch", "revert", "run_surgery", "SurgeryError", "MODEL_FILES"]
