"""The study's tables: every number the report shows, built from the stage outputs on disk (one builder per table),
and their export as Parquet and CSV (STUDY/tables/)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from rldelta import __version__
from rldelta.metrics.stats import accuracy_interval
from rldelta.runtime.atomic import atomic_write_bytes, atomic_write_parquet, json_safe
from rldelta.runtime.files import METRICS_FILE, SUMMARY_FILE, TENSORS_FILE
from rldelta.study.config import StudyConfig
from rldelta.study.folders import Run, diff_complete, diff_dir, read_json
from rldelta.study.headline import headline_and_claims, recovery
from rldelta.study.paired_evidence import surgery_model


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


def setup_table(cfg: StudyConfig, base: Path, runs: list[Run]) -> pd.DataFrame:
    """What was run: the question, the config and every setting a reader needs to repeat it."""
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
    return pd.DataFrame(setup, columns=["setting", "value"])


def _run_row(study: Path, r: Run, evals: dict, explains: dict) -> dict:
    """One run's row of the runs table: its diff's totals, its fp32 master's and its null models' numbers."""
    s = read_json(diff_dir(study, r) / SUMMARY_FILE)
    fp32 = diff_dir(study, r, fp32=True)
    fs = read_json(fp32 / SUMMARY_FILE)["totals"] if diff_complete(fp32) else {}
    ex = explains.get(r.label, {})
    master = ex.get("master") or {}
    mo = ex.get("magnitude_matched_overlap") or {}
    return {
        "run": r.label,
        "kind": r.kind,
        "algo": r.algo,
        "seed": r.seed,
        "precision": r.precision,
        "steps": r.final_step,
        "accuracy": evals[r.label]["accuracy"],
        "base_accuracy": evals["base"]["accuracy"],
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


def _module_rows(study: Path, r: Run, explains: dict) -> list[dict]:
    """One row per module kind of a run's diff, with the random-sparse rank null of that kind."""
    s = read_json(diff_dir(study, r) / SUMMARY_FILE)
    null = explains.get(r.label, {}).get("rank_null") or {}
    return [
        {
            "run": r.label,
            "module": mod,
            "numel": m["numel"],
            "changed_frac": m["changed_frac"],
            "changed_atol_frac": m["changed_atol_frac"],
            "mean_rank_frac": m["mean_rank_frac"],
            "null_rank_frac": (null.get(mod) or {}).get("null_rank_frac"),
        }
        for mod, m in s["by_module"].items()
    ]


def _tensor_rows(study: Path, r: Run) -> list[dict]:
    """One row per tensor of a run's diff."""
    t = pd.read_parquet(diff_dir(study, r) / TENSORS_FILE)
    return [
        {
            "run": r.label,
            "tensor": row.name,
            "layer": None if pd.isna(row.layer) else int(row.layer),
            "module": row.module,
            "numel": int(row.numel),
            "changed_frac": row.changed_frac,
            "rank_frac": json_safe(row.rank_frac),
        }
        for row in t.itertuples()
    ]


def _decile_rows(r: Run, explains: dict) -> list[dict]:
    """A run's changed fraction per |w| decile, in bf16 and in the fp32 master."""
    ex = explains.get(r.label, {})
    rounding = ex.get("rounding") or {}
    fp32_dec = (ex.get("master") or {}).get("fp32_changed_frac_by_decile") or [None] * 10
    return [
        {"run": r.label, "decile": i + 1, "changed_frac": v, "fp32_changed_frac": fp32_dec[i]}
        for i, v in enumerate(rounding.get("changed_frac_by_decile") or [])
    ]


def diff_tables(study: Path, all_runs: list[Run], evals: dict, explains: dict) -> dict[str, pd.DataFrame]:
    """The runs, modules, tensors and deciles tables: what each run's diff and null models found."""
    return {
        "runs": pd.DataFrame([_run_row(study, r, evals, explains) for r in all_runs]),
        "modules": pd.DataFrame([row for r in all_runs for row in _module_rows(study, r, explains)]),
        "tensors": pd.DataFrame([row for r in all_runs for row in _tensor_rows(study, r)]),
        "deciles": pd.DataFrame([row for r in all_runs for row in _decile_rows(r, explains)]),
    }


OVERLAP_COLUMNS = [
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
]


def overlap_table(study: Path, runs: list[Run], overlap: dict | None, explains: dict) -> pd.DataFrame:
    """Every ordered pair of runs: overlap, its random and magnitude-matched expectations, and what they differ in."""
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
    return pd.DataFrame(ov_rows, columns=OVERLAP_COLUMNS)


def accuracy_table(all_runs: list[Run], evals: dict) -> pd.DataFrame:
    """The base and every run: greedy accuracy with its Wilson interval, and format rate."""
    acc_rows = [
        {
            "model": "base",
            "kind": "base",
            "accuracy": evals["base"]["accuracy"],
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
    return pd.DataFrame(acc_rows)


def training_curves_table(all_runs: list[Run]) -> pd.DataFrame:
    """Each run's training accuracy and mean reward, step by step, from its metrics file."""
    curve_rows = []
    for r in all_runs:
        mp = r.dir / METRICS_FILE
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
    return pd.DataFrame(curve_rows, columns=["run", "step", "train_accuracy", "reward_mean"])


SURGERY_COLUMNS = [
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
]


def surgery_table(surgery: list[dict], evals: dict, runs: list[Run]) -> pd.DataFrame:
    """Every patch and revert (and their random controls): accuracy, interval and the share of RL's gain recovered."""
    base_acc = evals["base"]["accuracy"]
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
    return pd.DataFrame(sur_rows, columns=SURGERY_COLUMNS)


def retrain_table(compare: dict | None, retrain: Run | None, evals: dict, runs: list[Run]) -> pd.DataFrame:
    """The subnetwork-only retrain against the full run it retrains (one row, or none without a retrain)."""
    ret = []
    if compare is not None and retrain is not None:
        base_acc = evals["base"]["accuracy"]
        full_acc = {r.label: evals[r.label]["accuracy"] for r in runs}[compare["full"]]
        ret.append(
            {
                **compare,
                "accuracy_full": full_acc,
                "accuracy_retrain": evals[retrain.label]["accuracy"],
                "base_accuracy": base_acc,
                "n": evals[retrain.label]["n"],
                "recovery": recovery(evals[retrain.label]["accuracy"], base_acc, full_acc),
            }
        )
    return pd.DataFrame(ret)


CAUSE_COLUMNS = [
    "arm",
    "run",
    "algo",
    "step",
    "beta",
    "sft_style",
    "changed_frac",
    "changed_atol_frac",
    "fp32_changed_frac",
]


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
    """Every table of the report, from the stage outputs on disk. The report shows nothing that is not in here.
    A new table is one builder above and one line here."""
    all_runs = runs + ([retrain] if retrain else [])
    tables: dict[str, pd.DataFrame] = {"setup": setup_table(cfg, base, runs)}
    tables.update(diff_tables(study, all_runs, evals, explains))
    tables["overlap"] = overlap_table(study, runs, overlap, explains)
    tables["accuracy"] = accuracy_table(all_runs, evals)
    tables["training_curves"] = training_curves_table(all_runs)
    tables["surgery"] = surgery_table(surgery, evals, runs)
    tables["retrain"] = retrain_table(compare, retrain, evals, runs)
    tables["problems"] = problems_table(evals, surgery)
    tables["dynamics"] = pd.DataFrame(dynamics)
    tables["cause"] = pd.DataFrame(cause or [], columns=CAUSE_COLUMNS)
    tables["headline"], tables["claims"] = headline_and_claims(cfg, tables, runs)
    return tables


def export_tables(tables: dict[str, pd.DataFrame], out: Path) -> None:
    """Each table as Parquet and CSV (atomically)."""
    out.mkdir(parents=True, exist_ok=True)
    for name, df in tables.items():
        atomic_write_parquet(df, out / f"{name}.parquet")
        atomic_write_bytes(out / f"{name}.csv", df.to_csv(index=False).encode())
