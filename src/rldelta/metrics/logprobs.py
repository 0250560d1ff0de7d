"""Suppression vs amplification: what RL did to the probability of correct and of wrong completions.

A probe set holds, per prompt, completions sampled once from the base model and labelled correct or wrong by the
task. Each checkpoint scores the same token ids, so a change in log-probability is a change of the policy alone.
Amplification is the rise of log p(correct), suppression the fall of log p(wrong), both against the base.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np


def probe_stats(
    seq_logprob: Sequence[float], n_tokens: Sequence[int], correct: Sequence[bool], prompt: Sequence[int]
) -> dict[str, float | None]:
    """Mean log-probability of the correct and of the wrong completions, and the probability mass on each.

    seq_logprob: sum of the token log-probs of each completion (nats); n_tokens: its length; correct: its label;
    prompt: which prompt it belongs to. Returns
      logp_correct / logp_wrong          mean sequence log-prob of the correct / wrong completions
      token_logp_correct / _wrong        mean log-prob per token (token-weighted)
      mass_correct / mass_wrong          per prompt, the summed probability of its correct (wrong) completions,
                                         averaged over prompts (prompts without any correct/wrong one count 0)
      correct_share                      per prompt with both kinds, mass_correct / (mass_correct + mass_wrong), mean
    None where there is nothing to average.
    """
    lp = np.asarray(seq_logprob, dtype=np.float64)
    nt = np.asarray(n_tokens, dtype=np.float64)
    ok = np.asarray(correct, dtype=bool)
    pid = np.asarray(prompt)
    if not (len(lp) == len(nt) == len(ok) == len(pid)):
        raise ValueError(f"probe_stats: lengths differ ({len(lp)}, {len(nt)}, {len(ok)}, {len(pid)})")

    def mean(x: np.ndarray) -> float | None:
        return float(x.mean()) if x.size else None

    def per_token(sel: np.ndarray) -> float | None:
        return float(lp[sel].sum() / nt[sel].sum()) if sel.any() and nt[sel].sum() > 0 else None

    mass: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for p, v, c in zip(pid.tolist(), lp.tolist(), ok.tolist()):
        mass[p][0 if c else 1] += math.exp(v)
    both = [mc / (mc + mw) for mc, mw in mass.values() if mc > 0 and mw > 0]
    return {
        "logp_correct": mean(lp[ok]),
        "logp_wrong": mean(lp[~ok]),
        "token_logp_correct": per_token(ok),
        "token_logp_wrong": per_token(~ok),
        "mass_correct": mean(np.array([m[0] for m in mass.values()])),
        "mass_wrong": mean(np.array([m[1] for m in mass.values()])),
        "correct_share": mean(np.array(both)),
    }


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k) (Chen et al. 2021)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def phases(steps: Sequence[int], amplification: Sequence[float], suppression: Sequence[float]) -> dict:
    """Which component moves faster between consecutive checkpoints, and the step at which that switches.

    `steps` are increasing (the first is usually 0, the base); amplification/suppression are cumulative against
    the base at each step. Per interval the rate is the change per step; the dominant component is the one with
    the larger positive rate (ties, or both rates <= 0, count as neither). `switch_step` is the start step of the first interval whose dominant
    component differs from the first interval's and that stays different to the end: the new phase begins there.
    None if it never switches.
    """
    if not (len(steps) == len(amplification) == len(suppression)) or len(steps) < 2:
        raise ValueError("phases needs at least two steps with one amplification and one suppression value each")
    intervals = []
    for i in range(1, len(steps)):
        dt = steps[i] - steps[i - 1]
        if dt <= 0:
            raise ValueError(f"phases: steps must increase, got {list(steps)}")
        ra = (amplification[i] - amplification[i - 1]) / dt
        rs = (suppression[i] - suppression[i - 1]) / dt
        # A component that moved away from the correct completions (negative rate) dominates nothing.
        dom = "amplification" if ra > max(rs, 0.0) else "suppression" if rs > max(ra, 0.0) else "neither"
        intervals.append(
            {
                "from_step": steps[i - 1],
                "to_step": steps[i],
                "amplification_rate": ra,
                "suppression_rate": rs,
                "dominant": dom,
            }
        )
    first = intervals[0]["dominant"]
    switch = None
    for j, iv in enumerate(intervals):
        if all(x["dominant"] not in (first, "neither") for x in intervals[j:]):
            switch = iv["from_step"]
            break
    return {
        "intervals": intervals,
        "first_dominant": first,
        "last_dominant": intervals[-1]["dominant"],
        "switch_step": switch,
    }
