"""The winner of an RL run's format table and the Echo Chamber claims about it (metrics/selection.py has claim (a)):

(b) `winner_origin`: the winning format is the most frequent pretraining format, the most accurate one, both or
    neither;
(c) `size_change`: the winner changes with model size.

`end_winner` decides the winner itself: the format ahead over the last steps, and whether clearly so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rldelta.metrics.selection import (
    BOTH,
    CHANGES,
    MOST_ACCURATE,
    MOST_FREQUENT,
    NEITHER,
    OTHER,
    SAME,
    UNDECIDED,
    record_dict,
    span_text,
    step_counts,
)
from rldelta.metrics.stats import difference_interval, wilson_interval

# ---- the winner at the end -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EndWinner:
    """The format with the largest pooled share over the last `window` steps, and whether it is clearly ahead of
    the runner-up: among the completions in either of the two, the winner's share has a 95% Wilson interval above
    one half (a sign test; the two shares come from the same completions, so they are not independent)."""

    format: str | None
    decided: bool
    share: float | None
    runner_up: str | None
    runner_up_share: float | None
    head_to_head: tuple[float, float] | None  # interval of winner / (winner + runner-up)
    completions: int
    steps: tuple[int, ...]
    text: str

    as_dict = record_dict


def end_winner(rows: Sequence[Mapping[str, Any]], window: int = 1) -> EndWinner:
    """The winning format over the last `window` recorded steps (completions pooled), and whether it is decided.
    "other" can win (the run collapsed into no trained format)."""
    if not rows:
        return EndWinner(None, False, None, None, None, None, 0, (), "no completions: no winner")
    steps, per, totals = step_counts(rows)
    keep = list(range(max(0, len(steps) - max(1, window)), len(steps)))
    n = sum(totals[i] for i in keep)
    pooled = {f: sum(c[i] for i in keep) for f, c in per.items()}
    ranked = sorted(pooled, key=lambda f: -pooled[f])  # stable: ties keep row order
    win = ranked[0]
    second = ranked[1] if len(ranked) > 1 else None
    k1, k2 = pooled[win], pooled[second] if second is not None else 0
    h2h = wilson_interval(k1, k1 + k2) if k1 + k2 else (0.0, 1.0)
    decided = k1 > 0 and h2h[0] > 0.5
    span = span_text(steps[keep[0]], steps[keep[-1]])
    text = f"{win} {'leads' if decided else 'is not clearly ahead'} over {span} ({k1}/{n} completions" + (
        f" against {second}'s {k2}; head to head 95% CI {h2h[0]:.2f}-{h2h[1]:.2f})" if second else ")"
    )
    return EndWinner(
        format=win if n else None,
        decided=decided,
        share=k1 / n if n else None,
        runner_up=second,
        runner_up_share=k2 / n if n and second is not None else None,
        head_to_head=h2h,
        completions=n,
        steps=tuple(steps[i] for i in keep),
        text=text,
    )


# ---- (b) most frequent or most accurate ------------------------------------------------------------------------


@dataclass(frozen=True)
class WinnerOrigin:
    """Verdict of claim (b). `is_most_frequent`: the winner's corpus share is strictly the largest (None: tied at
    the top); `is_most_accurate`: its accuracy after pretraining is clearly above every other format's (Newcombe
    95% interval of the difference above 0), False when some format's is clearly above it, None otherwise."""

    outcome: str
    winner: str | None
    is_most_frequent: bool | None
    is_most_accurate: bool | None
    corpus_shares: dict[str, float]
    accuracy: dict[str, float | None]
    completions: dict[str, int]
    text: str

    as_dict = record_dict


def _above(a: tuple[float, int], b: tuple[float, int]) -> bool | None:
    """Whether accuracy a is clearly above b (True), clearly below (False), or within the sampling error (None).
    Each is (accuracy, completions); no completions: unknown."""
    (pa, na), (pb, nb) = a, b
    if not na or not nb or pa is None or pb is None:
        return None
    low, high = difference_interval(round(pa * na), na, round(pb * nb), nb)
    return True if low > 0 else False if high < 0 else None


def winner_origin(
    winner: str | None,
    corpus_shares: Mapping[str, float],
    accuracy: Mapping[str, float | None],
    completions: Mapping[str, int],
) -> WinnerOrigin:
    """Claim (b): is `winner` the most frequent pretraining format (by its corpus share), the most accurate (by
    its accuracy after pretraining, measured on `completions` samples per format), both, or neither?

    The formats compared are those of `corpus_shares` ("other" excluded). A winner None (no decided winner) is
    undecided; a winner outside them ("other": the run collapsed into no trained format) is neither. Undecided too
    when the winner ties for the largest corpus share, or its accuracy is within the sampling error of the best
    other format's and none is clearly above it.
    """
    names = [f for f in corpus_shares if f != OTHER]
    shares = {f: float(corpus_shares[f]) for f in names}
    acc = {f: accuracy.get(f) for f in names}
    ns = {f: int(completions.get(f, 0) or 0) for f in names}

    def record(outcome: str, freq: bool | None, accurate: bool | None, text: str) -> WinnerOrigin:
        return WinnerOrigin(outcome, winner, freq, accurate, shares, acc, ns, text)

    if winner is None:
        return record(UNDECIDED, None, None, "undecided: no decided winner to trace back")
    if winner not in names:
        return record(NEITHER, False, False, f"neither: the winner is {winner}, none of the pretraining formats")
    others = [f for f in names if f != winner]
    top = max(shares[f] for f in others) if others else -math.inf
    freq = True if shares[winner] > top else False if shares[winner] < top else None
    comparisons = {f: _above((acc[winner], ns[winner]), (acc[f], ns[f])) for f in others}
    accurate = (
        False
        if any(v is False for v in comparisons.values())
        else True
        if all(v is True for v in comparisons.values())
        else None
    )

    def acc_text(f: str) -> str:
        if acc[f] is None or not ns[f]:
            return f"{f} -"
        low, high = wilson_interval(round(acc[f] * ns[f]), ns[f])
        return f"{f} {acc[f]:.2f} [{low:.2f}-{high:.2f}], n={ns[f]}"

    evidence = (
        f"corpus shares {', '.join(f'{f} {shares[f]:.2f}' for f in names)}; accuracy after pretraining "
        f"{'; '.join(acc_text(f) for f in names)}"
    )
    if freq is None or accurate is None:
        why = "ties for the largest corpus share" if freq is None else "is within the sampling error of the best"
        return record(UNDECIDED, freq, accurate, f"undecided: {winner} {why} ({evidence})")
    outcome = {(True, True): BOTH, (True, False): MOST_FREQUENT, (False, True): MOST_ACCURATE}.get(
        (freq, accurate), NEITHER
    )
    words = {
        BOTH: "both the most frequent and the most accurate",
        MOST_FREQUENT: "the most frequent, not the most accurate",
        MOST_ACCURATE: "the most accurate, not the most frequent",
        NEITHER: "neither the most frequent nor the most accurate",
    }
    return record(
        outcome,
        freq,
        accurate,
        f"{outcome.replace('_', ' ')}: {winner} was {words[outcome]} pretraining format ({evidence})",
    )


def winner_origin_from_record(winner: str | None, record: Mapping[str, Any]) -> WinnerOrigin:
    """`winner_origin` read off a mixture model's record (train/mixture.py: corpus shares, eval formats)."""
    formats = record.get("eval", {}).get("formats", {})
    return winner_origin(
        winner,
        record.get("corpus", {}).get("shares", {}),
        {f: v.get("accuracy") for f, v in formats.items()},
        {f: v.get("count", 0) for f, v in formats.items()},
    )


# ---- (c) the winner and size -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SizeChange:
    """Verdict of claim (c). `winners`: per size, its decided winner, or None where its runs left the winner
    undecided or disagree between seeds."""

    outcome: str
    winners: dict[str, str | None]
    text: str

    as_dict = record_dict


def size_change(runs: Sequence[tuple[str, str | None]]) -> SizeChange:
    """Claim (c) from one (size, decided winner or None) per run, several runs (seeds) per size allowed.

    A size's winner is the one all its runs agree on, None when any run has none or two disagree. changes — two
    sizes have different winners; same — every size has one and it is the same one; undecided — otherwise
    (fewer than two sizes, or a size without a winner and the others agreeing).
    """
    per: dict[str, list[str | None]] = {}
    for size, win in runs:
        per.setdefault(str(size), []).append(win)
    winners = {s: (w[0] if w[0] is not None and len(set(w)) == 1 else None) for s, w in per.items()}
    decided = {s: w for s, w in winners.items() if w is not None}
    label = ", ".join(f"{s}: {w or 'undecided'}" for s, w in winners.items())
    if len(set(decided.values())) > 1:
        return SizeChange(CHANGES, winners, f"changes: the winner differs between sizes ({label})")
    if len(winners) >= 2 and len(decided) == len(winners):
        return SizeChange(SAME, winners, f"same: every size has the same winner ({label})")
    why = "fewer than two sizes" if len(winners) < 2 else "a size without a decided winner"
    return SizeChange(UNDECIDED, winners, f"undecided: {why} ({label or 'no runs'})")
