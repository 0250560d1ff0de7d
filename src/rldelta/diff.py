"""The streaming diff: pair the tensors of two checkpoints, compute each pair's numbers, write the results.

Memory stays bounded by a small multiple of the largest tensor: one pair is read at a time per worker, the
changed-mask goes straight to its slot in `mask.safetensors`, and finished rows are appended to a journal
(`OUT/.partial/rows.jsonl`, see diff_journal.py) that `resume=True` continues from. The final files appear only
once complete.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from rldelta.checkpoint import Checkpoint, SafetensorsStreamWriter, open_checkpoint, pair_tensors
from rldelta.checkpoint.dtypes import dtype_label
from rldelta.columns import unit_schema
from rldelta.diff_journal import Journal, input_fingerprint
from rldelta.diff_summary import mismatch_message, summarize
from rldelta.masks import MASK_FORMAT, MASK_VERSION
from rldelta.metrics.fp8 import stored_delta, stored_delta_stats
from rldelta.metrics.rank import rank_stats_batch
from rldelta.metrics.sparsity import COMPARE_CHOICES, COMPARE_DTYPES, cast_changed, compare_dtype
from rldelta.naming import is_stacked, parse_param
from rldelta.runtime.atomic import atomic_write_json, atomic_write_parquet
from rldelta.runtime.cluster import BACKENDS, cluster_cpus, ray_session, require_ray
from rldelta.runtime.errors import RldeltaError
from rldelta.runtime.files import MASK_FILE, SUMMARY_FILE, TENSORS_FILE
from rldelta.runtime.lifetime import die_with_parent
from rldelta.runtime.lock import locks_output
from rldelta.runtime.malloc import keep_freed_memory
from rldelta.runtime.progress import progress_bar
from rldelta.runtime.threads import threads_per_worker, torch_threads

_PARTIAL = ".partial"

TENSORS_SCHEMA = unit_schema(
    [
        ("name", pa.string()),
        ("shape", pa.list_(pa.int64())),
        ("numel", pa.int64()),
        ("dtype_base", pa.string()),
        ("dtype_tuned", pa.string()),
        ("changed", pa.int64()),
        ("changed_frac", pa.float64()),
        ("changed_atol", pa.int64()),
        ("nonfinite", pa.int64()),
        ("added", pa.int64()),
        ("cast_changed", pa.int64()),
        ("rank", pa.int64()),
        ("max_rank", pa.int64()),
        ("rank_frac", pa.float64()),
        ("effective_rank", pa.float64()),
        ("rank_method", pa.string()),
        ("delta_fro", pa.float64()),
        ("base_fro", pa.float64()),
        ("rel_norm", pa.float64()),
        ("row_coverage", pa.float64()),
        ("col_coverage", pa.float64()),
        ("layer", pa.int64()),
        ("module", pa.string()),
        ("expert", pa.int64()),
        ("role", pa.string()),
    ]
)


class DiffError(RldeltaError):
    """Inputs that cannot be diffed as asked (mismatched tensors under --strict, an unknown dtype, ...)."""


def resolve_device(device: str) -> torch.device:
    """ "cpu", "cuda", "cuda:N" or "auto" (the GPU when there is one) as a torch device, or a one-line DiffError."""
    name = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise DiffError(f"--device must be cpu, cuda, cuda:N or auto, not {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DiffError(f"--device {device}: no CUDA GPU is visible to torch here")
    if dev.type not in ("cpu", "cuda"):
        raise DiffError(f"--device must be cpu, cuda, cuda:N or auto, not {device!r}")
    return dev


@dataclass(frozen=True)
class DiffOptions:
    atol: float = 1e-5
    compare_dtype: str = "narrower"  # one of COMPARE_CHOICES (metrics/sparsity.py)
    rank: bool = True
    strict: bool = False
    # Both sides read as this dtype before anything is computed, as `from_pretrained(torch_dtype=...)` loads them
    # (how the published study read its pairs); None: each side as stored.
    load_dtype: str | None = None

    def __post_init__(self) -> None:
        if self.compare_dtype not in COMPARE_CHOICES:
            raise DiffError(f"--compare-dtype must be {', '.join(COMPARE_CHOICES)}; not {self.compare_dtype!r}")
        if self.load_dtype is not None and self.load_dtype not in COMPARE_DTYPES:
            raise DiffError(f"load_dtype must be None or {', '.join(COMPARE_DTYPES)}; not {self.load_dtype!r}")
        if not self.atol >= 0:
            raise DiffError(f"--atol must be >= 0, not {self.atol}")


def _loaded(x: torch.Tensor, opts: DiffOptions) -> torch.Tensor:
    """A stored float tensor as `opts.load_dtype` reads it (FP8 is dequantized later, never cast)."""
    if opts.load_dtype is None or not x.is_floating_point() or x.element_size() == 1:
        return x
    return x.to(COMPARE_DTYPES[opts.load_dtype])


def diff_tensor(
    base: Checkpoint, tuned: Checkpoint, name: str, opts: DiffOptions, want_mask: bool = True
) -> tuple[list[dict], np.ndarray | None]:
    """The tensors.parquet rows of one stored tensor and its changed-mask, bit-packed (1/8 of a bool tensor) for the
    trip home. One row, or one per expert of a stacked experts tensor (naming.is_stacked: each 2-D slice along the
    expert axis gets its own numbers, rank included); the mask is always the stored tensor's whole.

    Without `want_mask` no mask travels: on the 1.5 GiB benchmark pair that is 100 MB through the workers' pipes.
    """
    b, t = base.get(name), tuned.get(name)
    scales = (base.scale(name), tuned.scale(name))
    p = parse_param(name)
    # a grown vocabulary (Pairing.resized): the shared rows are compared, the tuned side's added entries counted
    added = (t.shape[0] - b.shape[0]) * t.shape[1] if t.ndim == 2 and t.shape[0] > b.shape[0] else 0
    common = {"name": name, "dtype_base": dtype_label(b.dtype), "dtype_tuned": dtype_label(t.dtype), "layer": p.layer}
    common |= {"module": p.module, "role": p.role}
    if is_stacked(p, tuple(b.shape)):
        rows, masks = [], []
        for e in range(b.shape[0]):
            stats, mask = _stats(b[e], t[e], tuple(_slice(s, e, b.ndim) for s in scales), base, tuned, opts)
            rows.append({**common, "shape": list(b.shape[1:]), **stats, "added": 0, "expert": e})
            masks.append(mask.reshape(-1))
        mask = torch.cat(masks) if masks else torch.zeros(0, dtype=torch.bool)
    else:
        stats, mask = _stats(b, t, scales, base, tuned, opts)
        rows = [{**common, "shape": list(b.shape), **stats, "added": added, "expert": p.expert}]
    return rows, np.packbits(mask.numpy().reshape(-1)) if want_mask else None


def _slice(scale: torch.Tensor | None, e: int, ndim: int) -> torch.Tensor | None:
    # an FP8 block scale of a stacked tensor is stacked the same way; a scale of another shape applies to every slice
    return scale[e] if scale is not None and scale.ndim == ndim else scale


def _stats(
    b: torch.Tensor, t: torch.Tensor, scales: tuple, base: Checkpoint, tuned: Checkpoint, opts: DiffOptions
) -> tuple[dict, torch.Tensor]:
    """A row's numbers (DeltaStats and `cast_changed`, the latter of the pair as stored) and the changed-mask."""
    cast = cast_changed(b, t)
    b, t = _loaded(b, opts), _loaded(t, opts)
    stats, mask = stored_delta_stats(
        b,
        t,
        scales=scales,
        blocks=(base.block, tuned.block),
        compare_dtype=compare_dtype(opts.compare_dtype, b.dtype, t.dtype),
        atol=opts.atol,
        rank=opts.rank,
    )
    return {**stats.as_row(), "cast_changed": cast}, mask


# One pair of checkpoints per worker process, opened once (by the pool's initializer, or by a Ray worker's first task).
_WORKER: dict = {}


def _worker_init(base_path: str, tuned_path: str, opts: DiffOptions, want_mask: bool, threads: int) -> None:
    # The cores are shared out between the workers: more threads than cores stall at every op's barrier
    # (measured on the 1.4 GiB benchmark pair with the machine oversubscribed: 131 s with 2 threads, 20 s with 1).
    torch.set_num_threads(threads)
    keep_freed_memory()
    _WORKER.update(
        base=open_checkpoint(base_path),
        tuned=open_checkpoint(tuned_path),
        opts=opts,
        want_mask=want_mask,
        setup=(base_path, tuned_path, opts, want_mask, threads),
    )


def _pool_worker_init(*setup) -> None:
    die_with_parent()  # a kill -9 of the diff must not leave its workers computing (and holding OUT's lock)
    _worker_init(*setup)


def _worker_diff(name: str) -> tuple[list[dict], np.ndarray | None]:
    return diff_tensor(_WORKER["base"], _WORKER["tuned"], name, _WORKER["opts"], _WORKER["want_mask"])


def _ray_diff(setup: tuple, name: str) -> tuple[list[dict], np.ndarray | None]:
    if _WORKER.get("setup") != setup:  # a Ray worker process serves many tasks, maybe of another diff before
        _worker_init(*setup)
    return _worker_diff(name)


# Updates of one shape are stacked up to this many bytes of fp32 for one batched rank on the device.
DEVICE_BATCH_BYTES = 2 << 30


def device_results(
    base: Checkpoint,
    tuned: Checkpoint,
    names: Iterable[str],
    opts: DiffOptions,
    want_mask: bool,
    device: torch.device,
) -> Iterator[tuple[list[dict], np.ndarray | None]]:
    """Rows as `diff_tensor` gives them, with the ranks taken on `device`: Δ is formed there and updates of equal
    shape are stacked, so that a GPU gets work large enough to keep it busy. The masks and the sparsity counts
    stay on the CPU (their bitwise pass is bound by memory bandwidth, not arithmetic). Any device works, the CPU
    included, which is how the tests run this path."""
    flat = replace(opts, rank=False)
    held: list[tuple[list[dict], np.ndarray | None]] = []
    stacks: dict[tuple[int, ...], list[tuple[dict, torch.Tensor]]] = {}
    size = 0

    def flush() -> Iterator[tuple[list[dict], np.ndarray | None]]:
        nonlocal size
        for pending in stacks.values():
            ranks = rank_stats_batch(torch.stack([d for _, d in pending]))
            for (row, _), rs in zip(pending, ranks, strict=True):
                row.update(rank=rs.rank, rank_frac=rs.rank_frac, effective_rank=rs.effective_rank)
                row.update(rank_method=rs.method)
        stacks.clear()
        size = 0
        yield from held
        held.clear()

    for name in names:
        rows, packed = diff_tensor(base, tuned, name, flat, want_mask)
        held.append((rows, packed))
        if opts.rank:
            for row, delta in zip(rows, _deltas(base, tuned, name, len(rows), device, opts), strict=True):
                # the rows delta_stats would have ranked: 2-D float updates with a finite Δ
                if row["max_rank"] is not None and row["delta_fro"] is not None and math.isfinite(row["delta_fro"]):
                    stacks.setdefault(tuple(delta.shape), []).append((row, delta))
                    size += delta.numel() * 4
        if size >= DEVICE_BATCH_BYTES:
            yield from flush()
    yield from flush()


def _deltas(
    base: Checkpoint, tuned: Checkpoint, name: str, n_rows: int, device: torch.device, opts: DiffOptions
) -> list[torch.Tensor]:
    """The Δ of each of `diff_tensor`'s rows of `name`, on `device` (each expert's slice of a stacked tensor)."""
    b, t = _loaded(base.get(name), opts), _loaded(tuned.get(name), opts)
    scales, blocks = (base.scale(name), tuned.scale(name)), (base.block, tuned.block)
    if is_stacked(parse_param(name), tuple(b.shape)):
        return [
            stored_delta(b[e], t[e], scales=tuple(_slice(s, e, b.ndim) for s in scales), blocks=blocks, device=device)
            for e in range(n_rows)
        ]
    return [stored_delta(b, t, scales=scales, blocks=blocks, device=device)]


def _prefetch(name: str, *checkpoints: Checkpoint) -> None:
    for ck in checkpoints:
        ck.prefetch(name)


def _read_ahead(names: list[str], base: Checkpoint, tuned: Checkpoint) -> Iterator[str]:
    """`names` in order, the next one's reading started before each is handed out: the disk works while the CPU
    computes, instead of faulting a tensor in a few pages at a time when its turn comes."""
    for i, name in enumerate(names):
        if i + 1 < len(names):
            _prefetch(names[i + 1], base, tuned)
        yield name


def _bounded(names: list[str], submit: Callable, wait_some: Callable, limit: int) -> Iterator:
    """Results of `submit(name)` for every name in completion order, with at most `limit` in flight (which bounds
    memory). `wait_some(running)` returns (results of the finished ones, the ones still running)."""
    todo = iter(names)
    running = []
    for n in todo:
        running.append(submit(n))
        if len(running) >= limit:
            break
    while running:
        done, running = wait_some(running)
        running = list(running)
        for result in done:
            yield result
            nxt = next(todo, None)
            if nxt is not None:
                running.append(submit(nxt))


def _results(
    base: Checkpoint,
    tuned: Checkpoint,
    names: list[str],
    opts: DiffOptions,
    want_mask: bool,
    workers: int,
    backend: str = "local",
    ray_address: str | None = None,
    threads: int | None = None,
    device: torch.device = torch.device("cpu"),
) -> Iterator[tuple[list[dict], np.ndarray | None]]:
    """Each stored tensor's rows in completion order. At most 2 tensors per worker are in flight."""
    paths = (str(Path(base.path).resolve()), str(Path(tuned.path).resolve()))  # workers may start elsewhere
    if backend == "ray":
        with ray_session(ray_address, DiffError) as ray:
            threads = threads or max(1, cluster_cpus(ray) // workers)
            remote = ray.remote(num_cpus=threads)(_ray_diff)
            setup = (*paths, opts, want_mask, threads)

            def ray_wait(running):
                done, rest = ray.wait(running, num_returns=1)
                return ray.get(done), rest

            yield from _bounded(names, lambda n: remote.remote(setup, n), ray_wait, 2 * workers)
        return
    threads = threads_per_worker(workers, threads)
    if device.type != "cpu" or workers <= 1:
        with torch_threads(threads):
            if device.type != "cpu":
                yield from device_results(base, tuned, _read_ahead(names, base, tuned), opts, want_mask, device)
            else:
                for n in _read_ahead(names, base, tuned):
                    yield diff_tensor(base, tuned, n, opts, want_mask)
        return
    # A forked worker starts at once; a spawned one first imports torch (1.5 s each, longer than all of --no-rank's
    # work on a 1.5 GiB pair). Fork is only safe while the workers never enter OpenMP: libgomp hangs in the child
    # of a process that has used it (seen here), and with one thread torch runs every op inline. macOS system
    # libraries are not fork-safe at all (Python spawns there by default).
    ctx = get_context("fork" if threads == 1 and sys.platform.startswith("linux") else "spawn")
    with ProcessPoolExecutor(
        workers,
        mp_context=ctx,
        initializer=_pool_worker_init,
        initargs=(*paths, opts, want_mask, threads),
    ) as pool:

        def pool_wait(running):
            done, rest = wait(running, return_when=FIRST_COMPLETED)
            return [f.result() for f in done], rest

        def submit(n: str):
            _prefetch(n, base, tuned)  # a queued tensor is read while the workers compute
            return pool.submit(_worker_diff, n)

        yield from _bounded(names, submit, pool_wait, 2 * workers)


@locks_output("diff")
def run_diff(
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
) -> dict:
    """Diff two checkpoints tensor by tensor and write OUT/tensors.parquet, OUT/summary.json (and the mask).

    Tensors are computed `workers` at a time: in local processes, or as Ray tasks (`backend="ray"`, on the cluster
    at `ray_address` or a local one), each with `threads` torch threads (default: the usable cores shared out).
    `device="cuda"` (or "auto") takes Δ and the ranks on the GPU, in this process. Returns the summary. `progress=True` shows progress on stderr (a rich bar,
    or plain lines when stderr is not a terminal); a callable receives (done, total, name).

    `compare_dtype`: the dtype of the bitwise comparison, by default the narrower of each pair's two stored dtypes
    (what a publisher's cast produces); `load_dtype` (e.g. "bf16"): read both sides as that dtype first, for every
    number, as the published study loaded its pairs.
    """
    opts = DiffOptions(atol=atol, compare_dtype=compare_dtype, rank=rank, strict=strict, load_dtype=load_dtype)
    dev = _check_options(workers, backend, threads, device)
    base_ck, tuned_ck = open_checkpoint(base), open_checkpoint(tuned)
    pairing = pair_tensors(base_ck, tuned_ck).for_diff()
    if strict and (
        pairing.missing_in_tuned or pairing.extra_in_tuned or pairing.shape_mismatch or pairing.dtype_mismatch
    ):
        raise DiffError(mismatch_message(pairing))

    out = Path(out)
    _check_out(out, base_ck, tuned_ck)
    fresh = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    identity = _identity(base, tuned, opts, save_mask, pairing.names, base_ck, tuned_ck)
    journal = Journal(out / _PARTIAL, identity, resume, columns=TENSORS_SCHEMA.names)
    try:  # a full disk can refuse the mask file at once: the journal must still be closed
        writer = (
            _mask_writer(out, journal, base_ck, pairing.names, str(base), str(tuned), compare_dtype)
            if save_mask
            else None
        )
    except BaseException:
        _close_journal(journal, out, fresh)
        raise
    # The costliest tensors first (a 7B embedding's rank costs as much as two of a layer's matrices), so that no
    # worker is left computing a large one alone at the end; the files keep the checkpoint's order.
    todo = sorted(
        (n for n in pairing.names if n not in journal.rows), key=lambda n: -_work(base_ck.info(n).shape, rank)
    )
    try:
        with progress_bar("diff", len(pairing.names), progress, done=len(pairing.names) - len(todo)) as advance:
            results = _results(base_ck, tuned_ck, todo, opts, save_mask, workers, backend, ray_address, threads, dev)
            for rows, packed in results:
                _record(rows, packed, base_ck, writer, journal)
                advance(rows[0]["name"])
    except BaseException:
        if writer is not None:
            writer.abort()
        _close_journal(journal, out, fresh)
        raise
    finally:
        journal.close()

    rows = [r for n in pairing.names for r in journal.rows[n]]
    summary = summarize(rows, pairing, asdict(opts), base=str(base), tuned=str(tuned), save_mask=save_mask)
    _publish(out, rows, summary, writer)
    shutil.rmtree(out / _PARTIAL, ignore_errors=True)
    return summary


def _identity(base, tuned, opts: DiffOptions, save_mask: bool, names: list[str], base_ck, tuned_ck) -> dict:
    """What the journal's rows were computed from: a resumed run must match it."""
    return {
        "base": str(base),
        "tuned": str(tuned),
        "options": asdict(opts),
        "save_mask": save_mask,
        "names": names,
        "inputs": {"base": input_fingerprint(base_ck), "tuned": input_fingerprint(tuned_ck)},
    }


def _check_options(workers: int, backend: str, threads: int | None, device: str) -> torch.device:
    """The run options that cannot work together, each a one-line DiffError; returns the device Δ is taken on."""
    if workers < 1:
        raise DiffError(f"--workers must be >= 1, not {workers}")
    if backend not in BACKENDS:
        raise DiffError(f"--backend must be local or ray, not {backend!r}")
    if backend == "ray":
        require_ray(DiffError)
    if threads is not None and threads < 1:
        raise DiffError(f"--threads must be >= 1, not {threads}")
    dev = resolve_device(device)
    if dev.type != "cpu" and (workers > 1 or backend == "ray"):
        raise DiffError(f"--device {device} runs in one process: leave --workers at 1 and --backend local")
    return dev


def _mask_writer(
    out: Path, journal: Journal, base_ck: Checkpoint, names: list[str], base: str, tuned: str, compare_dtype: str
) -> SafetensorsStreamWriter:
    """OUT/mask.safetensors, written slot by slot as tensors finish; its .partial lives beside the journal's rows,
    and on resume it already holds their slots."""
    slots = [(n, torch.bool, base_ck.info(n).shape) for n in names]
    meta = {
        "format": MASK_FORMAT,
        "version": MASK_VERSION,
        "base": base,
        "tuned": tuned,
        "compare_dtype": compare_dtype,
    }
    writer = SafetensorsStreamWriter(
        out / MASK_FILE, slots, metadata=meta, resume=bool(journal.rows), partial=journal.dir / MASK_FILE
    )
    if not writer.resumed:
        journal.forget()  # rows without their mask slots on disk must be computed again
    return writer


def _record(
    rows: list[dict], packed, base_ck: Checkpoint, writer: SafetensorsStreamWriter | None, journal: Journal
) -> None:
    """One finished tensor: its mask slot on disk first, then its rows in the journal."""
    name = rows[0]["name"]
    if writer is not None:
        shape = base_ck.info(name).shape
        bits = np.unpackbits(packed, count=math.prod(shape))  # uint8 0/1: the safetensors BOOL layout
        writer.write(name, torch.from_numpy(bits).view(torch.bool).reshape(shape))
        writer.flush()  # the mask slot is on disk before the journal says the tensor is done
    journal.add(rows)


def _publish(out: Path, rows: list[dict], summary: dict, writer: SafetensorsStreamWriter | None) -> None:
    """tensors.parquet, summary.json and the mask: all of them or none (a full disk at the end leaves the journal to
    resume from)."""
    try:
        atomic_write_parquet(rows, out / TENSORS_FILE, TENSORS_SCHEMA)
        atomic_write_json(out / SUMMARY_FILE, summary)
        if writer is not None:
            writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        for f in (TENSORS_FILE, SUMMARY_FILE) + ((MASK_FILE,) if writer is not None else ()):
            (out / f).unlink(missing_ok=True)
        raise


def _close_journal(journal: Journal, out: Path, fresh: bool) -> None:
    """Close the journal of a run that failed; one that finished no tensor is no journal to resume from, so it goes,
    and so does OUT where this run created it."""
    journal.close()
    if journal.rows:
        return
    shutil.rmtree(journal.dir, ignore_errors=True)
    if fresh:
        with contextlib.suppress(OSError):  # not empty: something else is in it now
            out.rmdir()


def _work(shape: tuple[int, ...], rank: bool) -> int:
    """A tensor's cost in multiply-adds, near enough to order the work: the rank's Gram (k²·L) and eigenvalues (k³)
    of each 2-D slice, else one pass over the entries."""
    if not rank or len(shape) < 2:
        return math.prod(shape)
    *lead, m, n = shape
    k = min(m, n)
    return math.prod(lead) * (m * n * k + k**3)


def _check_out(out: Path, *inputs: Checkpoint) -> None:
    """OUT must be a folder of its own: not a file, not inside a checkpoint folder being read (a mask written into a
    model's folder makes it unreadable as a checkpoint), not another model's folder."""
    if out.exists() and not out.is_dir():
        raise DiffError(f"{out}: exists and is not a directory; choose an output folder")
    where = out.resolve()
    # a lone .safetensors file has no folder of its own to protect
    folders = {i.file.parent.resolve() for ck in inputs if not Path(ck.path).is_file() for i in ck.infos.values()}
    for folder in sorted(folders):
        if where == folder or folder in where.parents:
            raise DiffError(
                f"{out}: is inside the input checkpoint folder {folder}; choose an output folder outside it"
            )
    if out.is_dir() and any(f.name != MASK_FILE for f in out.glob("*.safetensors")):
        raise DiffError(f"{out}: holds model weights (*.safetensors), not a diff; choose another output folder")
