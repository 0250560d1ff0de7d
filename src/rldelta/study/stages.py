"""The study's cached measuring stages: base-model preparation, diffs, evals, explain, overlap, surgery, the
retrain comparison, the cause analysis and the dynamics. Each writes its files atomically and returns what is on disk when they are
already there, so a re-run redoes nothing complete. Each engine is called from exactly one place, here."""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path

import torch

from rldelta.checkpoint import open_checkpoint
from rldelta.diff import run_diff
from rldelta.explain import run_explain
from rldelta.masks import intersection, load_mask, mask_counts
from rldelta.metrics.delta import cosine_parts
from rldelta.overlap import run_overlap
from rldelta.runtime.atomic import atomic_dir, remove_scratch
from rldelta.runtime.files import EXPLAIN_JSON, OVERLAP_JSON, OVERLAP_TABLE, SUMMARY_FILE, SURGERY_JSON
from rldelta.study.config import BUILTIN_MODELS, StudyConfig, StudyError
from rldelta.study.folders import (
    Run,
    diff_complete,
    diff_dir,
    make_run,
    other_seed,
    read_json,
    short_hash,
    write_json,
)
from rldelta.study.log import StudyLog
from rldelta.surgery import run_surgery
from rldelta.train.evaluate import evaluate
from rldelta.train.models import TINY_BUILDERS, ModelError, prepare_smollm2
from rldelta.train.tasks import get_task

_FP32_SCRATCH = ".tiny-fp32-"  # prefix of the folder the tiny base is built in before its bf16 copy


def prepare_base(cfg: StudyConfig, study: Path) -> Path:
    """The base model folder: a tiny model (dense or MoE) cast to bf16, SmolLM2 prepared, or the folder the config
    names."""
    if cfg.model in TINY_BUILDERS:
        out = study / "models" / f"{cfg.model}-seed{cfg.model_seed}-bf16"
        # the scratch of a study killed while it built the base (the study's lock is held: no other writer's)
        remove_scratch(out)
        for stale in out.parent.glob(_FP32_SCRATCH + "*"):
            shutil.rmtree(stale, ignore_errors=True)
        if (out / "config.json").is_file():
            return out
        # Published RL checkpoints are bf16 and so is their base: an fp32 base against bf16 checkpoints would
        # count every rounding of the cast as a change.
        # Lazy: transformers takes seconds to import and only this branch needs it.
        from transformers import AutoModelForCausalLM, AutoTokenizer

        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=_FP32_SCRATCH) as fp32:
            TINY_BUILDERS[cfg.model](Path(fp32) / "model", seed=cfg.model_seed)
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


def _diff(
    base: Path,
    ckpt: Path,
    out: Path,
    *,
    atol: float,
    compare_dtype: str = "narrower",
    rank: bool = True,
    progress: bool,
    workers: int = 1,
) -> dict:
    if diff_complete(out):
        return read_json(out / SUMMARY_FILE)
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
        workers=workers,
    )


def diffs_of_run(run: Run, base: Path, study: Path, cfg: StudyConfig, progress: bool, workers: int = 1) -> None:
    """`rldelta diff --save-mask` of every saved checkpoint of `run` (and of its fp32 masters) against the base.

    `workers`: diff processes; the output is the same for any number (the diff engine's own guarantee).
    """
    for step in run.config.save_step_list:
        _diff(base, run.ckpt(step), diff_dir(study, run, step), atol=cfg.atol, progress=progress, workers=workers)
        if run.precision == "fp32" and run.ckpt(step, fp32=True).is_dir():
            # The fp32 master compared in fp32: every entry the optimizer moved at all, before bf16 rounding.
            _diff(
                base,
                run.ckpt(step, fp32=True),
                diff_dir(study, run, step, fp32=True),
                atol=cfg.atol,
                compare_dtype="fp32",
                rank=step == run.final_step,
                progress=progress,
                workers=workers,
            )


def evaluate_model(model_dir: Path, name: str, study: Path, cfg: StudyConfig) -> dict:
    """Greedy accuracy and per-problem scores of one model on the study's test problems
    (STUDY/evals/<name>-<hash of the settings>.json)."""
    settings = {
        "task": cfg.task,
        "n": cfg.eval_n,
        "seed": cfg.eval_seed,
        "difficulty": cfg.difficulty,
        "max_new_tokens": cfg.eval_max_new_tokens,
        "pass_k": cfg.eval_pass_k,
        "scores": 1,  # the per-problem scores' version: an evaluation without them is redone
    }
    out = study / "evals" / f"{name}-{short_hash(settings, 8)}.json"
    if out.is_file():
        return read_json(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return evaluate(
        model_dir,
        get_task(cfg.task),
        cfg.eval_n,
        seed=cfg.eval_seed,
        difficulty=cfg.difficulty,
        batch_size=cfg.eval_batch_size,
        max_new_tokens=cfg.eval_max_new_tokens,
        pass_k=cfg.eval_pass_k,
        show_progress=False,
        out=out,
    )


def overlap_of_runs(runs: list[Run], study: Path, log: StudyLog, progress: bool) -> dict | None:
    """`rldelta overlap` of the final changed-masks of `runs` (None for fewer than two runs)."""
    if len(runs) < 2:
        return None
    ov_dir = study / "overlap"
    if (ov_dir / OVERLAP_JSON).is_file() and (ov_dir / OVERLAP_TABLE).is_file():
        return read_json(ov_dir / OVERLAP_JSON)
    log("overlap of the final changed sets")
    return run_overlap([diff_dir(study, r) for r in runs], ov_dir, progress=progress, plot=False)


def explain_run(run: Run, runs: list[Run], base: Path, study: Path, cfg: StudyConfig, progress: bool) -> dict:
    """`rldelta explain` of the run's final diff, with its fp32 master and the next seed's diff when there are."""
    out = study / "explain" / run.dir.name
    if (out / EXPLAIN_JSON).is_file():
        return read_json(out / EXPLAIN_JSON)
    other = other_seed(run, runs)
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


def surgery_evals(
    primary: Run, targets: list[Run], base: Path, study: Path, cfg: StudyConfig, log: StudyLog
) -> list[dict]:
    """patch/revert of every target with the primary run's final changed-mask, and with random controls."""
    mask = diff_dir(study, primary)
    rows = []
    for target in targets:
        for kind in ("patch", "revert"):
            for control in [None] + [f"random:{s}" for s in range(cfg.controls)]:
                name = f"{kind}-{target.dir.name}-{'mask' if control is None else control.replace(':', '')}"
                out = study / "surgery" / name
                rec_file = study / "surgery" / f"{name}.json"
                if rec_file.is_file():  # written last, once evaluated
                    rows.append(read_json(rec_file))
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
                totals = read_json(out / SURGERY_JSON)["totals"]
                ev = evaluate_model(out, f"surgery-{name}", study, cfg)
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
                    "problems": ev["problems"],
                }
                write_json(rec_file, rec)
                if not cfg.keep_surgery_models:
                    shutil.rmtree(out, ignore_errors=True)  # the eval JSON is the record; a model copy is large
                rows.append(rec)
    return rows


# Tolerances of the parameter-level comparison of the retrain with the full run (arXiv:2505.11711, Conjecture 1:
# 94.0% (DPO) and 90.5% (PRIME) of the entries equal at 1e-5, 100% at 1e-4); None: bitwise.
EQUAL_AT = {"bitwise": None, "1e-5": 1e-5, "1e-4": 1e-4}


def compare_retrain(full: Run, retrain: Run, base: Path, study: Path) -> dict:
    """How much of the full run the subnetwork-only run reproduced: changed sets and the direction of Δ."""
    out = study / "compare" / f"{retrain.dir.name}.json"
    if out.is_file():
        return read_json(out)
    a, r = load_mask(diff_dir(study, full)), load_mask(diff_dir(study, retrain))
    size_a, size_r = mask_counts(a).total_count, mask_counts(r).total_count
    inter = mask_counts(intersection(a, r)).total_count
    b_ck = open_checkpoint(base)
    fa, fr = open_checkpoint(full.ckpt(full.final_step)), open_checkpoint(retrain.ckpt(retrain.final_step))
    dot = na = nr = 0.0
    equal = dict.fromkeys(EQUAL_AT, 0)
    numel = 0
    for n in a.names():
        w, x, y = b_ck.get(n).float(), fa.get(n), fr.get(n)
        d, p, q = cosine_parts(x.float() - w, y.float() - w)
        dot, na, nr = dot + d, na + p, nr + q
        gap = (x.float() - y.float()).abs()
        numel += gap.numel()
        for key, tol in EQUAL_AT.items():  # the paper's test of θ_sub vs θ_full, entry by entry
            equal[key] += int((x == y).sum()) if tol is None else int((gap <= tol).sum())
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
        **{f"equal_{key}": equal[key] / numel if numel else None for key in EQUAL_AT},
    }
    write_json(out, res)
    return res


def dynamics(run: Run, study: Path, other: Run | None = None) -> list[dict]:
    """Changed fraction, rank fraction, overlap with the final changed set and with the other seed's changed set at
    the same step, at every saved step."""
    out = study / "compare" / f"dynamics-{run.dir.name}.json"
    if out.is_file():
        return read_json(out)
    final = load_mask(diff_dir(study, run))
    size_final = mask_counts(final).total_count
    rows = []
    for step in run.config.save_step_list:
        d = diff_dir(study, run, step)
        s = read_json(d / SUMMARY_FILE)["totals"]
        m = load_mask(d)
        size = mask_counts(m).total_count
        inter = mask_counts(intersection(m, final)).total_count
        fp32 = diff_dir(study, run, step, fp32=True)
        fp32_frac = read_json(fp32 / SUMMARY_FILE)["totals"]["changed_frac"] if diff_complete(fp32) else None
        other_overlap = None
        if other is not None and diff_complete(diff_dir(study, other, step)):
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
    write_json(out, rows)
    return rows


def cause_runs(study: Path, cfg: StudyConfig, base: Path, primary: Run) -> dict[str, tuple[Run, int]]:
    """The cause analysis's arms, each a run and the step compared: SFT on the base's own correct samples, SFT on
    the same answers in a foreign style, the first run's RL with KL, and without (the first run itself at that step
    when it saved one, else a run of its own)."""
    steps = cfg.cause_steps or cfg.steps
    common = {"steps": steps, "save_steps": ""}

    def arm(kind: str, algo: str, **settings) -> Run:
        return make_run(
            study, cfg, base, algo, primary.seed, primary.precision, kind=kind, overrides={**common, **settings}
        )

    arms = {
        "sft_own": (arm("cause-sft-own", "sft", sft_style="own"), steps),
        "sft_foreign": (arm("cause-sft-foreign", "sft", sft_style="foreign"), steps),
    }
    if cfg.cause_beta > 0:
        arms["rl_kl"] = (arm("cause-rl-kl", primary.algo, beta=cfg.cause_beta), steps)
    if steps in primary.config.save_step_list:
        arms["rl_no_kl"] = (primary, steps)
    else:
        arms["rl_no_kl"] = (arm("cause-rl-no-kl", primary.algo, beta=0.0), steps)
    return arms


def cause_rows(study: Path, arms: dict[str, tuple[Run, int]]) -> list[dict]:
    """One row per arm of the cause analysis: its changed fraction, bitwise in bf16 and in the fp32 master."""
    rows = []
    for name, (run, step) in arms.items():
        t = read_json(diff_dir(study, run, step) / SUMMARY_FILE)["totals"]
        fp32 = diff_dir(study, run, step, fp32=True)
        rows.append(
            {
                "arm": name,
                "run": run.label,
                "algo": run.algo,
                "step": step,
                "beta": run.config.beta,
                "sft_style": run.config.sft_style if run.algo == "sft" else None,
                "changed_frac": t["changed_frac"],
                "changed_atol_frac": t["changed_atol_frac"],
                "fp32_changed_frac": read_json(fp32 / SUMMARY_FILE)["totals"]["changed_frac"]
                if diff_complete(fp32)
                else None,
            }
        )
    return rows
