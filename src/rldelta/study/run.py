"""`run_study`: the study's plan, stage by stage (each stage reuses what an earlier run of the study completed)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from rldelta import __version__

# run_study ends by writing the report: the study floor's one call upward (report/ presents the study's tables).
from rldelta.report.html import write_report
from rldelta.runtime.cluster import BACKENDS, require_ray
from rldelta.runtime.files import MASK_FILE, REPORT_FILE
from rldelta.runtime.lock import locks_output
from rldelta.runtime.threads import usable_cores
from rldelta.study.claims import QUESTION
from rldelta.study.config import StudyConfig, StudyError, load_config
from rldelta.study.experts import expert_tables
from rldelta.study.folders import diff_dir, make_run, other_seed, write_json
from rldelta.study.law import law_report_tables
from rldelta.study.log import StudyLog
from rldelta.study.probe_tables import probe_tables
from rldelta.study.probes import run_probes
from rldelta.study.runs import default_workers, train_all, training_beside
from rldelta.study.stages import (
    cause_rows,
    cause_runs,
    compare_retrain,
    diffs_of_run,
    dynamics,
    evaluate_model,
    explain_run,
    overlap_of_runs,
    prepare_base,
    surgery_evals,
)
from rldelta.study.steps import step_tables
from rldelta.study.tables import build_tables, export_tables
from rldelta.study.why import why_table


@locks_output("study")
def run_study(
    config: StudyConfig | str | os.PathLike,
    out: str | os.PathLike,
    *,
    backend: str = "local",
    workers: int | None = None,
    ray_address: str | None = None,
    progress: bool = True,
) -> dict:
    """Run (or finish) the study in OUT and write OUT/report.html; returns the headline numbers and paths.

    `config` is a StudyConfig or a TOML file. Training runs go to a local process pool (`workers` processes,
    in this process when 1) or to Ray (`backend="ray"`, on the cluster at `ray_address` or a local one).
    """
    cfg = config if isinstance(config, StudyConfig) else load_config(config)
    if backend not in BACKENDS:
        raise StudyError(f"--backend must be local or ray, not {backend!r}")
    if backend == "ray":
        require_ray(StudyError)
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise StudyError(f"--workers must be >= 1, not {workers}")
    study = Path(out).resolve()
    study.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    if cfg.threads:
        # On tiny shapes intra-op threads only add barrier waits (25x slower with 2 threads on a busy 2-core box).
        torch.set_num_threads(cfg.threads)
    try:
        return _run(cfg, study, backend=backend, workers=workers, ray_address=ray_address, progress=progress)
    finally:
        torch.set_num_threads(threads)


def _run(cfg: StudyConfig, study: Path, *, backend: str, workers: int, ray_address: str | None, progress: bool) -> dict:
    log = StudyLog(progress)
    t_start = time.perf_counter()
    write_json(study / "study.json", {"version": __version__, "source": cfg.source, "config": cfg.to_dict()})

    # 0. the base model, and the grid: algorithms x precisions x seeds
    base = prepare_base(cfg, study)
    log(f"base model: {base}")
    runs = [make_run(study, cfg, base, a, s, p) for a in cfg.algorithms for p in cfg.precisions for s in cfg.seeds]
    primary = runs[0]
    # The first run again, learning only from positive / only from negative advantages (the logprobs probe).
    split = (
        [
            make_run(study, cfg, base, primary.algo, primary.seed, primary.precision, kind=k)
            for k in ("positive", "negative")
        ]
        if "logprobs" in cfg.probes and cfg.advantage_runs
        else []
    )

    # The cause analysis's arms (SFT in- vs out-of-distribution, RL with vs without KL), trained with the grid.
    cause = cause_runs(study, cfg, base, primary) if cfg.cause else {}
    cause_extra = [r for r, _ in cause.values() if r not in runs]

    # 1. train the grid
    train_all(
        runs + split + cause_extra,
        backend=backend,
        workers=workers,
        ray_address=ray_address,
        log=log,
        progress=progress,
        threads=cfg.threads,
    )
    # 2. diff every saved checkpoint, the first run's first: the subnetwork retrain needs only its final mask.
    # While nothing else runs, a diff gets every core (tiny models, cfg.threads set: one process is fastest).
    free = 1 if cfg.threads else usable_cores()
    log("diff every saved checkpoint against the base")
    diffs_of_run(primary, base, study, cfg, progress, workers=free)
    # 3. the subnetwork retrain trains in a worker beside the stages up to the probes
    retrain = None
    if cfg.retrain:
        mask = diff_dir(study, primary) / MASK_FILE
        retrain = make_run(study, cfg, base, primary.algo, primary.seed, primary.precision, mask=mask, kind="retrain")
    with training_beside(
        [retrain] if retrain else [], backend=backend, workers=workers, log=log, progress=progress, threads=cfg.threads
    ) as retraining:
        for r in runs[1:] + cause_extra:
            diffs_of_run(r, base, study, cfg, progress)
        # 4. accuracy of the base and of every final checkpoint
        log("evaluate base and final checkpoints")
        evals = {"base": evaluate_model(base, "base", study, cfg)}
        for r in runs:
            evals[r.label] = evaluate_model(r.ckpt(r.final_step), r.dir.name, study, cfg)
        # 5. overlap of all final changed-masks, explain per run
        overlap = overlap_of_runs(runs, study, log, progress)
        explains = {}
        for r in runs:
            log(f"explain {r.label}")
            explains[r.label] = explain_run(r, runs, base, study, cfg, progress)
        # 6. surgery with the first seed's subnetwork on the other seeds of its algorithm and precision. The mask is tested on another seed's update (its own update is the mask's by construction); with one seed,
        # on its own.
        same = [r for r in runs if r.algo == primary.algo and r.precision == primary.precision]
        targets = [r for r in same if r is not primary] or [primary]
        surgery = surgery_evals(primary, targets, base, study, cfg, log)
        retraining.now()  # with no worker to train it beside these stages, the retrain is trained here, now
        # 7. mechanism probes
        probes = run_probes(cfg, study, base, primary, split, log, progress)
    # 8. the retrained subnetwork: its diffs, accuracy, and how its update compares with the full run's
    compare = None
    if retrain is not None:
        diffs_of_run(retrain, base, study, cfg, progress, workers=free)
        evals[retrain.label] = evaluate_model(retrain.ckpt(retrain.final_step), retrain.dir.name, study, cfg)
        compare = compare_retrain(primary, retrain, base, study)
    # 9. dynamics
    dyn = [row for r in runs for row in dynamics(r, study, other_seed(r, runs))]
    dyn += dynamics(retrain, study) if retrain is not None else []

    # 10. tables and report
    tables = build_tables(
        cfg, study, base, runs, retrain, evals, overlap, explains, surgery, compare, dyn, cause_rows(study, cause)
    )
    tables.update(probe_tables(probes, dyn))
    tables.update(step_tables(runs + ([retrain] if retrain is not None else [])))
    tables.update(expert_tables(study, runs, overlap))
    tables.update(law_report_tables(runs, base))
    tables["headline"], tables["why"] = why_table(tables)
    export_tables(tables, study / "tables")
    report = write_report(tables, study / REPORT_FILE, QUESTION)
    log(f"done in {time.perf_counter() - t_start:.0f} s; report: {report}")
    head = {r["key"]: r["value"] for r in tables["headline"].to_dict("records")}
    return {
        "study": str(study),
        "report": str(report),
        "tables": str(study / "tables"),
        "headline": head,
        "claims": tables["claims"].to_dict("records"),
    }
