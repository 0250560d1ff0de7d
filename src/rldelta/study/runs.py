"""Scheduling of the study's training runs: in this process, on a local process pool, or as Ray tasks.

Each run is trained by `train_job`, wherever it goes; a run already complete is reused, an interrupted one resumed.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from multiprocessing import get_context

import torch

from rldelta.runtime.cluster import cluster_cpus, ray_session
from rldelta.runtime.lifetime import die_with_parent
from rldelta.runtime.threads import usable_cores
from rldelta.study.config import StudyError
from rldelta.study.folders import Run, run_complete
from rldelta.study.log import StudyLog
from rldelta.train.config import TrainConfig
from rldelta.train.runfiles import read_run_json


def default_workers() -> int:
    return max(1, min(4, usable_cores()))


def _worker_progress(progress: bool) -> bool:
    # Worker processes share the parent's stderr: two rich bars would overwrite each other on a terminal, while
    # plain lines (stderr not a terminal: CI, a cluster log) interleave legibly, so workers report only in a log.
    return progress and not sys.stderr.isatty()


def prepare_for_training(run: Run) -> dict:
    """The TrainConfig dict to run: a fresh start, or a resume of an interrupted run of the same config."""
    d = run.config.to_dict()
    record = None
    try:
        record = read_run_json(run.dir)
    except (OSError, json.JSONDecodeError):
        pass
    if record is not None:
        d["resume"] = True
    elif run.dir.exists():
        shutil.rmtree(run.dir)  # killed before its run.json existed: nothing worth keeping
    return d


def train_job(config: dict, threads: int | None = None) -> str:
    """Train one run (in this process, a pool worker, or a Ray task) and return its directory."""
    # Lazy: the trainers import transformers and TRL (seconds), which only a process that trains needs.
    from rldelta.train.trainers import train

    if threads:
        torch.set_num_threads(threads)
    tc = TrainConfig.from_dict(config)
    return str(train(tc))


def _to_train(runs: list[Run], log: StudyLog) -> list[Run]:
    """The runs of `runs` not complete yet; the complete ones are logged as reused."""
    todo = [r for r in runs if not run_complete(r)]
    for r in runs:
        if r not in todo:
            log(f"train {r.label}: complete, reused ({r.dir})")
    return todo


def train_all(
    runs: list[Run],
    *,
    backend: str,
    workers: int,
    ray_address: str | None,
    log: StudyLog,
    progress: bool,
    threads: int = 0,
) -> None:
    """Train every run of `runs` that is not complete yet: one by one here, on a pool of `workers`, or on Ray."""
    todo = _to_train(runs, log)
    if not todo:
        return
    jobs = [(r, prepare_for_training(r)) for r in todo]
    if backend == "ray":
        _train_ray(jobs, workers, ray_address, log, threads)
        return
    if workers <= 1 or len(jobs) == 1:
        for r, d in jobs:
            log(f"train {r.label} ({r.config.steps} steps){' — resuming' if d.get('resume') else ''}")
            d["progress"] = progress
            t0 = time.perf_counter()
            train_job(d)
            log(f"train {r.label}: done in {time.perf_counter() - t0:.0f} s")
        return
    n = min(workers, len(jobs))
    threads = threads or max(1, usable_cores() // n)
    log(f"train {len(jobs)} run(s) on a local pool of {n} processes ({threads} thread(s) each)")
    # spawn: forking a process in which torch has started threads can deadlock
    # die_with_parent: a kill -9 of the study must not leave runs training that the next study would collide with
    with ProcessPoolExecutor(n, mp_context=get_context("spawn"), initializer=die_with_parent) as pool:
        futures = {pool.submit(train_job, {**d, "progress": _worker_progress(progress)}, threads): r for r, d in jobs}
        try:
            for fut in as_completed(futures):
                fut.result()
                log(f"train {futures[fut].label}: done")
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def _train_ray(jobs: list[tuple[Run, dict]], workers: int, address: str | None, log: StudyLog, threads: int) -> None:
    with ray_session(address, StudyError) as ray:
        n = max(1, min(workers, len(jobs)))
        threads = threads or max(1, cluster_cpus(ray) // n)
        log(
            f"train {len(jobs)} run(s) on Ray ({'cluster ' + address if address else 'local cluster'}, "
            f"{threads} CPU(s) per run)"
        )
        remote = ray.remote(num_cpus=threads, max_retries=0)(train_job)
        refs = {remote.remote(d, threads): r for r, d in jobs}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            ray.get(done[0])
            log(f"train {refs[done[0]].label}: done")


class _Here:
    """What `training_beside` yields: `now()` trains the runs at that point of the plan when no worker took them."""

    def __init__(self, train: Callable[[], None] | None):
        self._train = train

    def now(self) -> None:
        if self._train is not None:
            train, self._train = self._train, None
            train()


@contextmanager
def training_beside(
    runs: list[Run], *, backend: str, workers: int, log: StudyLog, progress: bool, threads: int = 0
) -> Iterator[_Here]:
    """Train `runs` in a worker process while the body of the `with` runs here, so that no core idles.

    The cores are shared out for the duration (the worker gets half, this process the rest) and given back after:
    more threads than cores spin against each other at every op's barrier. Where there is no second core, no local
    pool (`backend="ray"`, `workers=1`) or nothing left to train, the runs are trained here instead, where the body
    calls `now()` on what this yields (or at its end). Trained weights do not depend on the thread count (checked bit
    for bit on SmolLM2), so neither do the results.
    """
    cores = usable_cores()
    if all(run_complete(r) for r in runs) or backend != "local" or workers < 2 or cores < 2:
        here = _Here(lambda: train_all(runs, backend="local", workers=1, ray_address=None, log=log, progress=progress))
        yield here
        here.now()
        return
    todo = _to_train(runs, log)
    beside = threads or max(1, cores // 2)
    mine = threads or max(1, cores - beside)
    labels = ", ".join(r.label for r in todo)
    log(f"train {labels} in a worker process ({beside} thread(s)) beside the next stages ({mine} thread(s))")
    previous = torch.get_num_threads()
    # multiprocessing's Pool rather than concurrent.futures: terminate() stops a run still training when the
    # stages here fail or are interrupted, instead of waiting minutes for it.
    pool = get_context("spawn").Pool(1, initializer=die_with_parent)
    t0 = time.perf_counter()
    try:
        pending = [
            (
                r,
                pool.apply_async(
                    train_job, ({**prepare_for_training(r), "progress": _worker_progress(progress)}, beside)
                ),
            )
            for r in todo
        ]
        torch.set_num_threads(mine)
        yield _Here(None)
        for r, result in pending:
            if not result.ready():
                log(f"train {r.label}: waiting for it")
            result.get()
            log(f"train {r.label}: done in {time.perf_counter() - t0:.0f} s (beside the other stages)")
        pool.close()
    finally:
        torch.set_num_threads(previous)
        pool.terminate()
        pool.join()
