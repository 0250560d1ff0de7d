"""The study's mechanism-probe stages (`rldelta probe ...`) on the grid's first run: log-probs with the
advantage-split runs, activation sparsity, and format selection from pretrain-mixture models (study/selection.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rldelta.checkpoint import open_checkpoint
from rldelta.naming import parse_param
from rldelta.probes.activations import run_activations
from rldelta.probes.logprobs import run_logprobs
from rldelta.runtime.files import ACTIVATIONS_JSON, LOGPROBS_JSON
from rldelta.study.config import StudyConfig
from rldelta.study.folders import Run
from rldelta.study.log import StudyLog
from rldelta.study.selection import formats_stage
from rldelta.train.tasks import TASKS, Arith

ACTIVATIONS_MOE = (
    "the activation probe reads a dense MLP's neurons (mlp.down_proj in every layer); a mixture-of-experts model "
    "routes each token to a few experts, so no neuron is on every token's path"
)


def _is_moe(model_dir: Path) -> bool:
    return any(parse_param(n).role == "expert" for n in open_checkpoint(model_dir).names())


def run_probes(
    cfg: StudyConfig, study: Path, base: Path, primary: Run, split: list[Run], log: StudyLog, progress: bool
) -> dict[str, Any]:
    """Each probe of cfg.probes on the first run (and the advantage-split runs); outputs in STUDY/probes/<probe>/."""
    out: dict[str, Any] = {}
    root = study / "probes"
    if "logprobs" in cfg.probes:
        d = root / "logprobs"
        if not (d / LOGPROBS_JSON).is_file():
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
    if "activations" in cfg.probes and _is_moe(base):
        out["activations_skipped"] = ACTIVATIONS_MOE
        log(f"probe activations skipped: {ACTIVATIONS_MOE}")
    elif "activations" in cfg.probes:
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
        out["formats"] = formats_stage(cfg, study, primary.seed, log, progress)
    return out


def _arith_like(task: str) -> str:
    """The activation probe's prompt ladder needs arith-style levels; other tasks are probed on arith prompts."""
    return task if issubclass(TASKS[task], Arith) else "arith"
