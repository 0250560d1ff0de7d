"""Scheduling of the study's training runs: in this process, on a local process pool, or as Ray tasks.

Each run is trained by `train_job`, wherever it goes; a run already complete is reused, an interrupted one resumed.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context

import torch

from rldelta.cluster import cluster_cpus, ray_session
from rldelta.study.config import StudyError
from rldelta.study.layout import Run, run_complete
from rldelta.study.log import StudyLog
from rldelta.train.config import TrainConfig
from rldelta.train.runfiles import read_run_json


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


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
    todo = [r for r in runs if not run_complete(r)]
    for r in runs:
        if r not in todo:
            log(f"train {r.label}: complete, reused ({r.dir})")
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
    threads = threads or max(1, (os.cpu_count() or 1) // n)
    log(f"train {len(jobs)} run(s) on a local pool of {n} processes ({threads} thread(s) each)")
    # spawn: forking a process in which torch has started threads can deadlock
    with ProcessPoolExecutor(n, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(train_job, d, threads): r for r, d in jobs}
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
