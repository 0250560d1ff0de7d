"""The entry points `import rldelta` declares: thin, typed calls onto the engines.

Each takes the engine's options by name and returns a typed result (`rldelta.results`) where one exists; the
engines themselves (`rldelta.diff.run_diff`, ...) keep returning the records they write as JSON, which the study
reads.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rldelta.masks import Mask
from rldelta.results import DiffResult, ExplainResult, OverlapResult, StudyResult, SurgeryResult

if TYPE_CHECKING:
    from rldelta.study.config import StudyConfig


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
    from transformers.utils import logging as hf_logging

    from rldelta.selfcheck import build_planted_pair

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # transformers' "Writing model shards" bar, twice, for a 2 MB pair
    try:
        base, tuned, planted = build_planted_pair(Path(root), seed=seed)
    finally:
        if shown:
            hf_logging.enable_progress_bar()
    return PlantedPair(base, tuned, planted)


def overlap(
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    progress: bool = False,
    plot: bool = True,
) -> OverlapResult:
    """Overlap of every ordered pair of change sets; writes `OUT/overlap.{parquet,json,png}`.

    Args:
        inputs: two or more masks: mask files, or diff folders holding one (`diff(..., save_mask=True)`).
        out: the output folder.
        progress: show progress on stderr.
        plot: also draw the heat map `OUT/overlap.png`.

    Returns:
        The [`OverlapResult`][rldelta.results.OverlapResult]: the overlap, Jaccard index and random expectation
        of every ordered pair.

    Example:
        ```python
        result = rldelta.overlap(["diffs/s0", "diffs/s1"], "overlap")
        result.overlap("diffs/s0", "diffs/s1")
        ```
    """
    from rldelta.overlap import run_overlap

    return OverlapResult.from_record(run_overlap(inputs, out, progress=progress, plot=plot), out)


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
) -> ExplainResult:
    """The three null models (rounding, magnitude-matched seed overlap, random sparse rank) on a diff's mask;
    writes `OUT/explain.{json,parquet}` and its plots.

    Args:
        diff_dir: a diff folder holding its mask (`diff(..., save_mask=True)`).
        base: the base checkpoint the diff was made from.
        out: the output folder.
        tuned_master: the run's fp32 master weights: adds their changed fraction and the share lost to rounding.
        other: a second run's diff folder: adds the magnitude-matched seed overlap.
        rank_null: compute the random-sparse rank null.
        rank_samples: random matrices per tensor for the rank null.
        seed: the seed of the random draws.
        bins_per_octave_bits: the |w| histogram's resolution for fp16/fp32 weights (2^bits bins per octave).
        atol: the tolerance of the fp32 changed fraction (default: the diff's).
        progress: show progress on stderr.
        plot: also draw the plots.

    Returns:
        The [`ExplainResult`][rldelta.results.ExplainResult].
    """
    from rldelta.explain import run_explain

    record = run_explain(
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
    return ExplainResult.from_record(record, out)


def surgery(
    kind: str,
    base: str | os.PathLike,
    tuned: str | os.PathLike,
    mask: str | os.PathLike | Mask,
    out: str | os.PathLike,
    *,
    control: str | None = None,
    seed: int = 0,
    progress: bool = False,
) -> SurgeryResult:
    """`patch` (BASE plus TUNED's update on the masked entries: is the subnetwork sufficient?) or `revert` (TUNED
    with the masked entries reset to BASE: is it necessary?); writes a model folder to OUT.

    Args:
        kind: `patch` or `revert`.
        base: the base checkpoint.
        tuned: the tuned checkpoint.
        mask: a mask file, a diff folder holding one, or a [`Mask`][rldelta.masks.Mask].
        out: the model folder to write (weights in the base's dtypes, config and tokenizer copied).
        control: `random`: use a seeded random mask with the same count per tensor instead (the control).
        seed: the seed of `control="random"`.
        progress: show progress on stderr.

    Returns:
        The [`SurgeryResult`][rldelta.results.SurgeryResult].
    """
    from rldelta.surgery import run_surgery

    record = run_surgery(kind, base, tuned, mask, out, control=control, seed=seed, progress=progress)
    return SurgeryResult.from_record(record, out)


def study(
    config: StudyConfig | str | os.PathLike,
    out: str | os.PathLike,
    *,
    backend: str = "local",
    workers: int | None = None,
    ray_address: str | None = None,
    progress: bool = True,
) -> StudyResult:
    """Run (or finish) a study in OUT: train the grid, measure it, and write `OUT/report.html` and `OUT/tables/`.

    Runs keyed by their config are never redone, so the same call finishes an interrupted study.

    Args:
        config: a `StudyConfig` or a TOML file (the presets: `rldelta.study.preset_path("tiny")`).
        out: the study folder.
        backend: where training runs go: `local` (a process pool, or this process with one worker) or `ray`.
        workers: training runs at a time (default: from the free cores).
        ray_address: the address of an existing Ray cluster (`backend="ray"`).
        progress: a line per finished unit (a bar on a terminal).

    Returns:
        The [`StudyResult`][rldelta.results.StudyResult]: the verdicts, the headline numbers, the report's path.
    """
    from rldelta.study.run import run_study

    record = run_study(config, out, backend=backend, workers=workers, ray_address=ray_address, progress=progress)
    return StudyResult.from_record(record)
