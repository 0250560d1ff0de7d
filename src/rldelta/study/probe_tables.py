"""The probes' tables for the report, read from their output folders (one reader per probe), and when each run's
subnetwork was fixed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from rldelta.runtime.files import (
    ACTIVATIONS_JSON,
    ACTIVATIONS_TABLE,
    ADVANTAGES_TABLE,
    LOGPROBS_JSON,
    LOGPROBS_TABLE,
    PHASES_TABLE,
)
from rldelta.study.folders import read_json

# The final subnetwork counts as fixed from the first saved step whose changed set holds this share of it.
FIXED_SHARE = 0.9


def _logprobs_probe(d: Path, tables: dict, verdicts: list[dict], numbers: list[tuple]) -> None:
    """The log-prob probe's tables, its verdicts and the final step's suppression and amplification."""
    s = read_json(d / LOGPROBS_JSON)
    tables["probe_logprobs"] = pd.read_parquet(d / LOGPROBS_TABLE).drop(columns=["checkpoint"])
    tables["probe_phases"] = pd.read_parquet(d / PHASES_TABLE)
    if (d / ADVANTAGES_TABLE).is_file():
        tables["probe_advantages"] = pd.read_parquet(d / ADVANTAGES_TABLE).drop(columns=["checkpoint"])
    verdicts += [
        {"probe": "suppression vs amplification", "verdict": s["verdict_logprobs"]},
        {"probe": "two phases", "verdict": s["verdict_phases"]},
    ]
    if "verdict_advantages" in s:
        verdicts.append({"probe": "positive vs negative advantages", "verdict": s["verdict_advantages"]})
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


def _activations_probe(d: Path, tables: dict, verdicts: list[dict], numbers: list[tuple]) -> None:
    """The activation probe's table, its verdicts and the neuron correlations."""
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


def _formats_probe(f: dict, tables: dict, verdicts: list[dict], numbers: list[tuple]) -> None:
    """The format-selection probe's table, its verdicts and the winner's final share."""
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
    # The selection stage's claims, pretraining and steering (study/selection.py), when it ran them.
    for key, name in (
        ("claims", "selection_claims"),
        ("pretraining", "selection_pretraining"),
        ("steering", "steering"),
    ):
        if key in f:
            tables[name] = f[key]
    verdicts += [{"probe": "Echo Chamber claim", "verdict": v} for v in f.get("claim_lines", [])]
    verdicts += [{"probe": "steering instead of RL", "verdict": v} for v in f.get("answer", [])]


def subnetwork_fixed_table(dynamics: list[dict]) -> pd.DataFrame:
    """Per run, the first saved step whose changed set holds FIXED_SHARE of the final one."""
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
    return pd.DataFrame(fixed, columns=["run", "fixed_step", "final_step", "fixed_at_frac_of_training"])


def probe_tables(probes: dict[str, Any], dynamics: list[dict]) -> dict[str, pd.DataFrame]:
    """The probes' tables for the report, read from their output folders; and when each run's subnetwork was fixed."""
    tables: dict[str, pd.DataFrame] = {}
    verdicts: list[dict] = []
    numbers: list[tuple] = []
    if "logprobs" in probes:
        _logprobs_probe(probes["logprobs"], tables, verdicts, numbers)
    if "activations" in probes:
        _activations_probe(probes["activations"], tables, verdicts, numbers)
    if "activations_skipped" in probes:
        verdicts.append(
            {"probe": "activation sparsity vs difficulty", "verdict": f"not run: {probes['activations_skipped']}"}
        )
    if "formats" in probes:
        _formats_probe(probes["formats"], tables, verdicts, numbers)
    tables["subnetwork_fixed"] = subnetwork_fixed_table(dynamics)
    tables["probe_verdicts"] = pd.DataFrame(verdicts, columns=["probe", "verdict"])
    tables["probe_numbers"] = pd.DataFrame(numbers, columns=["key", "label", "value", "format"])
    return tables
