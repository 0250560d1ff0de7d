"""StepRecorder: a TrainerCallback that records, after every optimizer step, which entries of the run's bf16 copy
changed, exactly: against the previous step and against the base.

It works with any transformers/TRL trainer. Per step it appends rows (one per module kind and a `total` row) to
RUN/steps.parquet as row groups of an open Parquet writer (the file is never rewritten; it is complete once the run
ends or fails), and at the end writes RUN/steps/summary.json (the share of the final set reached at every step, the
step from which it holds 90%) and RUN/steps/first_changed.safetensors (per entry, the step at which it first
differed from the base: the union of the change sets at any step t is 0 < first_changed <= t).
With `save_every=K` (and at every checkpoint the Trainer saves), RUN/steps/step-N.mask.safetensors holds the set
that differs from the base at step N, the same mask `rldelta diff BASE step-N --save-mask` writes.

The bf16 copy is what a run publishes or syncs to its inference engine: fp32 master weights rounded to bf16
(round to nearest even, as `model.to(torch.bfloat16)`), or the bf16 weights themselves. The comparisons run where
the weights are (train.step_state): per parameter one bf16 snapshot (2 bytes) and three bits (the previous step's
set, the since-base set, the union), on the parameters' device; the since-base set is kept incrementally, so the
base (RUN/steps/base.safetensors, written at the start) is read only at the entries that changed this step and
differed from the base before (`base="file"`, the default; "host" and "device" keep a copy there instead). Only
counts, and the indices of the entries new to the union (appended to RUN/steps/union.log: step, tensor, indices,
from which the first-change file is built at the end) or of a step's patch, go to the host. With `patches=True`
each step's change is written as a sparse patch (train.step_patches).

Everything is keyed by the tensors as the checkpoint stores them, so the sets equal `rldelta diff`'s: a model that
holds some parameters in another layout (transformers' fused MoE experts) is followed through the map of
stored_layout.py, each stored tensor taken out of its parameter's bf16 copy. Under FSDP2 each rank records its
own shard and rank 0 writes the same files one process would (train.step_shards).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import TrainerCallback

from rldelta.checkpoint import SafetensorsStreamWriter
from rldelta.masks import Mask, save_mask
from rldelta.metrics.steps import StepCounts, share_reached
from rldelta.naming import parse_name
from rldelta.runtime.atomic import atomic_write_json
from rldelta.runtime.errors import RldeltaError
from rldelta.runtime.files import FIRST_CHANGED_FILE, STEPS_BASE_FILE, STEPS_DIR, STEPS_FILE, STEPS_SUMMARY_FILE
from rldelta.runtime.threads import torch_threads
from rldelta.train.step_files import (
    RECORD,
    STEPS_SCHEMA,
    UNION_LOG,
    first_changed,
    mask_file,
    step_row,
)
from rldelta.train.step_patches import FINGERPRINT_KEY, fingerprint, patch_file, write_patch
from rldelta.train.step_shards import Shards
from rldelta.train.step_state import BASE_PLACEMENTS, FileBase, TensorBase, TensorState, ones, pack, unpack
from rldelta.train.stored_layout import StoredTensor, stored_tensors

SATURATION_SHARE = 0.9  # the set "saturates" at the first step holding this share of the final set
TOTAL = "total"


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The int16 bit patterns of a bf16 tensor, flat, where it is."""
    return t.detach().reshape(-1).view(torch.int16)


class StepRecorder(TrainerCallback):
    """Record every optimizer step's change set of the bf16 copy of `model` (see the module docstring).

    `run_dir`: where steps.parquet and steps/ go. `save_every`: also save the since-base mask every K steps.
    Put it after any callback that edits the weights after the optimizer step (rldelta's mask restore), so it sees
    the weights the step really left.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        model: torch.nn.Module | None = None,
        *,
        save_every: int = 0,
        patches: bool = False,
        base: str = "file",
    ):
        if base not in BASE_PLACEMENTS:
            raise ValueError(f"base={base!r}: one of {', '.join(BASE_PLACEMENTS)}")
        self.run_dir = Path(run_dir)
        self.dir = self.run_dir / STEPS_DIR
        self.model = model
        self.save_every = save_every
        self.patches = patches
        self.base_fingerprint = ""
        self.base_placement = base
        self._base: FileBase | TensorBase | None = None
        self._writer: pq.ParquetWriter | None = None
        self._params: dict[str, torch.nn.Parameter] = {}
        self._stored: dict[str, StoredTensor] = {}  # by stored name, grouped by parameter
        self._state: dict[str, TensorState] = {}
        self._shards: Shards | None = None
        self._offsets: dict[str, int] = {}  # flat position of this rank's first entry (0 unless sharded)
        self._log = None
        self._running = False
        self._modules: dict[str, str] = {}
        self._steps: list[int] = []
        self.last_step = 0

    # ---- set-up --------------------------------------------------------------------------------------------

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        model = self.model or model
        if model is None:
            raise ValueError("StepRecorder needs the model: pass it to StepRecorder(...) or use a Trainer")
        self._params = {n: p for n, p in model.named_parameters()}
        self._shards = shards = Shards(self._params)
        self._stored = stored_tensors(model)
        if shards.sharded and any(st.index is not None for st in self._stored.values()):
            raise RldeltaError("the step recorder follows sharded models stored as held only (not fused MoE layouts)")
        if shards.sharded and state.global_step > 0:
            raise RldeltaError("the step recorder cannot resume a sharded run's record; train it from the start")
        self._offsets = {n: shards.offset(st.param) for n, st in self._stored.items()}
        self.dir.mkdir(parents=True, exist_ok=True)
        for n, cur in self._bf16():
            self._state[n] = TensorState.fresh(_bits(cur))
            self._modules[n] = parse_name(n)[1]
        base = self.dir / STEPS_BASE_FILE
        fresh_run = state.global_step == 0 or not base.is_file()
        if fresh_run:
            # a fresh run: the snapshot just taken is the base (a resumed run keeps the base it started from)
            self._write_base(base)
        else:
            with safe_open(base, "pt") as f:
                self.base_fingerprint = (f.metadata() or {}).get(FINGERPRINT_KEY) or fingerprint(
                    (n, f.get_tensor(n)) for n in f.keys()
                )
        self._base = self._place_base(base, fresh_run)
        log_end = self._restore(state.global_step)
        self._log = open(self._log_file(shards.rank), "r+b" if log_end else "wb")
        self._log.truncate(log_end)  # the steps after the resumed checkpoint are redone: their records go
        self._log.seek(log_end)
        if shards.rank == 0:
            self._open(state.global_step)
        self.last_step = state.global_step
        self._running = True

    def _write_base(self, path: Path) -> None:
        shards = self._shards
        if shards.sharded:  # gathered one tensor at a time, on every rank (a collective), written by rank 0
            bf16 = {n: shards.full_bf16(self._params[st.param]).cpu() for n, st in self._stored.items()}
        else:
            bf16 = {n: s.prev.view(torch.bfloat16).reshape(self._stored[n].shape) for n, s in self._state.items()}
        if shards.rank == 0:
            self.base_fingerprint = fingerprint(bf16.items())
            meta = {FINGERPRINT_KEY: self.base_fingerprint}
            save_file({n: t.cpu().contiguous() for n, t in bf16.items()}, path, metadata=meta)
        self.base_fingerprint = shards.broadcast(self.base_fingerprint)
        shards.barrier()  # the file is there before any rank maps it

    def _log_file(self, rank: int) -> Path:
        return self.dir / (UNION_LOG if rank == 0 else f"union.rank-{rank}.log")

    def _place_base(self, path: Path, fresh_run: bool) -> FileBase | TensorBase:
        if self.base_placement == "file":
            return FileBase(path, self._offsets)
        on_host = self.base_placement == "host"
        if fresh_run:
            return TensorBase({n: s.prev.clone() for n, s in self._state.items()}, on_host)
        files = FileBase(path, self._offsets)
        return TensorBase({n: files.whole(n).to(s.prev.device) for n, s in self._state.items()}, on_host)

    def _restore(self, step: int) -> int:
        """After a resume: the union and the previous step's set as saved with the resumed checkpoint; returns the
        length of the union log at that checkpoint (0 for a fresh run)."""
        f = self.dir / f"state-{step}.safetensors"
        if step == 0 or not f.is_file():
            return 0  # no record of the steps before: the rows from here on still hold; the union starts here
        with safe_open(f, "pt") as st:
            for n, state in self._state.items():
                state.union = st.get_tensor(f"union/{n}").to(state.prev.device)
                state.prev_set = st.get_tensor(f"prev_set/{n}").to(state.prev.device)
                # the since-base set is not saved: it is where the weights differ from the base now (one full read)
                state.since = pack(state.prev != self._base.whole(n).to(state.prev.device))
                state.changed_base, state.union_count = ones(state.since), ones(state.union)
            return int(st.metadata()["union_log_bytes"])

    def _open(self, step: int) -> None:
        path = self.run_dir / STEPS_FILE
        kept = None
        if step > 0 and path.is_file():
            try:
                kept = pq.read_table(path, schema=STEPS_SCHEMA).filter(pc.field("step") <= step)
            except (pa.ArrowInvalid, OSError):
                kept = None  # a run killed mid-write leaves no footer: its rows are lost, the new ones are kept
        self._writer = pq.ParquetWriter(path, STEPS_SCHEMA)
        if kept is not None and kept.num_rows:
            self._writer.write_table(kept)
            self._steps = sorted(set(kept.column("step").to_pylist()))

    def _bf16(self):
        """(stored name, its bf16 values now) for every stored tensor; one parameter's bf16 copy alive at a time."""
        param, flat = None, None
        for n, st in self._stored.items():
            if st.param != param:
                param = st.param
                flat = self._shards.local(self._params[param]).detach().to(torch.bfloat16).reshape(-1)
            yield n, flat if self._shards.sharded else st.take(flat)

    # ---- every step ------------------------------------------------------------------------------------------

    def on_step_end(self, args, state, control, **kwargs):
        self.record(state.global_step, _learning_rate(kwargs.get("lr_scheduler")))
        if self.save_every and state.global_step % self.save_every == 0:
            self.save_mask(state.global_step)
        return control

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.last_step:
            self.save_mask(state.global_step)
            self._save_state(state.global_step)
        return control

    def record(self, step: int, learning_rate: float | None = None) -> dict[str, StepCounts]:
        """Compare the current weights with the previous step's and the base; append this step's rows."""
        # One thread: its work is many small memory-bound ops, and on a busy CPU an op split over threads waits for
        # the slowest to be scheduled (measured under load: 100x slower on the sparse ops with two threads).
        with torch_threads(1):
            return self._record(step, learning_rate)

    def _record(self, step: int, learning_rate: float | None) -> dict[str, StepCounts]:
        per_module: dict[str, StepCounts] = {}
        total = StepCounts()
        changes, found = {}, []
        for i, (n, cur) in enumerate(self._bf16()):
            state = self._state[n]
            idx, fresh, counts = state.advance(_bits(cur), lambda at, n=n: self._base.at(n, at))
            if fresh.numel():
                self._append_log(step, i, fresh.cpu().numpy() + self._offsets[n])
            if self.patches and idx.numel():
                changes[n] = (idx.cpu().numpy() + self._offsets[n], _bits(cur)[idx].cpu().numpy())
            found.append(torch.tensor([idx.numel(), state.changed_base, fresh.numel(), state.union_count]))
            found.append(counts.cpu())
        # the counts' one trip to the host (and, sharded, their one sum over the ranks)
        sums = self._shards.sum(torch.cat(found).reshape(-1, 6)).tolist() if found else []
        if self.patches:
            self._write_patch(step, changes)
        if self._shards.rank:
            self.last_step = step
            return {}
        for n, (changed, since, new, union, prev, in_union) in zip(self._state, sums):
            c = StepCounts(math.prod(self._stored[n].shape), changed, since, prev, in_union, new, union)
            per_module.setdefault(self._modules[n], StepCounts()).__iadd__(c)
            total += c
        per_module[TOTAL] = total
        rows = [step_row(step, m, c, learning_rate) for m, c in sorted(per_module.items())]
        assert self._writer is not None, "record() before on_train_begin()"
        self._writer.write_table(pa.Table.from_pylist(rows, schema=STEPS_SCHEMA))
        self._steps.append(step)
        self.last_step = step
        return per_module

    def _write_patch(self, step: int, changes: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        parts = self._shards.gather(changes)
        if parts is None:
            return
        merged = {}  # the ranks hold increasing runs of each tensor: their indices, in rank order, stay ascending
        for n in self._stored:
            got = [p[n] for p in parts if n in p]
            if got:
                idx, bits = (np.concatenate(x) for x in zip(*got))
                merged[n] = (torch.from_numpy(idx), torch.from_numpy(bits).view(torch.bfloat16))
        shapes = {n: st.shape for n, st in self._stored.items()}
        write_patch(patch_file(self.dir, step), step, self.base_fingerprint, merged, shapes)

    # ---- masks and state -------------------------------------------------------------------------------------

    def since_base(self) -> dict[str, torch.Tensor]:
        """The set that differs from the base now, per tensor (bool, the tensor's shape, on the host); sharded:
        gathered on rank 0 one tensor at a time (every rank calls it), empty elsewhere."""
        out = {}
        for n, s in self._state.items():
            parts = self._shards.gather(unpack(s.since, s.prev.numel()).cpu().numpy())
            if parts is not None:
                out[n] = torch.from_numpy(np.concatenate(parts)).reshape(self._stored[n].shape)
        return out

    def save_mask(self, step: int) -> Path:
        path = mask_file(self.run_dir, step)
        sets = self.since_base()
        if self._shards.rank == 0:
            save_mask(Mask.from_tensors(sets, source=str(path)), path, metadata={"step": str(step), "source": "steps"})
        return path

    def _append_log(self, step: int, tensor: int, indices: np.ndarray) -> None:
        self._log.write(RECORD.pack(step, tensor, indices.size))
        self._log.write(indices.astype("<i8").tobytes())

    def memory_bytes(self) -> int:
        """What the recorder holds: the bf16 snapshot and three bits per entry, and the base where it is kept."""
        index = sum(st.index.numel() * st.index.element_size() for st in self._stored.values() if st.index is not None)
        base = self._base.nbytes() if isinstance(self._base, TensorBase) else 0
        return index + base + sum(s.nbytes() for s in self._state.values())

    def _save_state(self, step: int) -> None:
        # only the newest state is kept: it is what a resume from the newest checkpoint needs (not sharded runs')
        if self._shards.sharded:
            return
        for old in self.dir.glob("state-*.safetensors"):
            old.unlink()
        self._log.flush()
        tensors = {f"union/{n}": s.union.cpu() for n, s in self._state.items()}
        tensors.update({f"prev_set/{n}": s.prev_set.cpu() for n, s in self._state.items()})
        save_file(tensors, self.dir / f"state-{step}.safetensors", metadata={"union_log_bytes": str(self._log.tell())})

    # ---- the end -------------------------------------------------------------------------------------------

    def on_train_end(self, args, state, control, **kwargs):
        self.close()
        return control

    def close(self) -> None:
        """Finish steps.parquet and write the summary and the first-change file (idempotent; train() calls it on
        failure too)."""
        if not self._running:
            return
        self._running = False
        self._log.close()
        final = self.since_base()
        self._shards.barrier()  # every rank's union log is complete
        if self._shards.rank:
            return
        self._writer.close()
        self._writer = None
        first: dict[int, list] = {}
        for r in range(self._shards.world):
            for i, found in first_changed(self._log_file(r)).items():
                first.setdefault(i, []).extend(found)
        step_dtype = torch.int16 if max(self._steps, default=0) <= torch.iinfo(torch.int16).max else torch.int32
        writer = SafetensorsStreamWriter(
            self.dir / FIRST_CHANGED_FILE, [(n, step_dtype, st.shape) for n, st in self._stored.items()]
        )
        in_final = []
        for i, n in enumerate(self._state):
            steps_of = np.zeros(math.prod(self._stored[n].shape), dtype=np.int32)  # one tensor at a time
            for step, idx in first.get(i, []):
                steps_of[idx] = step
            writer.write(n, torch.from_numpy(steps_of).to(step_dtype).reshape(self._stored[n].shape))
            in_final.append(steps_of[final[n].reshape(-1).numpy()])
        writer.close()
        in_final = np.concatenate(in_final) if in_final else np.zeros(0, dtype=np.int32)
        steps = sorted(set(self._steps))
        shares = share_reached(in_final[in_final > 0], steps)
        saturated = next((t for t, s in zip(steps, shares) if s >= SATURATION_SHARE), None)
        atomic_write_json(
            self.dir / STEPS_SUMMARY_FILE,
            {
                "steps": steps,
                "share_of_final_set": shares,
                "final_set": int(in_final.size),
                "saturation_share": SATURATION_SHARE,
                "saturation_step": saturated,
                "memory_bytes": self.memory_bytes(),
            },
        )


def _learning_rate(scheduler) -> float | None:
    if scheduler is None:
        return None
    try:
        return float(scheduler.get_last_lr()[0])
    except (AttributeError, IndexError):
        return None
