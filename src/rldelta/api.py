"""The entry points `import rldelta` declares: thin, typed calls onto the engines.

Each takes the engine's options by name and returns a typed result (`rldelta.results`) where one exists; the
engines themselves (`rldelta.diff.run_diff`, ...) keep returning the records they write as JSON, which the study
reads.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rldelta.results import DiffResult


def diff(
    base: str | os.PathLike,
    tuned: str | os.PathLike,
    out: str | os.PathLike,
    *,
    atol: float = 1e-5,
    compare_dtype: str = "narrower",
    load_dtype: str | None = None,
    rank: bool = True,
    save_mask: bool = False,
    workers: int = 1,
    backend: str = "local",
    ray_address: str | None = None,
    resume: bool = False,
    strict: bool = False,
    threads: int | None = None,
    device: str = "cpu",
    progress: bool | Callable[[int, int, str], None] = False,
) -> DiffResult:
    """Diff two checkpoints tensor by tensor; write `OUT/tensors.parquet`, `OUT/summary.json` (and the mask).

    Args:
        base: the base checkpoint: a folder, a `.safetensors` or pickled file, a sharded folder, a hub cache
            folder or a hub id `org/name[@rev]` (read with [`open_checkpoint`][rldelta.checkpoint.open_checkpoint]).
        tuned: the fine-tuned checkpoint, in any of the same forms.
        out: the output folder.
        atol: the tolerance of `changed_atol`: |tuned − base| > atol, in fp32.
        compare_dtype: the dtype of the bitwise comparison: `narrower` (of each pair's two stored dtypes, what a
            publisher's cast produces), `base`, `bf16`, `fp16` or `fp32`.
        load_dtype: read both sides as this dtype first (e.g. `bf16`), as the published study loaded its pairs.
        rank: compute the rank columns (numerical and effective rank of Δ).
        save_mask: also write `OUT/mask.safetensors`, True where an entry changed.
        workers: tensors computed in parallel (processes, or Ray tasks).
        backend: `local` (processes) or `ray`.
        ray_address: the address of an existing Ray cluster (`backend="ray"`).
        resume: continue an interrupted run in `out`.
        strict: missing or reshaped tensors are an error instead of being listed and skipped.
        threads: torch threads per worker (default: the usable cores shared out between workers).
        device: where Δ and the ranks are computed: `cpu`, `cuda[:N]` or `auto`.
        progress: show progress on stderr, or a callable receiving (done, total, tensor name).

    Returns:
        The [`DiffResult`][rldelta.results.DiffResult]: totals, per-module figures and the paths of the files written.

    Raises:
        RldeltaError: an input that cannot be read or combined; the message names the file, tensor or option.

    Example:
        ```python
        import rldelta
        result = rldelta.diff("models/base", "runs/s0/checkpoints/step-40", "diffs/s0", save_mask=True)
        result.totals["changed_frac"]
        ```
    """
    from rldelta.diff import run_diff

    record = run_diff(
        base,
        tuned,
        out,
        atol=atol,
        compare_dtype=compare_dtype,
        load_dtype=load_dtype,
        rank=rank,
        save_mask=save_mask,
        workers=workers,
        backend=backend,
        ray_address=ray_address,
        resume=resume,
        strict=strict,
        threads=threads,
        device=device,
        progress=progress,
    )
    return DiffResult.from_record(record, out)


@dataclass(frozen=True)
class PlantedPair:
    """A base and a tuned checkpoint with a known update (see [`planted_pair`][rldelta.api.planted_pair]).

    Attributes:
        base: the base checkpoint's folder.
        tuned: the tuned checkpoint's folder.
        planted: per tensor name, the number of entries the update changed.
    """

    base: Path
    tuned: Path
    planted: dict[str, int]


def planted_pair(root: str | os.PathLike, seed: int = 0) -> PlantedPair:
    """Write the built-in planted pair under `root` (`root/base`, `root/tuned`): a Llama-shaped bf16 model of 857k
    parameters where 20% of every q/v projection moved by one bf16 unit in the last place, and
    `layers.0.mlp.down_proj` received a rank-2 update. A diff must find exactly `sum(planted.values())` entries.
    """
    from rldelta.demo import build_demo_pair

    base, tuned, planted = build_demo_pair(Path(root), seed=seed)
    return PlantedPair(base, tuned, planted)


def overlap(inputs, out, *, progress: bool = False, plot: bool = True) -> dict:
    """Overlap of every ordered pair of masks (files or diff folders); writes `OUT/overlap.{parquet,json,png}`."""
    from rldelta.overlap import run_overlap

    return run_overlap(inputs, out, progress=progress, plot=plot)


def explain(
    diff_dir: str | os.PathLike,
    base: str | os.PathLike,
    out: str | os.PathLike,
    *,
    tuned_master: str | os.PathLike | None = None,
    other: str | os.PathLike | None = None,
    rank_null: bool = True,
    rank_samples: int = 3,
    seed: int = 0,
    bins_per_octave_bits: int = 2,
    atol: float | None = None,
    progress: bool = False,
    plot: bool = True,
) -> dict:
    """The three null models (rounding, magnitude-matched seed overlap, random sparse rank) on a diff's mask;
    writes `OUT/explain.{json,parquet}` and its plots, and returns `explain.json`'s content."""
    from rldelta.explain import run_explain

    return run_explain(
        diff_dir,
        base,
        out,
        tuned_master=tuned_master,
        other=other,
        rank_null=rank_null,
        rank_samples=rank_samples,
        seed=seed,
        bins_per_octave_bits=bins_per_octave_bits,
        atol=atol,
        progress=progress,
        plot=plot,
    )


def surgery(
    kind: str,
    base: str | os.PathLike,
    tuned: str | os.PathLike,
    mask,
    out: str | os.PathLike,
    *,
    control: str | None = None,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """`patch` (BASE plus TUNED's update on the masked entries) or `revert` (TUNED with the masked entries reset
    to BASE); writes a model folder to OUT and returns the record of `OUT/surgery.json`."""
    from rldelta.surgery import run_surgery

    return run_surgery(kind, base, tuned, mask, out, control=control, seed=seed, progress=progress)
