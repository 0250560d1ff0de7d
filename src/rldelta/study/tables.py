"""The study's tables: every number the report shows, built from the stage outputs on disk, and their export as
Parquet and CSV (STUDY/tables/). Over 400 lines because every table is built here, one block per table, so that
what the report shows can be read off one file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from rldelta import __version__
from rldelta.atomic import atomic_write_bytes, atomic_write_parquet, json_safe
from rldelta.diff_files import SUMMARY_FILE, TENSORS_FILE
from rldelta.metrics.stats import accuracy_interval
from rldelta.probes import logprobs as lp
from rldelta.probes.activations import ACTIVATIONS_JSON, ACTIVATIONS_TABLE
from rldelta.study.config import StudyConfig
from rldelta.study.headline import headline_and_claims, recovery
from rldelta.study.layout import Run, diff_complete, diff_dir, read_json
from rldelta.study.paired_evidence import surgery_model
from rldelta.train.runfiles import METRICS

# The final subnetwork counts as fixed from the first saved step whose changed set holds this share of it.
FIXED_SHARE = 0.9


def _pair_kind(a: Run, b: Run) -> str:
    """What two runs of an overlap pair differ in: seed, algorithm, precision, or several (mixed)."""
    same = (a.algo == b.algo, a.seed == b.seed, a.precision == b.precision)
    if same == (True, False, True):
        return "seed"
    if same == (False, True, True):
        return "algorithm"
    if same == (True, True, False):
        return "precision"
    return "mixed"


PROBLEM_COLUMNS = [
    "model",
    "problem",
    "difficulty",
    "correct",
    "ref_logprob",
    "ref_logprob_per_token",
    "pass_rate",
]


def problems_table(evals: dict, surgery: list[dict]) -> pd.DataFrame:
    """One row per evaluated model and test problem: the paired scores every comparison of models reads."""
    rows = [{"model": name, **p} for name, ev in evals.items() for p in ev.get("problems", [])]
    rows += [{"model": surgery_model(rec), **p} for rec in surgery for p in rec.get("problems", [])]
    return pd.DataFrame(rows, columns=PROBLEM_COLUMNS)


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
    cause: list[dict] | None = None,
) -> dict[str, pd.DataFrame]:
    """Every table of the report, from the stage outputs on disk. The report shows nothing that is not in here."""
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
        s = read_json(diff_dir(study, r) / SUMMARY_FILE)
        fp32 = diff_dir(study, r, fp32=True)
        fs = read_json(fp32 / SUMMARY_FILE)["totals"] if diff_complete(fp32) else {}
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

    # overlap.json names the diffs by the paths they had when it was written: matched on the run's folder and step,
    # so a study that was moved or copied still reads
    by_path = {diff_dir(study, r).parts[-2:]: r for r in runs}
    ov_rows = []
    for p in (overlap or {}).get("pairs", []):
        a, b = by_path[Path(p["a"]).parts[-2:]], by_path[Path(p["b"]).parts[-2:]]
        matched, r95, m95 = None, [None, None], [None, None]
        ea = explains.get(a.label, {}).get("magnitude_matched_overlap") or {}
        if ea.get("b") == p["b"]:
            matched = ea.get("magnitude_matched")
            r95, m95 = ea.get("random_95") or r95, ea.get("magnitude_matched_95") or m95
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
                "random_lo": r95[0],
                "random_hi": r95[1],
                "magnitude_matched_overlap": matched,
                "matched_lo": m95[0],
                "matched_hi": m95[1],
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
            "random_lo",
            "random_hi",
            "magnitude_matched_overlap",
            "matched_lo",
            "matched_hi",
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
    for row in acc_rows:
        row["accuracy_lo"], row["accuracy_hi"] = accuracy_interval(row["accuracy"], row["n"])
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
                "accuracy_lo": accuracy_interval(rec["accuracy"], rec["n"])[0],
                "accuracy_hi": accuracy_interval(rec["accuracy"], rec["n"])[1],
                "n": rec["n"],
                "tuned_accuracy": tuned_acc[rec["target"]],
                "base_accuracy": base_acc,
                "recovery": recovery(rec["accuracy"], base_acc, tuned_acc[rec["target"]]),
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
            "accuracy_lo",
            "accuracy_hi",
            "n",
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
                "n": evals[retrain.label]["n"],
                "recovery": recovery(evals[retrain.label]["accuracy"], base_acc, tuned_acc[compare["full"]]),
            }
        )
    tables["retrain"] = pd.DataFrame(ret)
    tables["problems"] = problems_table(evals, surgery)
    tables["dynamics"] = pd.DataFrame(dynamics)
    tables["cause"] = pd.DataFrame(
        cause or [],
        columns=[
            "arm",
            "run",
            "algo",
            "step",
            "beta",
            "sft_style",
            "changed_frac",
            "changed_atol_frac",
            "fp32_changed_frac",
        ],
    )
    tables["headline"], tables["claims"] = headline_and_claims(cfg, tables, runs)
    return tables


def probe_tables(probes: dict[str, Any], dynamics: list[dict]) -> dict[str, pd.DataFrame]:
    """The probes' tables for the report, read from their output folders; and when each run's subnetwork was fixed."""
    tables: dict[str, pd.DataFrame] = {}
    verdicts: list[dict] = []
    if "logprobs" in probes:
        d = probes["logprobs"]
        s = read_json(d / lp.SUMMARY_FILE)
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
    numbers: list[tuple] = []
    if "probe_logprobs" in tables:
        lpt = tables["probe_logprobs"]
        full = lpt[~lpt["run"].isin(["base", "positive", "negative"])]
        if len(full):
            last = full[full["step"] == full["step"].max()].iloc[0]
            numbers += [
                (
                    "probe_suppression",
                    "suppression: fall of log p(wrong), final step (nats)",
                    last["suppression"],
                    "num",
                ),
                (
                    "probe_amplification",
                    "amplification: rise of log p(correct), final step (nats)",
                    last["amplification"],
                    "num",
                ),
            ]
    if "activations" in probes:
        d = probes["activations"]
        s = read_json(d / ACTIVATIONS_JSON)
        c = s.get("correlation") or {}
        numbers += [
            (
                "probe_within_spearman",
                "neurons: within-layer Spearman, activation frequency vs changed fraction",
                c.get("mean_within_layer_spearman"),
                "num",
            ),
            (
                "probe_partial_spearman",
                "… the same with the neuron's mean |w| held fixed (partial Spearman)",
                (c.get("magnitude_controlled") or {}).get("spearman"),
                "num",
            ),
            ("probe_spearman_threshold", "… |Spearman| a verdict needs", c.get("verdict_threshold"), "num"),
        ]
        tables["probe_activations"] = pd.read_parquet(d / ACTIVATIONS_TABLE)
        verdicts.append({"probe": "activation sparsity vs difficulty", "verdict": s["sparsity_verdict"]})
        if s.get("verdict"):
            verdicts.append({"probe": "neurons RL edits", "verdict": s["verdict"]})
    if "activations_skipped" in probes:
        verdicts.append(
            {"probe": "activation sparsity vs difficulty", "verdict": f"not run: {probes['activations_skipped']}"}
        )
    if "formats" in probes:
        f = probes["formats"]
        tables["probe_formats"] = f["table"]
        numbers.append(
            (
                "probe_format_winner_share",
                "format selection: the winner's share at the end",
                f.get("winner_share"),
                "pct",
            )
        )
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
    tables["probe_numbers"] = pd.DataFrame(numbers, columns=["key", "label", "value", "format"])
    return tables


def export_tables(tables: dict[str, pd.DataFrame], out: Path) -> None:
    """Each table as Parquet and CSV (atomically)."""
    out.mkdir(parents=True, exist_ok=True)
    for name, df in tables.items():
        atomic_write_parquet(df, out / f"{name}.parquet")
        atomic_write_bytes(out / f"{name}.csv", df.to_csv(index=False).encode())
