"""`rldelta study`: the whole question in one command — train a grid of RL runs, measure, test the explanations.

    STUDY/study.json                       the resolved config
    STUDY/models/<name>/                   the base model (built or prepared once)
    STUDY/runs/<label>-<hash>/             one `rldelta train` run per grid cell; the hash is of its full TrainConfig
    STUDY/diffs/<run>/step-N[-fp32]/       `rldelta diff --save-mask` of every saved checkpoint against the base
    STUDY/evals/<model>-<hash>.json        greedy accuracy (`rldelta eval`) of base, finals, surgeries, retrain
    STUDY/overlap/                         `rldelta overlap` of all final changed-masks
    STUDY/explain/<run>/                   `rldelta explain` (null models), with the fp32 master and the other seed
    STUDY/surgery/<name>/                  `rldelta surgery` outputs (model folder removed once evaluated)
    STUDY/compare/retrain.json             subnetwork-only retraining vs the full run (overlap, cosine of the Δs)
    STUDY/tables/*.{parquet,csv}           every number the report shows
    STUDY/report.html                      the report (report/html.py)

Every stage writes its files atomically and is skipped when they exist, so a re-run, or a study that was killed,
redoes nothing already complete. A training run counts as complete when its run.json says `completed` and the
checkpoint of its last step exists; an interrupted one is resumed from its last Trainer checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd

from rldelta import __version__
from rldelta.atomic import atomic_dir, atomic_write_bytes, atomic_write_json, atomic_write_parquet, json_safe
from rldelta.cluster import BACKENDS, cluster_cpus, ray_session, require_ray
from rldelta.errors import RldeltaError
from rldelta.metrics.delta import cosine_parts
from rldelta.train.config import ALGOS, GRPO_FAMILY, PRECISIONS, ConfigError, TrainConfig
from rldelta.train.runfiles import METRICS, read_run_json, step_dir
from rldelta.train.tasks import get_task

PRESETS_DIR = Path(__file__).parent / "presets"
PRESETS = ("tiny", "demo", "full")
BUILTIN_MODELS = ("tiny", "smollm2-135m")
PROBES = ("logprobs", "activations", "formats")
REPORT = "report.html"

# TrainConfig fields the study sets itself; the [train] table may set every other one.
_STUDY_OWNED = {
    "model",
    "output",
    "task",
    "algo",
    "seed",
    "precision",
    "steps",
    "save_steps",
    "mask",
    "difficulty",
    "advantages",
    "resume",
    "progress",
}


class StudyError(RldeltaError):
    """A study that cannot run as configured; the message names the file and key."""


# ---- the study's own task ------------------------------------------------------------------------------------


# ---- configuration -------------------------------------------------------------------------------------------


@dataclass
class StudyConfig:
    model: str = "tiny"  # "tiny", "smollm2-135m" or a prepared model folder
    model_seed: int = 0  # seed of the tiny model's random initialisation
    task: str = "arith"
    difficulty: int | None = None
    algorithms: list[str] = field(default_factory=lambda: ["grpo"])
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    precisions: list[str] = field(default_factory=lambda: ["fp32"])
    steps: int = 20
    save_steps: str = "every:10"
    eval_n: int = 100
    eval_max_new_tokens: int = 32
    eval_batch_size: int = 16
    eval_seed: int = 0
    atol: float = 1e-5
    rank_samples: int = 1
    controls: int = 1  # random-mask control seeds per surgery
    retrain: bool = True
    keep_surgery_models: bool = False
    # Mechanism probes (rldelta probe ...), run on the first run of the grid.
    probes: list[str] = field(default_factory=lambda: list(PROBES))
    advantage_runs: bool = True  # train the first run again with --advantages positive and negative (logprobs probe)
    probe_prompts: int = 16  # held-out prompts of the log-prob probe set ...
    probe_samples: int = 8  # ... and base-model completions sampled for each
    probe_eval_prompts: int = 32  # test prompts for accuracy and pass@k of the advantage-split runs
    activation_prompts: int = 32  # test prompts per difficulty level of the activation probe
    formats: dict[str, Any] = field(default_factory=dict)  # [formats]: the pretrain-mixture models and their RL runs
    threads: int = 0  # torch threads for the work done in this process (0 = torch's default)
    train: dict[str, Any] = field(default_factory=dict)  # any other TrainConfig setting (lr, prompts_per_step, ...)
    source: str = "<config>"  # where the config came from (file or preset), for messages

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        src = self.source
        bad_algos = [a for a in self.algorithms if a not in ALGOS]
        if bad_algos:
            raise StudyError(f"{src}: algorithms: unknown algorithm {bad_algos[0]!r}; choose from {', '.join(ALGOS)}")
        bad_prec = [p for p in self.precisions if p not in PRECISIONS]
        if bad_prec:
            raise StudyError(f"{src}: precisions: {bad_prec[0]!r} is not one of {', '.join(PRECISIONS)}")
        for key in ("algorithms", "seeds", "precisions"):
            values = getattr(self, key)
            if not values:
                raise StudyError(f"{src}: {key} must list at least one value")
            if len(set(values)) != len(values):
                raise StudyError(f"{src}: {key} lists a value twice: {values}")
        if not all(isinstance(s, int) and not isinstance(s, bool) for s in self.seeds):
            raise StudyError(f"{src}: seeds must be integers, got {self.seeds}")
        for key in ("eval_n", "eval_max_new_tokens", "eval_batch_size", "rank_samples", "steps"):
            if getattr(self, key) < 1:
                raise StudyError(f"{src}: {key} must be >= 1, got {getattr(self, key)}")
        if self.threads < 0:
            raise StudyError(f"{src}: threads must be >= 0, got {self.threads}")
        if self.controls < 0:
            raise StudyError(f"{src}: controls must be >= 0, got {self.controls}")
        bad_probes = [p for p in self.probes if p not in PROBES]
        if bad_probes:
            raise StudyError(f"{src}: probes: unknown probe {bad_probes[0]!r}; choose from {', '.join(PROBES)}")
        for key in ("probe_prompts", "probe_samples", "probe_eval_prompts", "activation_prompts"):
            if getattr(self, key) < 1:
                raise StudyError(f"{src}: {key} must be >= 1, got {getattr(self, key)}")
        if "formats" in self.probes:
            _formats_settings(self)
        if "logprobs" in self.probes and self.advantage_runs and self.algorithms[0] not in GRPO_FAMILY:
            raise StudyError(
                f"{src}: advantage_runs needs a GRPO-family first algorithm ({', '.join(GRPO_FAMILY)}), "
                f"not {self.algorithms[0]}; set advantage_runs = false"
            )
        known_train = {f.name for f in fields(TrainConfig)} - _STUDY_OWNED
        for key in self.train:
            if key in _STUDY_OWNED:
                raise StudyError(
                    f"{src}: train.{key} is set by the study itself (use the top-level key)"
                    if key in {"task", "steps", "save_steps", "difficulty"}
                    else f"{src}: train.{key} is set by the study itself and cannot be given"
                )
            if key not in known_train:
                raise StudyError(f"{src}: unknown key train.{key}; known: {', '.join(sorted(known_train))}")
        try:
            get_task(self.task)
        except ValueError as e:
            raise StudyError(f"{src}: task: {e}") from None
        # Every run's TrainConfig must be valid before anything trains (a bad lr fails here, not after an hour).
        for algo in self.algorithms:
            for precision in self.precisions:
                try:
                    self.train_config(Path("."), algo, self.seeds[0], precision)
                except ConfigError as e:
                    raise StudyError(f"{src}: {algo}/{precision}: {e}") from None

    def train_config(
        self,
        model: Path,
        algo: str,
        seed: int,
        precision: str,
        *,
        mask: str | None = None,
        output: str = "",
        advantages: str = "all",
    ) -> TrainConfig:
        return TrainConfig(
            model=str(model),
            output=output,
            task=self.task,
            algo=algo,
            seed=seed,
            precision=precision,
            steps=self.steps,
            save_steps=self.save_steps,
            mask=mask,
            difficulty=self.difficulty,
            advantages=advantages,
            progress=False,
            **self.train,
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("source")
        return d


def load_config(path: str | os.PathLike) -> StudyConfig:
    """A StudyConfig from a TOML file: top-level keys as in StudyConfig, other TrainConfig settings under [train]."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise StudyError(f"{p}: no such file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise StudyError(f"{p}: not valid TOML ({e})") from None
    return config_from_dict(data, source=str(p))


def config_from_dict(data: dict[str, Any], *, source: str = "<config>") -> StudyConfig:
    known = {f.name for f in fields(StudyConfig)} - {"source"}
    for key, value in data.items():
        if key not in known:
            raise StudyError(f"{source}: unknown key {key!r}; known: {', '.join(sorted(known))}")
        if key == "train" and not isinstance(value, dict):
            raise StudyError(f"{source}: train must be a table ([train])")
    try:
        return StudyConfig(**data, source=source)
    except TypeError as e:
        raise StudyError(f"{source}: {e}") from None


def preset_path(name: str) -> Path:
    if name not in PRESETS:
        raise StudyError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS_DIR / f"{name}.toml"


# ---- small helpers -------------------------------------------------------------------------------------------


def _hash(obj: Any, n: int = 10) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, data)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _diff_complete(d: Path) -> bool:
    from rldelta.diff_files import SUMMARY_FILE, TENSORS_FILE
    from rldelta.masks import MASK_FILE

    return all((d / f).is_file() for f in (MASK_FILE, SUMMARY_FILE, TENSORS_FILE))


class _Log:
    """One line per stage on stderr (the heavy stages draw their own rich bars)."""

    def __init__(self, enabled: bool):
        from rich.console import Console

        self.enabled = enabled
        self.console = Console(stderr=True)
        self.t0 = time.perf_counter()

    def __call__(self, msg: str) -> None:
        if self.enabled:
            self.console.print(
                f"[bold cyan]study[/] [dim]{time.perf_counter() - self.t0:5.0f}s[/] {msg}",
                highlight=False,
                soft_wrap=True,
            )


# ---- runs ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One training run: its grid cell, its TrainConfig and where it lives."""

    label: str
    algo: str
    seed: int
    precision: str
    config: TrainConfig
    dir: Path
    kind: str = "grid"  # or "retrain", or "positive"/"negative" (trained with that --advantages)

    @property
    def final_step(self) -> int:
        return self.config.steps

    def ckpt(self, step: int, fp32: bool = False) -> Path:

        return step_dir(self.dir, step, fp32)


def _make_run(
    study: Path,
    cfg: StudyConfig,
    model: Path,
    algo: str,
    seed: int,
    precision: str,
    *,
    mask: Path | None = None,
    kind: str = "grid",
) -> Run:
    label = f"{algo}-s{seed}-{precision}"
    if kind == "retrain":
        label = f"retrain-{label}"
    advantages = kind if kind in ("positive", "negative") else "all"
    if advantages != "all":
        label = f"{label}-{advantages}"
    tc = cfg.train_config(model, algo, seed, precision, mask=str(mask) if mask else None, advantages=advantages)
    # Keyed by the config as the user wrote it: paths inside STUDY are made relative so a moved study still matches.
    model_ident = cfg.model if cfg.model in BUILTIN_MODELS else str(Path(cfg.model).resolve())
    if cfg.model == "tiny":
        model_ident = f"tiny(seed={cfg.model_seed})"
    overrides = {"mask": os.path.relpath(mask, study)} if mask is not None else {}
    return Run(label, algo, seed, precision, tc, _place_run(study, label, tc, model=model_ident, **overrides), kind)


def _place_run(study: Path, label: str, tc: TrainConfig, **ident_overrides: Any) -> Path:
    """STUDY/runs/<label>-<hash of the config>, set as the config's output: the same config finds the same run.
    The overrides replace paths (model, mask) by names that do not change when the study folder moves."""
    ident = {k: v for k, v in tc.to_dict().items() if k not in ("output", "progress", "resume")}
    run_dir = study / "runs" / f"{label}-{_hash({**ident, **ident_overrides})}"
    tc.output = str(run_dir)
    return run_dir


def run_complete(run: Run) -> bool:
    """run.json says completed and the last step's published checkpoint is there."""
    try:
        record = read_run_json(run.dir)
    except (OSError, json.JSONDecodeError):
        return False
    return bool(record) and record.get("status") == "completed" and (run.ckpt(run.final_step) / "config.json").is_file()


def _prepare_for_training(run: Run) -> dict:
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


def _train_job(config: dict, threads: int | None = None) -> str:
    """Train one run (in this process, a pool worker, or a Ray task) and return its directory."""
    from rldelta.train.trainers import train

    if threads:
        import torch

        torch.set_num_threads(threads)
    tc = TrainConfig.from_dict(config)
    return str(train(tc))


def _train_all(
    runs: list[Run], *, backend: str, workers: int, ray_address: str | None, log: _Log, progress: bool, threads: int = 0
) -> None:
    todo = [r for r in runs if not run_complete(r)]
    for r in runs:
        if r not in todo:
            log(f"train {r.label}: complete, reused ({r.dir})")
    if not todo:
        return
    jobs = [(r, _prepare_for_training(r)) for r in todo]
    if backend == "ray":
        _train_ray(jobs, workers, ray_address, log, threads)
        return
    if workers <= 1 or len(jobs) == 1:
        for r, d in jobs:
            log(f"train {r.label} ({r.config.steps} steps){' — resuming' if d.get('resume') else ''}")
            d["progress"] = progress
            t0 = time.perf_counter()
            _train_job(d)
            log(f"train {r.label}: done in {time.perf_counter() - t0:.0f} s")
        return
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    n = min(workers, len(jobs))
    threads = threads or max(1, (os.cpu_count() or 1) // n)
    log(f"train {len(jobs)} run(s) on a local pool of {n} processes ({threads} thread(s) each)")
    # spawn: forking a process in which torch has started threads can deadlock
    with ProcessPoolExecutor(n, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(_train_job, d, threads): r for r, d in jobs}
        try:
            for fut in as_completed(futures):
                fut.result()
                log(f"train {futures[fut].label}: done")
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def _train_ray(jobs: list[tuple[Run, dict]], workers: int, address: str | None, log: _Log, threads: int = 0) -> None:
    with ray_session(address, StudyError) as ray:
        n = max(1, min(workers, len(jobs)))
        threads = threads or max(1, cluster_cpus(ray) // n)
        log(
            f"train {len(jobs)} run(s) on Ray ({'cluster ' + address if address else 'local cluster'}, "
            f"{threads} CPU(s) per run)"
        )
        remote = ray.remote(num_cpus=threads, max_retries=0)(_train_job)
        refs = {remote.remote(d, threads): r for r, d in jobs}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            ray.get(done[0])
            log(f"train {refs[done[0]].label}: done")


# ---- base model ----------------------------------------------------------------------------------------------


def prepare_base(cfg: StudyConfig, study: Path) -> Path:
    """The base model folder: the tiny model cast to bf16, SmolLM2 prepared, or the folder the config names."""
    from rldelta.train.models import ModelError, build_tiny, prepare_smollm2

    if cfg.model == "tiny":
        out = study / "models" / f"tiny-seed{cfg.model_seed}-bf16"
        if (out / "config.json").is_file():
            return out
        # Published RL checkpoints are bf16 and so is their base: an fp32 base against bf16 checkpoints would
        # count every rounding of the cast as a change.
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=".tiny-fp32-") as fp32:
            build_tiny(Path(fp32) / "model", seed=cfg.model_seed)
            with atomic_dir(out) as tmp:
                model = AutoModelForCausalLM.from_pretrained(Path(fp32) / "model", dtype=torch.bfloat16)
                model.save_pretrained(tmp)
                AutoTokenizer.from_pretrained(Path(fp32) / "model").save_pretrained(tmp)
        return out
    if cfg.model == "smollm2-135m":
        try:
            return prepare_smollm2(study / "models" / "smollm2-135m")
        except ModelError as e:
            raise StudyError(f"{cfg.source}: model: {e}") from None
    p = Path(cfg.model)
    if not (p / "config.json").is_file():
        raise StudyError(
            f"{cfg.source}: model {cfg.model!r} is neither a built-in ({', '.join(BUILTIN_MODELS)}) "
            "nor a model folder holding config.json"
        )
    return p


# ---- measuring -----------------------------------------------------------------------------------------------


def _diff(
    base: Path, ckpt: Path, out: Path, *, atol: float, compare_dtype: str = "base", rank: bool = True, progress: bool
) -> dict:
    from rldelta.diff import run_diff
    from rldelta.diff_files import SUMMARY_FILE

    if _diff_complete(out):
        return _read_json(out / SUMMARY_FILE)
    return run_diff(
        base,
        ckpt,
        out,
        atol=atol,
        compare_dtype=compare_dtype,
        rank=rank,
        save_mask=True,
        resume=True,
        progress=progress,
    )


def _diffs_of_run(run: Run, base: Path, study: Path, cfg: StudyConfig, progress: bool) -> None:
    for step in run.config.save_step_list:
        _diff(base, run.ckpt(step), study / "diffs" / run.dir.name / f"step-{step}", atol=cfg.atol, progress=progress)
        if run.precision == "fp32" and run.ckpt(step, fp32=True).is_dir():
            # The fp32 master compared in fp32: every entry the optimizer moved at all, before bf16 rounding.
            _diff(
                base,
                run.ckpt(step, fp32=True),
                study / "diffs" / run.dir.name / f"step-{step}-fp32",
                atol=cfg.atol,
                compare_dtype="fp32",
                rank=step == run.final_step,
                progress=progress,
            )


def diff_dir(study: Path, run: Run, step: int | None = None, fp32: bool = False) -> Path:
    step = run.final_step if step is None else step
    return study / "diffs" / run.dir.name / (f"step-{step}-fp32" if fp32 else f"step-{step}")


def _eval(model_dir: Path, name: str, study: Path, cfg: StudyConfig) -> dict:
    from rldelta.train.evaluate import evaluate

    settings = {
        "task": cfg.task,
        "n": cfg.eval_n,
        "seed": cfg.eval_seed,
        "difficulty": cfg.difficulty,
        "max_new_tokens": cfg.eval_max_new_tokens,
    }
    out = study / "evals" / f"{name}-{_hash(settings, 8)}.json"
    if out.is_file():
        return _read_json(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return evaluate(
        model_dir,
        get_task(cfg.task),
        cfg.eval_n,
        seed=cfg.eval_seed,
        difficulty=cfg.difficulty,
        batch_size=cfg.eval_batch_size,
        max_new_tokens=cfg.eval_max_new_tokens,
        show_progress=False,
        out=out,
    )


def _other_seed(run: Run, runs: list[Run]) -> Run | None:
    """The next seed's run of the same algorithm and precision (cyclically), for seed-vs-seed comparisons."""
    peers = [r for r in runs if r.algo == run.algo and r.precision == run.precision]
    if len(peers) < 2:
        return None
    return peers[(peers.index(run) + 1) % len(peers)]


def _explain(run: Run, runs: list[Run], base: Path, study: Path, cfg: StudyConfig, progress: bool) -> dict:
    from rldelta.explain import EXPLAIN_JSON, run_explain

    out = study / "explain" / run.dir.name
    if (out / EXPLAIN_JSON).is_file():
        return _read_json(out / EXPLAIN_JSON)
    other = _other_seed(run, runs)
    master = run.ckpt(run.final_step, fp32=True)
    return run_explain(
        diff_dir(study, run),
        base,
        out,
        tuned_master=master if master.is_dir() else None,
        other=diff_dir(study, other) if other else None,
        rank_samples=cfg.rank_samples,
        progress=progress,
    )


def _surgery_evals(
    primary: Run, targets: list[Run], base: Path, study: Path, cfg: StudyConfig, log: _Log
) -> list[dict]:
    """patch/revert of every target with the primary run's final changed-mask, and with random controls."""
    from rldelta.surgery import SURGERY_JSON, run_surgery

    mask = diff_dir(study, primary)
    rows = []
    for target in targets:
        for kind in ("patch", "revert"):
            for control in [None] + [f"random:{s}" for s in range(cfg.controls)]:
                name = f"{kind}-{target.dir.name}-{'mask' if control is None else control.replace(':', '')}"
                out = study / "surgery" / name
                rec_file = study / "surgery" / f"{name}.json"
                if rec_file.is_file():  # written last, once evaluated
                    rows.append(_read_json(rec_file))
                    continue
                if not (out / SURGERY_JSON).is_file():
                    log(
                        f"surgery {kind} {target.label} with "
                        f"{'the ' + primary.label + ' mask' if control is None else 'a ' + control + ' control'}"
                    )
                    run_surgery(
                        kind,
                        base,
                        target.ckpt(target.final_step),
                        mask,
                        out,
                        control="random" if control else None,
                        seed=int(control.split(":")[1]) if control else 0,
                    )
                totals = _read_json(out / SURGERY_JSON)["totals"]
                ev = _eval(out, f"surgery-{name}", study, cfg)
                rec = {
                    "kind": kind,
                    "target": target.label,
                    "mask_of": primary.label,
                    "control": control or "none",
                    "masked_frac": totals["masked_frac"],
                    "from_tuned": totals["from_tuned"],
                    "numel": totals["numel"],
                    "accuracy": ev["accuracy"],
                    "format_rate": ev["format_rate"],
                    "n": ev["n"],
                }
                _write_json(rec_file, rec)
                if not cfg.keep_surgery_models:
                    shutil.rmtree(out, ignore_errors=True)  # the eval JSON is the record; a model copy is large
                rows.append(rec)
    return rows


def _compare_retrain(full: Run, retrain: Run, base: Path, study: Path) -> dict:
    """How much of the full run the subnetwork-only run reproduced: changed sets and the direction of Δ."""
    from rldelta.checkpoint import open_checkpoint
    from rldelta.masks import intersection, load_mask, mask_counts

    out = study / "compare" / f"{retrain.dir.name}.json"
    if out.is_file():
        return _read_json(out)
    a, r = load_mask(diff_dir(study, full)), load_mask(diff_dir(study, retrain))
    size_a, size_r = mask_counts(a).total_count, mask_counts(r).total_count
    inter = mask_counts(intersection(a, r)).total_count
    b_ck = open_checkpoint(base)
    fa, fr = open_checkpoint(full.ckpt(full.final_step)), open_checkpoint(retrain.ckpt(retrain.final_step))
    dot = na = nr = 0.0
    for n in a.names():
        w = b_ck.get(n).float()
        d, x, y = cosine_parts(fa.get(n).float() - w, fr.get(n).float() - w)
        dot, na, nr = dot + d, na + x, nr + y
    res = {
        "full": full.label,
        "retrain": retrain.label,
        "changed_full": size_a,
        "changed_retrain": size_r,
        "intersection": inter,
        "full_covered_by_retrain": inter / size_a if size_a else None,
        "retrain_inside_full": inter / size_r if size_r else None,
        "jaccard": inter / (size_a + size_r - inter) if size_a + size_r - inter else None,
        "delta_cosine": dot / math.sqrt(na * nr) if na and nr else None,
        "delta_norm_ratio": math.sqrt(nr / na) if na else None,
    }
    _write_json(out, res)
    return res


# The final subnetwork counts as fixed from the first saved step whose changed set holds this share of it.
FIXED_SHARE = 0.9


def _dynamics(run: Run, study: Path, other: Run | None = None) -> list[dict]:
    """Changed fraction, rank fraction, overlap with the final changed set and with the other seed's changed set at
    the same step, at every saved step."""
    from rldelta.diff_files import SUMMARY_FILE
    from rldelta.masks import intersection, load_mask, mask_counts

    out = study / "compare" / f"dynamics-{run.dir.name}.json"
    if out.is_file():
        return _read_json(out)
    final = load_mask(diff_dir(study, run))
    size_final = mask_counts(final).total_count
    rows = []
    for step in run.config.save_step_list:
        d = diff_dir(study, run, step)
        s = _read_json(d / SUMMARY_FILE)["totals"]
        m = load_mask(d)
        size = mask_counts(m).total_count
        inter = mask_counts(intersection(m, final)).total_count
        fp32 = diff_dir(study, run, step, fp32=True)
        fp32_frac = _read_json(fp32 / SUMMARY_FILE)["totals"]["changed_frac"] if _diff_complete(fp32) else None
        other_overlap = None
        if other is not None and _diff_complete(diff_dir(study, other, step)):
            inter_o = mask_counts(intersection(m, load_mask(diff_dir(study, other, step)))).total_count
            other_overlap = inter_o / size if size else None
        rows.append(
            {
                "run": run.label,
                "step": step,
                "changed_frac": s["changed_frac"],
                "changed_atol_frac": s["changed_atol_frac"],
                "mean_rank_frac": s["mean_rank_frac"],
                "fp32_changed_frac": fp32_frac,
                "still_changed_at_end": inter / size if size else None,
                "share_of_final_set": inter / size_final if size_final else None,
                "other_seed": other.label if other is not None else None,
                "overlap_with_other_seed": other_overlap,
            }
        )
    _write_json(out, rows)
    return rows


# ---- mechanism probes ----------------------------------------------------------------------------------------


def _probes(
    cfg: StudyConfig, study: Path, base: Path, primary: Run, split: list[Run], log: _Log, progress: bool
) -> dict[str, Any]:
    """Each probe of cfg.probes on the first run (and the advantage-split runs); outputs in STUDY/probes/<probe>/."""
    out: dict[str, Any] = {}
    root = study / "probes"
    if "logprobs" in cfg.probes:
        from rldelta.probes.logprobs import SUMMARY_FILE, run_logprobs

        d = root / "logprobs"
        if not (d / SUMMARY_FILE).is_file():
            log(f"probe logprobs on {primary.label}" + (" and its advantage-split runs" if split else ""))
            by_kind = {r.kind: r.dir for r in split}
            run_logprobs(
                primary.dir,
                d,
                positive=by_kind.get("positive"),
                negative=by_kind.get("negative"),
                n_prompts=cfg.probe_prompts,
                k=cfg.probe_samples,
                eval_prompts=cfg.probe_eval_prompts,
                seed=cfg.eval_seed,
                progress=progress,
            )
        out["logprobs"] = d
    if "activations" in cfg.probes:
        from rldelta.probes.activations import ACTIVATIONS_JSON, run_activations

        d = root / "activations"
        if not (d / ACTIVATIONS_JSON).is_file():
            log(f"probe activations: base vs {primary.label}")
            run_activations(
                base,
                d,
                compare=primary.ckpt(primary.final_step),
                task=_arith_like(cfg.task),
                n_per_level=cfg.activation_prompts,
                seed=cfg.eval_seed,
                progress=progress,
                trained_levels=[cfg.difficulty] if cfg.difficulty and _arith_like(cfg.task) == cfg.task else None,
            )
        out["activations"] = d
    if "formats" in cfg.probes:
        out["formats"] = _formats_probe(cfg, study, primary, log, progress)
    return out


# The [formats] table of a study config: the pretrain-mixture models and the RL run from each (issue 7, probe 2).
FORMATS_DEFAULTS: dict[str, Any] = {
    "sizes": ["5m", "30m"],  # train.mixture.SIZES
    "pretrain_steps": None,  # None: the size's default (about 15 minutes on 2 cores)
    "max_minutes": 15.0,  # pretraining stops when this much time is used up
    "proportions": None,  # format -> share of the corpus; None: train.mixture.DEFAULT_PROPORTIONS
    "noise": None,  # format -> share of wrong answers in the corpus; None: train.mixture.DEFAULT_NOISE
    "difficulties": [1, 2],  # arith levels of the pretraining corpus
    "batch_size": 32,
    "eval_prompts": 64,  # test prompts on which each format's share and accuracy are measured after pretraining
    "difficulty": 2,  # arith level of the RL prompts
    "steps": 50,  # GRPO steps from each mixture model
    "train": {"lr": 1e-4, "prompts_per_step": 4, "num_generations": 8, "max_completion_length": 24},
}


def _formats_settings(cfg: StudyConfig) -> dict[str, Any]:
    unknown = sorted(set(cfg.formats) - set(FORMATS_DEFAULTS))
    if unknown:
        raise StudyError(f"{cfg.source}: unknown key formats.{unknown[0]}; known: {', '.join(FORMATS_DEFAULTS)}")
    return {**FORMATS_DEFAULTS, **cfg.formats, "train": {**FORMATS_DEFAULTS["train"], **cfg.formats.get("train", {})}}


def _formats_probe(cfg: StudyConfig, study: Path, primary: Run, log: _Log, progress: bool) -> dict[str, Any]:
    """Pretrain each mixture model, run GRPO from it on mixarith, and classify the formats it samples."""
    from rldelta.probes.formats import SUMMARY_FILE, TABLE_FILE, compare_sizes, run_formats
    from rldelta.train.mixture import DEFAULT_NOISE, DEFAULT_PROPORTIONS, pretrain_mixture

    f = _formats_settings(cfg)
    summaries, frames = [], []
    for size in f["sizes"]:
        pre = {
            "size": size,
            "steps": f["pretrain_steps"],
            "max_minutes": f["max_minutes"],
            "proportions": f["proportions"] or DEFAULT_PROPORTIONS,
            "noise": f["noise"] or DEFAULT_NOISE,
            "difficulties": list(f["difficulties"]),
            "batch_size": f["batch_size"],
            "seed": cfg.model_seed,
            "eval_prompts": f["eval_prompts"],
        }
        model_dir = study / "models" / f"mixture-{size}-{_hash(pre, 8)}"
        if not (model_dir / "config.json").is_file():
            log(f"pretrain the {size} mixture model ({f['max_minutes']:g} min at most)")
            pretrain_mixture(model_dir, **pre, progress=progress)
        try:
            tc = TrainConfig(
                model=str(model_dir),
                output="",
                task="mixarith",
                algo="grpo",
                seed=primary.seed,
                steps=f["steps"],
                difficulty=f["difficulty"],
                rewards="correctness",
                progress=False,
                **f["train"],
            )
        except ConfigError as e:
            raise StudyError(f"{cfg.source}: formats: {e}") from None
        run_dir = _place_run(study, f"formats-{size}", tc, model=model_dir.name)
        run = Run(f"formats-{size}", "grpo", primary.seed, tc.precision, tc, run_dir, kind="formats")
        _train_all([run], backend="local", workers=1, ray_address=None, log=log, progress=progress)
        d = study / "probes" / "formats" / size
        if (d / SUMMARY_FILE).is_file():
            summary = _read_json(d / SUMMARY_FILE)
        else:
            log(f"probe formats on {run.label}")
            summary = run_formats(run_dir, d)
        summaries.append(summary)
        frames.append(pd.read_parquet(d / TABLE_FILE).assign(model=size))
    verdicts = {s: summary["verdict"] for s, summary in zip(f["sizes"], summaries)}
    if len(summaries) > 1:
        verdicts["sizes"] = compare_sizes(summaries)["verdict"]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return {"table": table[["model", *[c for c in table.columns if c != "model"]]], "verdicts": verdicts}


def _arith_like(task: str) -> str:
    """The activation probe's prompt ladder needs arith-style levels; other tasks are probed on arith prompts."""
    from rldelta.train.tasks import TASKS, Arith

    return task if issubclass(TASKS[task], Arith) else "arith"


def probe_tables(probes: dict[str, Any], dynamics: list[dict]) -> dict[str, pd.DataFrame]:
    """The probes' tables for the report, read from their output folders; and when each run's subnetwork was fixed."""
    tables: dict[str, pd.DataFrame] = {}
    verdicts: list[dict] = []
    if "logprobs" in probes:
        from rldelta.probes import logprobs as lp

        d = probes["logprobs"]
        s = _read_json(d / lp.SUMMARY_FILE)
        tables["probe_logprobs"] = pd.read_parquet(d / lp.TABLE_FILE).drop(columns=["checkpoint"])
        tables["probe_phases"] = pd.read_parquet(d / lp.PHASES_FILE)
        if (d / lp.ADVANTAGES_FILE).is_file():
            tables["probe_advantages"] = pd.read_parquet(d / lp.ADVANTAGES_FILE).drop(columns=["checkpoint"])
        verdicts += [
            {"probe": "suppression vs amplification", "verdict": s["verdict_logprobs"]},
            {"probe": "two phases", "verdict": s["verdict_phases"]},
        ]
        if "verdict_advantages" in s:
            verdicts.append({"probe": "positive vs negative advantages", "verdict": s["verdict_advantages"]})
    if "activations" in probes:
        from rldelta.probes.activations import ACTIVATIONS_JSON, ACTIVATIONS_TABLE

        d = probes["activations"]
        s = _read_json(d / ACTIVATIONS_JSON)
        tables["probe_activations"] = pd.read_parquet(d / ACTIVATIONS_TABLE)
        verdicts.append({"probe": "activation sparsity vs difficulty", "verdict": s["sparsity_verdict"]})
        if s.get("verdict"):
            verdicts.append({"probe": "neurons RL edits", "verdict": s["verdict"]})
    if "formats" in probes:
        f = probes["formats"]
        tables["probe_formats"] = f["table"]
        verdicts += [{"probe": f"format selection ({k})", "verdict": v} for k, v in f["verdicts"].items()]
    fixed = []
    by_run: dict[str, list[dict]] = {}
    for row in dynamics:
        by_run.setdefault(row["run"], []).append(row)
    for run, rows in by_run.items():
        rows = sorted(rows, key=lambda r: r["step"])
        step = next((r["step"] for r in rows if (r["share_of_final_set"] or 0) >= FIXED_SHARE), None)
        fixed.append(
            {
                "run": run,
                "fixed_step": step,
                "final_step": rows[-1]["step"],
                "fixed_at_frac_of_training": step / rows[-1]["step"] if step is not None else None,
            }
        )
    tables["subnetwork_fixed"] = pd.DataFrame(
        fixed, columns=["run", "fixed_step", "final_step", "fixed_at_frac_of_training"]
    )
    tables["probe_verdicts"] = pd.DataFrame(verdicts, columns=["probe", "verdict"])
    return tables


# ---- the study -----------------------------------------------------------------------------------------------


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


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
    import torch

    threads = torch.get_num_threads()
    if cfg.threads:
        # On tiny shapes intra-op threads only add barrier waits (25x slower with 2 threads on a busy 2-core box).
        torch.set_num_threads(cfg.threads)
    try:
        return _run(cfg, study, backend=backend, workers=workers, ray_address=ray_address, progress=progress)
    finally:
        torch.set_num_threads(threads)


def _run(cfg: StudyConfig, study: Path, *, backend: str, workers: int, ray_address: str | None, progress: bool) -> dict:
    log = _Log(progress)
    t_start = time.perf_counter()
    _write_json(study / "study.json", {"version": __version__, "source": cfg.source, "config": cfg.to_dict()})

    base = prepare_base(cfg, study)
    log(f"base model: {base}")
    runs = [_make_run(study, cfg, base, a, s, p) for a in cfg.algorithms for p in cfg.precisions for s in cfg.seeds]
    primary = runs[0]
    # The first run again, learning only from positive / only from negative advantages (the logprobs probe).
    split = (
        [
            _make_run(study, cfg, base, primary.algo, primary.seed, primary.precision, kind=k)
            for k in ("positive", "negative")
        ]
        if "logprobs" in cfg.probes and cfg.advantage_runs
        else []
    )

    # 1. train the grid
    _train_all(
        runs + split,
        backend=backend,
        workers=workers,
        ray_address=ray_address,
        log=log,
        progress=progress,
        threads=cfg.threads,
    )
    # 2. diff every saved checkpoint
    log("diff every saved checkpoint against the base")
    for r in runs:
        _diffs_of_run(r, base, study, cfg, progress)
    # accuracy of the base and of every final checkpoint
    log("evaluate base and final checkpoints")
    evals = {"base": _eval(base, "base", study, cfg)}
    for r in runs:
        evals[r.label] = _eval(r.ckpt(r.final_step), r.dir.name, study, cfg)
    # 3. overlap of all final changed-masks, explain per run
    overlap = None
    if len(runs) >= 2:
        from rldelta.overlap import OVERLAP_JSON, OVERLAP_TABLE, run_overlap

        ov_dir = study / "overlap"
        if (ov_dir / OVERLAP_JSON).is_file() and (ov_dir / OVERLAP_TABLE).is_file():
            overlap = _read_json(ov_dir / OVERLAP_JSON)
        else:
            log("overlap of the final changed sets")
            overlap = run_overlap([diff_dir(study, r) for r in runs], ov_dir, progress=progress, plot=False)
    explains = {}
    for r in runs:
        log(f"explain {r.label}")
        explains[r.label] = _explain(r, runs, base, study, cfg, progress)
    # 4. surgery with the first seed's subnetwork on every seed of its algorithm and precision
    targets = [r for r in runs if r.algo == primary.algo and r.precision == primary.precision]
    surgery = _surgery_evals(primary, targets, base, study, cfg, log)
    # 5. subnetwork-only retraining
    retrain = compare = None
    if cfg.retrain:
        retrain = _make_run(
            study,
            cfg,
            base,
            primary.algo,
            primary.seed,
            primary.precision,
            mask=diff_dir(study, primary) / "mask.safetensors",
            kind="retrain",
        )
        _train_all([retrain], backend="local", workers=1, ray_address=None, log=log, progress=progress)
        _diffs_of_run(retrain, base, study, cfg, progress)
        evals[retrain.label] = _eval(retrain.ckpt(retrain.final_step), retrain.dir.name, study, cfg)
        compare = _compare_retrain(primary, retrain, base, study)
    # 6. dynamics
    dynamics = [row for r in runs for row in _dynamics(r, study, _other_seed(r, runs))]
    if retrain is not None:
        dynamics += _dynamics(retrain, study)
    # 7. mechanism probes
    probes = _probes(cfg, study, base, primary, split, log, progress)

    # 8. tables and report
    from rldelta.report.html import write_report

    tables = build_tables(cfg, study, base, runs, retrain, evals, overlap, explains, surgery, compare, dynamics)
    tables.update(probe_tables(probes, dynamics))
    export_tables(tables, study / "tables")
    report = write_report(tables, study / REPORT)
    log(f"done in {time.perf_counter() - t_start:.0f} s; report: {report}")
    head = {r["key"]: r["value"] for r in tables["headline"].to_dict("records")}
    return {
        "study": str(study),
        "report": str(report),
        "tables": str(study / "tables"),
        "headline": head,
        "claims": tables["claims"].to_dict("records"),
    }


# ---- tables --------------------------------------------------------------------------------------------------


def _mean(xs: list) -> float | None:
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return sum(xs) / len(xs) if xs else None


def _pair_kind(a: Run, b: Run) -> str:
    same = (a.algo == b.algo, a.seed == b.seed, a.precision == b.precision)
    if same == (True, False, True):
        return "seed"
    if same == (False, True, True):
        return "algorithm"
    if same == (True, True, False):
        return "precision"
    return "mixed"


def build_tables(
    cfg: StudyConfig,
    study: Path,
    base: Path,
    runs: list[Run],
    retrain: Run | None,
    evals: dict,
    overlap: dict | None,
    explains: dict,
    surgery: list[dict],
    compare: dict | None,
    dynamics: list[dict],
) -> dict[str, pd.DataFrame]:
    """Every table of the report, from the stage outputs on disk. The report shows nothing that is not in here."""
    from rldelta.diff_files import SUMMARY_FILE, TENSORS_FILE

    all_runs = runs + ([retrain] if retrain else [])
    base_acc = evals["base"]["accuracy"]

    setup = [
        (
            "question",
            "Why does RL fine-tuning change only a slice of the weights, with full-rank, seed-consistent updates?",
        ),
        ("config", cfg.source),
        ("model", cfg.model),
        ("base model folder", str(base)),
        ("task", cfg.task),
        ("difficulty", "all" if cfg.difficulty is None else str(cfg.difficulty)),
        ("algorithms", ", ".join(cfg.algorithms)),
        ("seeds", ", ".join(map(str, cfg.seeds))),
        ("precisions", ", ".join(cfg.precisions)),
        ("steps", str(cfg.steps)),
        ("saved steps", ", ".join(map(str, runs[0].config.save_step_list))),
        ("eval", f"greedy, n={cfg.eval_n}, {cfg.eval_max_new_tokens} new tokens, test split seed {cfg.eval_seed}"),
        ("changed", f"bitwise in bf16 (the stored dtype); also |Δ| > {cfg.atol:g} in fp32"),
        ("training settings", ", ".join(f"{k}={v}" for k, v in sorted(cfg.train.items())) or "defaults"),
        ("rldelta", __version__),
    ]
    tables: dict[str, pd.DataFrame] = {"setup": pd.DataFrame(setup, columns=["setting", "value"])}

    run_rows, module_rows, layer_rows, decile_rows = [], [], [], []
    for r in all_runs:
        s = _read_json(diff_dir(study, r) / SUMMARY_FILE)
        fp32 = diff_dir(study, r, fp32=True)
        fs = _read_json(fp32 / SUMMARY_FILE)["totals"] if _diff_complete(fp32) else {}
        ex = explains.get(r.label, {})
        master = ex.get("master") or {}
        mo = ex.get("magnitude_matched_overlap") or {}
        run_rows.append(
            {
                "run": r.label,
                "kind": r.kind,
                "algo": r.algo,
                "seed": r.seed,
                "precision": r.precision,
                "steps": r.final_step,
                "accuracy": evals[r.label]["accuracy"],
                "base_accuracy": base_acc,
                "changed_frac": s["totals"]["changed_frac"],
                "changed_atol_frac": s["totals"]["changed_atol_frac"],
                "mean_rank_frac": s["totals"]["mean_rank_frac"],
                "weighted_mean_rank_frac": s["totals"]["weighted_mean_rank_frac"],
                "fp32_changed_frac": fs.get("changed_frac"),
                "fp32_changed_atol_frac": fs.get("changed_atol_frac"),
                "fp32_mean_rank_frac": fs.get("mean_rank_frac"),
                "lost_to_rounding_frac": master.get("lost_to_rounding_frac"),
                "auc_small_weights": (ex.get("rounding") or {}).get("auc"),
                "seed_overlap": mo.get("observed"),
                "seed_overlap_random": mo.get("random"),
                "seed_overlap_magnitude_matched": mo.get("magnitude_matched"),
                "run_dir": str(r.dir),
            }
        )
        null = ex.get("rank_null") or {}
        for mod, m in s["by_module"].items():
            module_rows.append(
                {
                    "run": r.label,
                    "module": mod,
                    "numel": m["numel"],
                    "changed_frac": m["changed_frac"],
                    "changed_atol_frac": m["changed_atol_frac"],
                    "mean_rank_frac": m["mean_rank_frac"],
                    "null_rank_frac": (null.get(mod) or {}).get("null_rank_frac"),
                }
            )
        t = pd.read_parquet(diff_dir(study, r) / TENSORS_FILE)
        for row in t.itertuples():
            layer_rows.append(
                {
                    "run": r.label,
                    "tensor": row.name,
                    "layer": None if pd.isna(row.layer) else int(row.layer),
                    "module": row.module,
                    "numel": int(row.numel),
                    "changed_frac": row.changed_frac,
                    "rank_frac": json_safe(row.rank_frac),
                }
            )
        rounding = ex.get("rounding") or {}
        fp32_dec = master.get("fp32_changed_frac_by_decile") or [None] * 10
        for i, v in enumerate(rounding.get("changed_frac_by_decile") or []):
            decile_rows.append({"run": r.label, "decile": i + 1, "changed_frac": v, "fp32_changed_frac": fp32_dec[i]})
    tables["runs"] = pd.DataFrame(run_rows)
    tables["modules"] = pd.DataFrame(module_rows)
    tables["tensors"] = pd.DataFrame(layer_rows)
    tables["deciles"] = pd.DataFrame(decile_rows)

    by_path = {str(diff_dir(study, r)): r for r in runs}
    ov_rows = []
    for p in (overlap or {}).get("pairs", []):
        a, b = by_path[p["a"]], by_path[p["b"]]
        matched = None
        ea = explains.get(a.label, {}).get("magnitude_matched_overlap") or {}
        if ea.get("b") == p["b"]:
            matched = ea.get("magnitude_matched")
        ov_rows.append(
            {
                "a": a.label,
                "b": b.label,
                "kind": _pair_kind(a, b),
                "size_a": p["size_a"],
                "size_b": p["size_b"],
                "intersection": p["intersection"],
                "overlap": p["overlap"],
                "random_overlap": p["random_overlap"],
                "magnitude_matched_overlap": matched,
                "jaccard": p["jaccard"],
            }
        )
    tables["overlap"] = pd.DataFrame(
        ov_rows,
        columns=[
            "a",
            "b",
            "kind",
            "size_a",
            "size_b",
            "intersection",
            "overlap",
            "random_overlap",
            "magnitude_matched_overlap",
            "jaccard",
        ],
    )

    acc_rows = [
        {
            "model": "base",
            "kind": "base",
            "accuracy": base_acc,
            "format_rate": evals["base"]["format_rate"],
            "n": evals["base"]["n"],
        }
    ]
    for r in all_runs:
        acc_rows.append(
            {
                "model": r.label,
                "kind": r.kind,
                "accuracy": evals[r.label]["accuracy"],
                "format_rate": evals[r.label]["format_rate"],
                "n": evals[r.label]["n"],
            }
        )
    tables["accuracy"] = pd.DataFrame(acc_rows)

    curve_rows = []
    for r in all_runs:
        mp = r.dir / METRICS
        if mp.is_file():
            m = pd.read_parquet(mp)
            for row in m.to_dict("records"):
                curve_rows.append(
                    {
                        "run": r.label,
                        "step": int(row["step"]),
                        "train_accuracy": json_safe(row.get("accuracy")),
                        "reward_mean": json_safe(row.get("reward_mean")),
                    }
                )
    tables["training_curves"] = pd.DataFrame(curve_rows, columns=["run", "step", "train_accuracy", "reward_mean"])

    tuned_acc = {r.label: evals[r.label]["accuracy"] for r in runs}
    sur_rows = []
    for rec in surgery:
        sur_rows.append(
            {
                "target": rec["target"],
                "mask_of": rec["mask_of"],
                "kind": rec["kind"],
                "control": rec["control"],
                "masked_frac": rec["masked_frac"],
                "accuracy": rec["accuracy"],
                "tuned_accuracy": tuned_acc[rec["target"]],
                "base_accuracy": base_acc,
                "recovery": _recovery(rec["accuracy"], base_acc, tuned_acc[rec["target"]]),
            }
        )
    tables["surgery"] = pd.DataFrame(
        sur_rows,
        columns=[
            "target",
            "mask_of",
            "kind",
            "control",
            "masked_frac",
            "accuracy",
            "tuned_accuracy",
            "base_accuracy",
            "recovery",
        ],
    )
    ret = []
    if compare is not None and retrain is not None:
        ret.append(
            {
                **compare,
                "accuracy_full": tuned_acc[compare["full"]],
                "accuracy_retrain": evals[retrain.label]["accuracy"],
                "base_accuracy": base_acc,
                "recovery": _recovery(evals[retrain.label]["accuracy"], base_acc, tuned_acc[compare["full"]]),
            }
        )
    tables["retrain"] = pd.DataFrame(ret)
    tables["dynamics"] = pd.DataFrame(dynamics)
    tables["headline"], tables["claims"] = _headline_and_claims(cfg, tables, runs)
    return tables


def _recovery(acc: float, base: float, tuned: float) -> float | None:
    """(acc − base) / (tuned − base): 1 = all of the accuracy RL gained; undefined when it gained nothing."""
    gain = tuned - base
    return (acc - base) / gain if abs(gain) > 1e-12 else None


def _headline_and_claims(cfg: StudyConfig, t: dict[str, pd.DataFrame], runs: list[Run]):
    grid = t["runs"][t["runs"]["kind"] == "grid"]
    ov = t["overlap"]
    seeds = ov[ov["kind"] == "seed"]
    sur = t["surgery"]
    ret = t["retrain"].to_dict("records")[0] if len(t["retrain"]) else {}
    mods = t["modules"][t["modules"]["run"].isin(grid["run"])]
    primary = runs[0].label
    others = [
        r.label for r in runs if r.algo == runs[0].algo and r.precision == runs[0].precision and r.label != primary
    ]
    cross = sur[sur["target"].isin(others)] if others else sur

    def sur_acc(kind: str, control: str) -> float | None:
        sub = cross[(cross["kind"] == kind) & (cross["control"].str.startswith(control))]
        return _mean(sub["accuracy"].tolist()) if len(sub) else None

    def col_mean(df, col) -> float | None:
        return _mean(df[col].tolist()) if col in df and len(df) else None

    h = [
        ("changed_frac", "changed fraction, bitwise in bf16 (mean over runs)", col_mean(grid, "changed_frac"), "pct"),
        (
            "changed_atol_frac",
            f"changed fraction, |Δ| > {cfg.atol:g} (mean over runs)",
            col_mean(grid, "changed_atol_frac"),
            "pct",
        ),
        (
            "fp32_changed_frac",
            "changed fraction of the fp32 master weights (mean over fp32 runs)",
            col_mean(grid, "fp32_changed_frac"),
            "pct",
        ),
        (
            "lost_to_rounding_frac",
            "share of fp32 updates lost when rounding to bf16",
            col_mean(grid, "lost_to_rounding_frac"),
            "pct",
        ),
        (
            "mean_rank_frac",
            "rank / max rank of Δ, mean over 2-D tensors and runs",
            col_mean(grid, "mean_rank_frac"),
            "num",
        ),
        (
            "null_rank_frac",
            "same for random sparse matrices of the same density",
            col_mean(mods, "null_rank_frac"),
            "num",
        ),
        ("seed_overlap", "seed overlap |A∩B|/|A| (mean over seed pairs)", col_mean(seeds, "overlap"), "pct"),
        (
            "seed_overlap_random",
            "… expected at random (same per-tensor density)",
            col_mean(seeds, "random_overlap"),
            "pct",
        ),
        (
            "seed_overlap_matched",
            "… expected at random within |w| bins (magnitude-matched)",
            col_mean(seeds, "magnitude_matched_overlap"),
            "pct",
        ),
        (
            "algorithm_overlap",
            "overlap between algorithms (mean)",
            col_mean(ov[ov["kind"] == "algorithm"], "overlap"),
            "pct",
        ),
        (
            "precision_overlap",
            "overlap between bf16- and fp32-trained runs (mean)",
            col_mean(ov[ov["kind"] == "precision"], "overlap"),
            "pct",
        ),
        ("base_accuracy", "base accuracy", t["accuracy"]["accuracy"].iloc[0], "acc"),
        ("tuned_accuracy", "RL-tuned accuracy (mean over runs)", col_mean(grid, "accuracy"), "acc"),
        ("patch_accuracy", "base + other seed's update on the seed-1 subnetwork", sur_acc("patch", "none"), "acc"),
        ("patch_random_accuracy", "… on a random mask of the same size", sur_acc("patch", "random"), "acc"),
        (
            "revert_accuracy",
            "other seed's model with the seed-1 subnetwork reset to base",
            sur_acc("revert", "none"),
            "acc",
        ),
        ("revert_random_accuracy", "… with a random mask of the same size reset", sur_acc("revert", "random"), "acc"),
        ("retrain_accuracy", "subnetwork-only retraining accuracy", ret.get("accuracy_retrain"), "acc"),
        ("retrain_full_accuracy", "the full run it retrains", ret.get("accuracy_full"), "acc"),
        (
            "retrain_coverage",
            "share of the full run's changed entries the retrain also changed",
            ret.get("full_covered_by_retrain"),
            "pct",
        ),
        ("retrain_cosine", "cosine of the retrain's Δ and the full run's Δ", ret.get("delta_cosine"), "num"),
    ]
    head = pd.DataFrame([{"key": k, "label": lab, "value": v, "format": f} for k, lab, v, f in h])
    H = {k: v for k, _, v, _ in h}

    # Verdict texts are templates: {key} is the headline number of that key, so the report shows the table's value.
    claims = []

    def claim(name: str, published: str, key: str, verdict: str, text: str) -> None:
        claims.append(
            {"claim": name, "published": published, "key": key, "value": H.get(key), "verdict": verdict, "text": text}
        )

    sparsity = "RL updates only 5–30% of the parameters"
    cf = H["changed_frac"]
    if cf is None:
        claim("sparsity", sparsity, "changed_frac", "not measured", "No run finished.")
    elif 0.05 <= cf <= 0.30:
        claim(
            "sparsity",
            sparsity,
            "changed_frac",
            "reproduces",
            "RL changed {changed_frac} of the entries (bitwise in bf16), inside the published 5–30%.",
        )
    else:
        side = "sparser" if cf < 0.05 else "denser"
        claim(
            "sparsity",
            sparsity,
            "changed_frac",
            f"does not reproduce ({side})",
            "RL changed {changed_frac} of the entries (bitwise in bf16; {changed_atol_frac} with |Δ| > atol), "
            f"{'below' if cf < 0.05 else 'above'} the published 5–30%.",
        )

    full_rank = "each update matrix is nearly full rank (>99%)"
    rk, nr = H["mean_rank_frac"], H["null_rank_frac"]
    if rk is None:
        claim("full rank", full_rank, "mean_rank_frac", "not measured", "No 2-D tensor changed.")
    else:
        v = "reproduces" if rk >= 0.99 else ("partly" if rk >= 0.9 else "does not reproduce")
        text = "Mean rank / max rank of Δ is {mean_rank_frac}"
        if nr is not None:
            text += "; random sparse matrices of the same density reach {null_rank_frac}"
            if nr >= rk - 0.01:
                text += ", so the rank follows from the sparsity alone"
        claim("full rank", full_rank, "mean_rank_frac", v, text + ".")

    consistency = "different seeds update nearly the same entries"
    so, sr, sm = H["seed_overlap"], H["seed_overlap_random"], H["seed_overlap_matched"]
    if so is None:
        claim("seed consistency", consistency, "seed_overlap", "not measured", "Needs two or more seeds.")
    else:
        above = sr is not None and so > sr + 0.01
        explained = sm is not None and so <= sm + 0.01
        v = "reproduces, explained by |w|" if above and explained else ("reproduces" if above else "does not reproduce")
        text = "Seeds overlap by {seed_overlap}, vs {seed_overlap_random} at random"
        if sm is not None:
            text += " and {seed_overlap_matched} for random sets with the same |w| profile"
        text += "." + (" Weight magnitude alone predicts that much overlap." if explained else "")
        claim("seed consistency", consistency, "seed_overlap", v, text)

    sufficiency = "the update on the subnetwork alone recovers the tuned accuracy"
    pa_, tuned, b = H["patch_accuracy"], H["tuned_accuracy"], H["base_accuracy"]
    if pa_ is None:
        claim("subnetwork sufficiency", sufficiency, "patch_accuracy", "not measured", "Needs two or more seeds.")
    else:
        text = (
            "Base + the other seed's update on the seed-1 subnetwork scores {patch_accuracy} "
            "(random mask {patch_random_accuracy}) vs {tuned_accuracy} tuned and {base_accuracy} base"
        )
        if abs(tuned - b) < 2 / cfg.eval_n:
            claim(
                "subnetwork sufficiency",
                sufficiency,
                "patch_accuracy",
                "inconclusive",
                text + ": RL barely moved accuracy, so there is nothing to recover.",
            )
        else:
            rec = _recovery(pa_, b, tuned)
            claim(
                "subnetwork sufficiency",
                sufficiency,
                "patch_accuracy",
                "reproduces" if rec is not None and rec >= 0.9 else "does not reproduce",
                text + ".",
            )

    subnet = "training only the subnetwork recovers the full run's accuracy and parameters"
    ra, fa, cos = H["retrain_accuracy"], H["retrain_full_accuracy"], H["retrain_cosine"]
    if ra is None:
        claim("subnetwork-only training", subnet, "retrain_accuracy", "not measured", "Retraining is off.")
    else:
        close = abs(ra - fa) <= max(0.02, 2 / cfg.eval_n)
        same = cos is not None and cos >= 0.9
        claim(
            "subnetwork-only training",
            subnet,
            "retrain_accuracy",
            "reproduces" if close and same else ("partly" if close or same else "does not reproduce"),
            "Retrained on the subnetwork only: {retrain_accuracy} vs {retrain_full_accuracy} for the full run; "
            "cosine of the two Δs {retrain_cosine}; it changed {retrain_coverage} of the full run's changed entries.",
        )
    return head, pd.DataFrame(claims)


def export_tables(tables: dict[str, pd.DataFrame], out: Path) -> None:
    """Each table as Parquet and CSV (atomically)."""
    out.mkdir(parents=True, exist_ok=True)
    for name, df in tables.items():
        atomic_write_parquet(df, out / f"{name}.parquet")
        atomic_write_bytes(out / f"{name}.csv", df.to_csv(index=False).encode())


__all__ = [
    "StudyConfig",
    "StudyError",
    "load_config",
    "config_from_dict",
    "preset_path",
    "run_study",
    "run_complete",
    "build_tables",
    "export_tables",
    "PRESETS",
]
