"""How many threads torch may use: the cores this process may run on that other work is not keeping busy,
shared out between its workers.

More threads than free cores make a diff crawl on a shared machine: every parallel op ends at a barrier that waits
for the thread the scheduler parked, while OpenMP's waiting threads spin on the cores the other jobs need. On the
SmolLM2-sized pair beside two training-like processes (benchmarks/bench_busy.py, 2 cores): two threads with
spinning waits took over 180 s instead of 8 s; one thread took 10.7 s against 10.1 s quiet. Making the waits
passive instead cost a quiet run 2.4× (19.9 s), so the wait policy is left alone and the thread count is chosen
from a short sample of how busy the usable cores are; `--threads` overrides it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import psutil
import torch

# A core counts as free below this utilisation over the sample.
BUSY = 50.0
SAMPLE_S = 0.2


def _usable_core_ids() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no affinity masks
        return list(range(os.cpu_count() or 1))


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, which taskset and cgroups narrow), not the machine's."""
    return max(1, len(_usable_core_ids()))


def free_cores() -> int:
    """The usable cores that were mostly idle over a 0.2 s sample (at least 1)."""
    cores = _usable_core_ids()
    busy = psutil.cpu_percent(interval=SAMPLE_S, percpu=True)
    return max(1, sum(1 for c in cores if c < len(busy) and busy[c] < BUSY))


def threads_per_worker(workers: int, threads: int | None = None) -> int:
    """`threads` when asked for, else the free usable cores shared out between `workers` processes (at least 1)."""
    if threads is not None:
        return threads
    return max(1, free_cores() // max(1, workers))


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count set to `n` for the block, restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
