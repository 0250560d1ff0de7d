"""The paired evidence behind the surgery and retrain verdicts, from the per-problem table.

Every model of a study answers the same test problems, so each comparison lines two models up problem by problem:
RL's gain (tuned − base), the share of it a patched model keeps or a reverted one loses, the mask against its
random-mask controls, the retrain against the full run. Pure: tables in, numbers out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from rldelta.metrics.paired import gain_share, mcnemar_exact, paired_difference

SCORE_NAMES = {
    "ref_logprob": "log p of the reference answer (nats)",
    "pass_rate": "pass rate over sampled completions",
    "correct": "greedy correctness (0/1)",
}


def removed_share(kept: dict) -> dict:
    """A revert's share of RL's change removed, from gain_share's share it keeps (1 − share, its interval flipped)."""
    return {**kept, "share": 1 - kept["share"], "lo": 1 - kept["hi"], "hi": 1 - kept["lo"]}


def surgery_model(rec: dict) -> str:
    """The name of a surgery's model in the per-problem table: kind:target:control."""
    return f"{rec['kind']}:{rec['target']}:{rec['control']}"


@dataclass(frozen=True)
class SurgeryEvidence:
    """Paired numbers of one surgery kind (patch or revert) pooled over its targets' problems."""

    score: str
    gain: dict  # paired_difference(tuned, base)
    share: dict  # gain_share of the mask's model (a revert: the share it keeps, 1 − the share it removes)
    control_share: dict  # the same for the random-mask controls (their mean per problem)
    vs_control: dict  # paired_difference, > 0 when the mask's model is the closer to the tuned one (patch) or to the
    # base (revert) than its controls: patch − control, control − revert, each times the sign of RL's change
    greedy: dict  # exact McNemar, greedy 0/1: the mask's model against its first control (ordered as vs_control)


@dataclass(frozen=True)
class RetrainEvidence:
    score: str
    gain: dict  # paired_difference(full, base)
    vs_full: dict  # paired_difference(retrain, full)
    retrain: np.ndarray
    full: np.ndarray
    greedy: dict  # mcnemar_exact(retrain, full)


def _wide(problems: pd.DataFrame, score: str) -> pd.DataFrame:
    """Models as columns, problems as rows, the score as values."""
    return problems.pivot_table(index="problem", columns="model", values=score, aggfunc="first")


def _aligned(wide: pd.DataFrame, *models: str) -> list[np.ndarray] | None:
    if any(m not in wide for m in models):
        return None
    sub = wide[list(models)].dropna()
    return [sub[m].to_numpy(dtype=np.float64) for m in models] if len(sub) else None


def surgery_evidence(problems: pd.DataFrame, surgery: pd.DataFrame, kind: str, targets: list[str], score: str):
    """SurgeryEvidence of `kind` on the `targets` (their problems pooled), or None when a model is missing."""
    sur = surgery[(surgery["kind"] == kind) & surgery["target"].isin(targets)]
    if not len(sur) or not len(problems):
        return None
    parts = {s: _wide(problems, s) for s in (score, "correct")}
    cols: dict[str, dict[str, list]] = {s: {"base": [], "tuned": [], "mask": [], "ctl": [], "ctl0": []} for s in parts}
    for target in targets:
        recs = sur[sur["target"] == target].to_dict("records")
        mask = [surgery_model(r) for r in recs if r["control"] == "none"]
        ctls = [surgery_model(r) for r in recs if r["control"] != "none"]
        if not mask or not ctls:
            continue
        for s, wide in parts.items():
            got = _aligned(wide, "base", target, mask[0], *ctls)
            if got is None:
                return None
            b, t, m, *c = got
            for key, v in (("base", b), ("tuned", t), ("mask", m), ("ctl", np.mean(c, axis=0)), ("ctl0", c[0])):
                cols[s][key].append(v)
    if not cols[score]["base"]:
        return None
    v = {key: np.concatenate(x) for key, x in cols[score].items()}
    g = {key: np.concatenate(x) for key, x in cols["correct"].items()}
    patch = kind == "patch"
    # Oriented by the direction RL moved the score, so that "the mask beats its controls" reads the same whether RL
    # raised the score (accuracy) or lowered it (log p of a reference answer in a style the policy left).
    sign = 1.0 if np.mean(v["tuned"] - v["base"]) >= 0 else -1.0
    m, c = sign * v["mask"], sign * v["ctl"]
    return SurgeryEvidence(
        score=score,
        gain=paired_difference(v["tuned"], v["base"]),
        share=gain_share(v["mask"], v["base"], v["tuned"]),
        control_share=gain_share(v["ctl"], v["base"], v["tuned"]),
        vs_control=paired_difference(m, c) if patch else paired_difference(c, m),
        greedy=mcnemar_exact(*((g["mask"], g["ctl0"]) if patch else (g["ctl0"], g["mask"]))),
    )


def retrain_evidence(problems: pd.DataFrame, full: str, retrain: str, score: str) -> RetrainEvidence | None:
    """RetrainEvidence of the retrain against the full run it retrains, or None when either is missing."""
    if not len(problems):
        return None
    got = _aligned(_wide(problems, score), "base", full, retrain)
    greedy = _aligned(_wide(problems, "correct"), full, retrain)
    if got is None or greedy is None:
        return None
    b, f, r = got
    return RetrainEvidence(
        score=score,
        gain=paired_difference(f, b),
        vs_full=paired_difference(r, f),
        retrain=r,
        full=f,
        greedy=mcnemar_exact(greedy[1], greedy[0]),
    )
