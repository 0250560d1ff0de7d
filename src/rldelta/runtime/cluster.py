"""Ray: the one way rldelta spreads work beyond this machine's process pool (a study's training runs, a diff's
tensors). Workers read and write paths, so on a multi-node cluster the checkpoints and outputs must be on a
filesystem every node sees."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from types import ModuleType

from rldelta.runtime.lifetime import descendants_die_with_me

BACKENDS = ("local", "ray")


def require_ray(error: type[Exception]) -> ModuleType:
    """The `ray` module, or `error` with the install command: callers check before they write anything."""
    try:
        import ray
    except ImportError:
        raise error("--backend ray needs the `ray` package: pip install 'rldelta[ray]'") from None
    return ray


@contextlib.contextmanager
def ray_session(address: str | None, error: type[Exception]) -> Iterator[ModuleType]:
    """The `ray` module, connected for the block: to the cluster at `address`, or to a local one started here (and
    stopped after). A Ray that is already initialised is used as it is and left running.

    Without the `ray` package, `error` is raised with the install command.
    """
    ray = require_ray(error)
    if ray.is_initialized():
        yield ray
        return
    # A local Ray's processes die with this one (lifetime.py): its agents would outlive a kill -9 by a minute.
    with contextlib.ExitStack() as stack:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            stack.enter_context(descendants_die_with_me())
            ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False)
        stack.callback(ray.shutdown)
        yield ray


def cluster_cpus(ray: ModuleType) -> int:
    return int(ray.cluster_resources().get("CPU", 1))
