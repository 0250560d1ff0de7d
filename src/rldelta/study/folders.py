"""Where a study keeps things: run identity (a hash of the config), the `Run` record, the folder layout, and the
small JSON helpers every stage uses to write its record and to find it again."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rldelta.runtime.atomic import atomic_write_json
from rldelta.runtime.files import MASK_FILE, SUMMARY_FILE, TENSORS_FILE
from rldelta.study.config import BUILTIN_MODELS, TINY_MODELS, StudyConfig
from rldelta.train.config import TrainConfig
from rldelta.train.runfiles import read_run_json, step_dir

# The cause analysis's runs: SFT on the base's own correct samples, on the same answers in a foreign style, and the
# first run again with KL (the first run itself is the RL run without KL).
CAUSE_KINDS = ("cause-sft-own", "cause-sft-foreign", "cause-rl-kl", "cause-rl-no-kl")


def short_hash(obj: Any, n: int = 10) -> str:
    """The first `n` hex digits of the SHA-256 of `obj` as sorted JSON: the identity of a config in folder names."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, data)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def diff_complete(d: Path) -> bool:
    return all((d / f).is_file() for f in (MASK_FILE, SUMMARY_FILE, TENSORS_FILE))


@dataclass(frozen=True)
class Run:
    """One training run: its grid cell, its TrainConfig and where it lives."""

    label: str
    algo: str
    seed: int
    precision: str
    config: TrainConfig
    dir: Path
    # or "retrain", "positive"/"negative" (trained with that --advantages), or one of CAUSE_KINDS
    kind: str = "grid"

    @property
    def final_step(self) -> int:
        return self.config.steps

    def ckpt(self, step: int, fp32: bool = False) -> Path:
        return step_dir(self.dir, step, fp32)


def make_run(
    study: Path,
    cfg: StudyConfig,
    model: Path,
    algo: str,
    seed: int,
    precision: str,
    *,
    mask: Path | None = None,
    kind: str = "grid",
    overrides: dict[str, Any] | None = None,
) -> Run:
    label = f"{kind}-s{seed}-{precision}" if kind in CAUSE_KINDS else f"{algo}-s{seed}-{precision}"
    if kind == "retrain":
        label = f"retrain-{label}"
    advantages = kind if kind in ("positive", "negative") else "all"
    if advantages != "all":
        label = f"{label}-{advantages}"
    tc = cfg.train_config(
        model, algo, seed, precision, mask=str(mask) if mask else None, advantages=advantages, overrides=overrides
    )
    # Keyed by the config as the user wrote it: paths inside STUDY are made relative so a moved study still matches.
    model_ident = cfg.model if cfg.model in BUILTIN_MODELS else str(Path(cfg.model).resolve())
    if cfg.model in TINY_MODELS:
        model_ident = f"{cfg.model}(seed={cfg.model_seed})"
    paths = {"mask": os.path.relpath(mask, study)} if mask is not None else {}
    return Run(label, algo, seed, precision, tc, place_run(study, label, tc, model=model_ident, **paths), kind)


def place_run(study: Path, label: str, tc: TrainConfig, **ident_overrides: Any) -> Path:
    """STUDY/runs/<label>-<hash of the config>, set as the config's output: the same config finds the same run.
    The overrides replace paths (model, mask) by names that do not change when the study folder moves."""
    # Settings that do not change the trained weights (where it goes, what it shows and records) are not identity.
    ident = {k: v for k, v in tc.to_dict().items() if k not in ("output", "progress", "resume", "record_steps")}
    if ident.get("sft_style") == "own":
        del ident["sft_style"]  # added later: runs that predate it keep their folders
    run_dir = study / "runs" / f"{label}-{short_hash({**ident, **ident_overrides})}"
    tc.output = str(run_dir)
    return run_dir


def run_complete(run: Run) -> bool:
    """run.json says completed and the last step's published checkpoint is there."""
    try:
        record = read_run_json(run.dir)
    except (OSError, json.JSONDecodeError):
        return False
    return bool(record) and record.get("status") == "completed" and (run.ckpt(run.final_step) / "config.json").is_file()


def diff_dir(study: Path, run: Run, step: int | None = None, fp32: bool = False) -> Path:
    step = run.final_step if step is None else step
    return study / "diffs" / run.dir.name / (f"step-{step}-fp32" if fp32 else f"step-{step}")


def other_seed(run: Run, runs: list[Run]) -> Run | None:
    """The next seed's run of the same algorithm and precision (cyclically), for seed-vs-seed comparisons."""
    peers = [r for r in runs if r.algo == run.algo and r.precision == run.precision]
    if len(peers) < 2:
        return None
    return peers[(peers.index(run) + 1) % len(peers)]
