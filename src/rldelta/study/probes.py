"""The study's mechanism-probe stages (`rldelta probe ...`) on the grid's first run: log-probs with the
advantage-split runs, activation sparsity, and format selection from pretrain-mixture models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from rldelta.checkpoint import open_checkpoint
from rldelta.naming import parse_param
from rldelta.probes.activations import run_activations
from rldelta.probes.formats import compare_sizes, run_formats
from rldelta.probes.logprobs import run_logprobs
from rldelta.runtime.files import ACTIVATIONS_JSON, FORMATS_JSON, FORMATS_TABLE, LOGPROBS_JSON
from rldelta.study.config import StudyConfig, StudyError, formats_settings, formats_train_config
from rldelta.study.folders import Run, place_run, read_json, short_hash
from rldelta.study.log import StudyLog
from rldelta.study.runs import train_all
from rldelta.train.config import ConfigError
from rldelta.train.corpus import DEFAULT_NOISE, DEFAULT_PROPORTIONS
from rldelta.train.mixture import pretrain_mixture
from rldelta.train.sizes import SIZES
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
        out["formats"] = _formats_probe(cfg, study, primary, log, progress)
    return out


def _formats_probe(cfg: StudyConfig, study: Path, primary: Run, log: StudyLog, progress: bool) -> dict[str, Any]:
    """Pretrain each mixture model, run GRPO from it on mixarith, and classify the formats it samples."""
    f = formats_settings(cfg)
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
        model_dir = study / "models" / f"mixture-{size}-{short_hash(pre, 8)}"
        if not (model_dir / "config.json").is_file():
            log(f"pretrain the {size} mixture model ({f['pretrain_steps'] or SIZES[size].steps} steps)")
            pretrain_mixture(model_dir, **pre, progress=progress)
        try:
            tc = formats_train_config(f, model=str(model_dir), seed=primary.seed)
        except ConfigError as e:
            raise StudyError(f"{cfg.source}: formats: {e}") from None
        run_dir = place_run(study, f"formats-{size}", tc, model=model_dir.name)
        run = Run(f"formats-{size}", "grpo", primary.seed, tc.precision, tc, run_dir, kind="formats")
        train_all([run], backend="local", workers=1, ray_address=None, log=log, progress=progress)
        d = study / "probes" / "formats" / size
        if (d / FORMATS_JSON).is_file():
            summary = read_json(d / FORMATS_JSON)
        else:
            log(f"probe formats on {run.label}")
            summary = run_formats(run_dir, d)
        summaries.append(summary)
        frames.append(pd.read_parquet(d / FORMATS_TABLE).assign(model=size))
    verdicts = {s: summary["verdict"] for s, summary in zip(f["sizes"], summaries)}
    if len(summaries) > 1:
        verdicts["sizes"] = compare_sizes(summaries)["verdict"]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return {
        "table": table[["model", *[c for c in table.columns if c != "model"]]],
        "verdicts": verdicts,
        "winner_share": summaries[0].get("winner_share_end") if summaries else None,
    }


def _arith_like(task: str) -> str:
    """The activation probe's prompt ladder needs arith-style levels; other tasks are probed on arith prompts."""
    return task if issubclass(TASKS[task], Arith) else "arith"
