"""Run the step recorder on a small model under FSDP2 (`fully_shard`, gloo, CPU), or in one process unsharded.

    torchrun --nproc-per-node 2 tests/steps_fsdp_worker.py OUT        # each rank records its shard
    python tests/steps_fsdp_worker.py OUT --single                     # the same run, whole, in one process

Both plant the same changes (drawn over the whole tensors from a fixed seed, each rank applying its own rows), so
their files must be equal. The sizes are uneven on purpose: the last rank's shard is shorter.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

STEPS = 5


def build() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 7), torch.nn.Linear(7, 3))


def plant(model: torch.nn.Module, step: int, base: dict[str, torch.Tensor], local, offset) -> None:
    """A fifth of the entries move, a third of those away from the base go back: drawn for the whole tensor."""
    gen = torch.Generator().manual_seed(step)
    with torch.no_grad():
        for n, p in model.named_parameters():
            numel = math.prod(p.shape)
            hit = torch.rand(numel, generator=gen) < 0.2
            back = torch.rand(numel, generator=gen) < 0.33
            flat = local(p).view(-1)
            start = offset(n)
            rows = slice(start, start + flat.numel())
            flat[hit[rows]] *= 1 + 0.03 * step
            b = base[n][rows]
            differ = flat.to(torch.bfloat16) != b.to(torch.bfloat16)
            put = differ & back[rows]
            flat[put] = b[put]


def main(out: Path, single: bool) -> None:
    from rldelta.train.step_recorder import StepRecorder
    from rldelta.train.step_shards import Shards

    model = build()
    base = {n: p.detach().reshape(-1).clone() for n, p in model.named_parameters()}
    if not single:
        import torch.distributed as dist
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        dist.init_process_group("gloo")
        fully_shard(model, mesh=init_device_mesh("cpu", (dist.get_world_size(),)))
    shards = Shards(dict(model.named_parameters()))
    rec = StepRecorder(out, model, save_every=2, patches=True)
    rec.on_train_begin(None, SimpleNamespace(global_step=0, max_steps=STEPS), None)
    for t in range(1, STEPS + 1):
        plant(model, t, base, shards.local, shards.offset)
        rec.on_step_end(None, SimpleNamespace(global_step=t), None)
    rec.close()
    if not single:
        # Both ranks done before either tears its gloo pairs down: a rank that destroys the group while the other
        # still has a collective in flight can abort the other ("terminate called without an active exception").
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), "--single" in sys.argv)
