"""The study's format-selection stage (`probes = ["formats"]`): "selection or creation?".

Per size of [formats]: a mixture model pretrained from scratch (train/mixture.py; with `plateau`, for as many
steps as its loss curve pays for), and from it one RL run per algorithm and seed on mixarith, each probed with
`probe formats`. Over all runs, the Echo Chamber claims (probes/selection.py: dominance within the first epoch, the
winner's origin, the winner against size). With `steer`, per size, the steering sweeps of probes/steering_sweep.py
(prompt, activation vector, SFT on k examples) toward the first seed's GRPO winner and toward the most frequent
pretraining format it did not pick, each set against that run's compute and changed set.

Outputs under STUDY/probes/formats/: <label>/ (each run's formats probe, labelled by run_label), claims/claims.json,
steer-<size>-<format>-<hash of its settings and RL run>/ (each sweep).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from rldelta.probes.formats import compare_sizes, run_formats
from rldelta.probes.selection import CLAIMS_FILE, run_claims
from rldelta.probes.steering_sweep import SWEEP_JSON, SWEEP_TABLE, best_interventions, steer_sweep
from rldelta.runtime.files import FORMATS_JSON, FORMATS_TABLE
from rldelta.study.config import StudyConfig, StudyError
from rldelta.study.folders import Run, place_run, read_json, short_hash
from rldelta.study.formats_config import formats_rl_steps, formats_settings, formats_train_config, sweep_settings
from rldelta.study.log import StudyLog
from rldelta.study.runs import train_all
from rldelta.train.answer_formats import FORMAT_NAMES
from rldelta.train.config import ConfigError
from rldelta.train.corpus import DEFAULT_NOISE, DEFAULT_PROPORTIONS
from rldelta.train.mixture import pretrain_mixture, read_mixture
from rldelta.train.sizes import SIZES

PRESET_MINUTES = 29  # `rldelta study --preset formats` from scratch on 2 cores, measured (docs/formats.md)
MAJORITY = 0.5  # an intervention "picks" its format when the share's 95% interval lies above this


def run_label(size: str, algo: str, seed: int | None = None) -> str:
    """A format-selection run's name in tables and folders: the size for GRPO, size-algo for another algorithm,
    and -s<seed> after it for every seed but the first (None)."""
    label = size if algo == "grpo" else f"{size}-{algo}"
    return label if seed is None else f"{label}-s{seed}"


def mixture_model(cfg: StudyConfig, f: dict[str, Any], study: Path, size: str, log: StudyLog, progress: bool) -> Path:
    """STUDY/models/mixture-<size>-<hash>: the size's mixture model, pretrained unless a finished one is there."""
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
    if f["plateau"]:  # only then: folders of models trained before the option existed keep their names
        pre["plateau"] = True
    model_dir = study / "models" / f"mixture-{size}-{short_hash(pre, 8)}"
    if not (model_dir / "config.json").is_file():
        steps = f["pretrain_steps"] or SIZES[size].steps
        budget = f"to its loss plateau (cap {steps} steps)" if f["plateau"] else f"{steps} steps"
        log(f"pretrain the {size} mixture model, {budget}")
        pretrain_mixture(model_dir, **pre, progress=progress)
    return model_dir


def rl_run(cfg: StudyConfig, f: dict[str, Any], study: Path, model_dir: Path, size: str, algo: str, seed: int) -> Run:
    """The RL run of `algo` and `seed` from the size's mixture model (its folder named by its config); its label
    is run_label's, the first seed's without the seed."""
    try:
        tc = formats_train_config(f, model=str(model_dir), seed=seed, algo=algo)
    except ConfigError as e:
        raise StudyError(f"{cfg.source}: formats: {e}") from None
    label = run_label(size, algo, None if seed == f["seeds"][0] else seed)
    return Run(
        label,
        algo,
        seed,
        tc.precision,
        tc,
        place_run(study, f"formats-{label}", tc, model=model_dir.name),
        kind="formats",
    )


def probe_run(run: Run, out: Path, log: StudyLog) -> dict[str, Any]:
    """The formats probe of one run (read back when it is done)."""
    if (out / FORMATS_JSON).is_file():
        return read_json(out / FORMATS_JSON)
    log(f"probe formats on {run.label}")
    return run_formats(run.dir, out)


def steering_targets(summary: dict[str, Any], record: dict[str, Any]) -> list[str]:
    """Where to steer a model: the GRPO run's winner, and the most frequent pretraining format RL did not pick
    (when RL's winner is no trained format, only the most frequent one)."""
    shares = record.get("corpus", {}).get("shares", {})
    by_share = sorted(FORMAT_NAMES, key=lambda k: (-shares.get(k, 0.0), FORMAT_NAMES.index(k)))
    winner = summary.get("winner")
    if winner not in FORMAT_NAMES:
        return by_share[:1]
    return [winner, next(k for k in by_share if k != winner)]


def steer_model(
    f: dict[str, Any], study: Path, size: str, model_dir: Path, run: Run, summary: dict, log: StudyLog
) -> list[dict[str, Any]]:
    """The steering sweeps of one mixture model toward each of its targets; one dict per sweep."""
    out = []
    for fmt in steering_targets(summary, read_mixture(model_dir) or {}):
        # Named by its settings and the RL run it is set against: a changed sweep is measured again, not reused.
        ident = short_hash({"steering": f["steering"], "run": run.dir.name}, 8)
        d = study / "probes" / "formats" / f"steer-{size}-{fmt}-{ident}"
        if not (d / SWEEP_JSON).is_file():
            log(f"steer the {size} model toward {fmt} (prompt, activation vector, SFT), against {run.label}")
            settings = sweep_settings(f["steering"], seed=run.seed)
            steer_sweep(model_dir, fmt, d, settings=settings, rl_run=run.dir, log=lambda line: log(f"  {line}"))
        out.append({"size": size, "format": fmt, "rl_winner": fmt == summary.get("winner"), "dir": d})
    return out


def formats_stage(cfg: StudyConfig, study: Path, seed: int, log: StudyLog, progress: bool) -> dict[str, Any]:
    """Pretrain, RL, probe, claims and (with `steer`) steering, as the module docstring says; the probe's
    tables and verdicts for the report."""
    f = formats_settings(cfg)
    f["seeds"] = f["seeds"] or [seed]
    root = study / "probes" / "formats"
    log(plan_line(f))
    runs, summaries, sweeps, pretraining = [], [], [], []
    for size in f["sizes"]:
        model_dir = mixture_model(cfg, f, study, size, log, progress)
        pretraining.append(pretraining_row(size, read_mixture(model_dir) or {}))
        size_runs = [rl_run(cfg, f, study, model_dir, size, a, s) for s in f["seeds"] for a in f["algorithms"]]
        train_all(size_runs, backend="local", workers=1, ray_address=None, log=log, progress=progress)
        for run in size_runs:
            summaries.append(probe_run(run, root / run.label, log) | {"label": run.label})
            runs.append((size, run))
        if f["steer"]:
            # formats_settings has checked that a GRPO run is there to steer against: the first seed's
            run, summary = next((r, s) for r, s in zip(size_runs, summaries[-len(size_runs) :]) if r.algo == "grpo")
            sweeps += steer_model(f, study, size, model_dir, run, summary, log)
    return selection_results(f, root, runs, summaries, sweeps, pretraining, log)


def plan_line(f: dict[str, Any]) -> str:
    """What the stage is about to do, said up front: the long parts and what the formats preset takes."""
    sizes, algos, seeds = f["sizes"], f["algorithms"], f["seeds"]
    budget = (
        f"to a loss plateau, at most {f['pretrain_steps'] or 'the size default'} steps"
        if f["plateau"]
        else "fixed steps"
    )
    line = (
        f"format selection: {len(sizes)} mixture model(s) ({', '.join(sizes)}; {budget}), {len(sizes) * len(algos) * len(seeds)} RL "
        f"run(s) of {formats_rl_steps(f)} steps ({', '.join(algos)}; seeds {', '.join(map(str, seeds))})"
    )
    if f["steer"]:
        line += (
            f", steering sweeps toward 2 formats per model (the formats preset: about {PRESET_MINUTES} min on 2 cores)"
        )
    return line


def pretraining_row(size: str, record: dict[str, Any]) -> dict[str, Any]:
    """One mixture model as the report's pretraining table shows it."""
    formats = record.get("eval", {}).get("formats", {})
    plateau = record.get("plateau") or {}
    row = {
        "size": size,
        "parameters": record.get("parameters"),
        "budget": record.get("budget", "steps"),
        "steps": record.get("steps_done"),
        "step_cap": record.get("steps"),
        "final_loss": record.get("final_loss"),
        "plateau": plateau.get("text"),
        "train_minutes": record.get("train_minutes"),
    }
    for name in FORMAT_NAMES:
        row[f"{name}_corpus"] = record.get("corpus", {}).get("shares", {}).get(name)
        row[f"{name}_sampled"] = formats.get(name, {}).get("share")
        row[f"{name}_accuracy"] = formats.get(name, {}).get("accuracy")
    return row


def selection_results(f, root: Path, runs, summaries, sweeps, pretraining, log: StudyLog) -> dict[str, Any]:
    """The stage's tables and verdicts: format shares, claims, pretraining, steering."""
    frames = [pd.read_parquet(root / run.label / FORMATS_TABLE).assign(model=run.label) for _, run in runs]
    table = pd.concat(frames, ignore_index=True)
    verdicts = {run.label: s["verdict"] for (_, run), s in zip(runs, summaries)}
    if len(f["sizes"]) > 1:
        first = [s for (_, r), s in zip(runs, summaries) if r.algo == f["algorithms"][0] and r.seed == f["seeds"][0]]
        verdicts["sizes"] = compare_sizes(first)["verdict"]
    out: dict[str, Any] = {
        "table": table[["model", *[c for c in table.columns if c != "model"]]],
        "verdicts": verdicts,
        "winner_share": summaries[0].get("winner_share_end") if summaries else None,
    }
    if len(runs) > 1 or f["steer"] or f["plateau"]:
        log("the Echo Chamber claims over the format-selection runs")
        claims = _claims(root, runs)
        out["claims"] = claims_table(claims, runs)
        out["claim_lines"] = [
            f"{r['run'] if r['run'] != 'all' else r['algo']}: {r['text']}" for r in out["claims"].to_dict("records")
        ]
        out["pretraining"] = pd.DataFrame(pretraining)
    if sweeps:
        out["steering"] = steering_table(sweeps)
        out["answer"] = steering_answers(out["steering"])
    return out


def _claims(root: Path, runs) -> dict[str, Any]:
    """claims.json of these runs: reused only when it was read off the same run folders (a run added, e.g. a seed,
    makes it stale)."""
    d, dirs = root / "claims", [r.dir for _, r in runs]
    if (d / CLAIMS_FILE).is_file() and read_json(d / CLAIMS_FILE).get("inputs") == [str(x) for x in dirs]:
        return read_json(d / CLAIMS_FILE)
    return run_claims(dirs, d)


def claims_table(claims: dict[str, Any], runs) -> pd.DataFrame:
    """One row per run: claim (a)'s outcome and numbers, claim (b)'s outcome, and the texts."""
    rows = []
    for (size, run), c in zip(runs, claims["runs"]):
        d, o = c["dominance"], c["origin"]
        rows.append(
            {
                "run": run.label,
                "size": size,
                "algo": run.algo,
                "seed": run.seed,
                "dominance": d["outcome"],
                "format": d["format"],
                "step": d["step"],
                "epoch_fraction": d["epoch_fraction"],
                "share": d["share"],
                "epoch_covered": d["covered"],
                "origin": o["outcome"],
                "text": f"{d['text']}; {o['text']}",
            }
        )
    for size in claims["sizes"]:
        rows.append(
            {"run": "all", "algo": size["algo"], "dominance": None, "origin": size["outcome"], "text": size["text"]}
        )
    return pd.DataFrame(rows)


def steering_table(sweeps: list[dict[str, Any]]) -> pd.DataFrame:
    """Every sweep's rows (steering.parquet) with its size, target and whether the target is RL's winner."""
    frames = [
        pd.read_parquet(s["dir"] / SWEEP_TABLE).assign(size=s["size"], target=s["format"], rl_winner=s["rl_winner"])
        for s in sweeps
    ]
    df = pd.concat(frames, ignore_index=True)
    return df[["size", "target", "rl_winner", *[c for c in df.columns if c not in ("size", "target", "rl_winner")]]]


def steering_answers(df: pd.DataFrame) -> list[str]:
    """Per size and target, the answer to "which intervention picks it at what share of RL's compute"."""
    lines = []
    for (size, target), sub in df.groupby(["size", "target"], sort=False):
        rows = sub.to_dict("records")
        rl = next((r for r in rows if r["method"] == "rl"), None)
        who = "RL's winner" if rows[0]["rl_winner"] else "a format RL did not pick"
        rl_text = f"RL (GRPO) ends at {rl['share']:.2f}" if rl else "no RL run"
        wins = best_interventions(rows, MAJORITY)
        if wins:
            w = wins[0]
            lines.append(
                f"{size} → {target} ({who}): cheapest majority is {w['method']} ({w['setting']}): share "
                f"{w['share']:.2f} [{w['share_low']:.2f}, {w['share_high']:.2f}], accuracy {w['accuracy']:.2f}, at "
                f"{_pct(w['share_of_rl_flops'])} of RL's FLOPs; {rl_text}"
            )
        else:
            best = max((r for r in rows if r["method"] != "rl"), key=lambda r: r["share"])
            lines.append(
                f"{size} → {target} ({who}): no intervention makes it a majority (best {best['method']} "
                f"({best['setting']}): {best['share']:.2f} [{best['share_low']:.2f}, {best['share_high']:.2f}]); "
                f"{rl_text}"
            )
    return lines


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2%}" if x >= 0.0001 else f"{x:.1e}"
