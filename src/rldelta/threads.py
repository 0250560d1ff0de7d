"""How many threads torch may use: the cores this process may run on, shared out between its workers.

Two things make a diff crawl on a shared machine. More threads than free cores: every parallel op ends at a
barrier that waits for the thread the scheduler parked. And threads that spin while they wait, burning the cores
the other processes need. The first is the thread count chosen here (the affinity mask, not the machine's core
count, and `--threads` to ask for fewer); the second is OpenMP's wait policy, made passive for the whole package
in `rldelta/__init__.py` (it must be set before torch loads its OpenMP runtime).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, which taskset and cgroups narrow), not the machine's."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS has no affinity masks
        return max(1, os.cpu_count() or 1)


def threads_per_worker(workers: int, threads: int | None = None) -> int:
    """`threads` when asked for, else the usable cores shared out between `workers` processes (at least 1)."""
    if threads is not None:
        return threads
    return max(1, usable_cores() // max(1, workers))


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count set to `n` for the block, restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
