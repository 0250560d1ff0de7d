"""Which output format takes over during RL: per-step format shares and accuracies, the winner, and when it won.

Input is one record per sampled completion (step, format name, correct or not); output is plain rows and numbers.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from rldelta.runtime.errors import RldeltaError


def format_table(
    steps: Sequence[int],
    formats: Sequence[str],
    correct: Sequence[float] | None = None,
    *,
    names: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """One row per (step, format): count, share of the step's completions, and accuracy within the format.

    `names` fixes the formats listed (and their order) at every step, zero counts included; by default the formats
    seen, sorted. Accuracy is the mean of `correct` (1.0/0.0, or any score) over the format's completions at that
    step; None when the format has none there or `correct` is not given.
    """
    if len(steps) != len(formats) or (correct is not None and len(correct) != len(steps)):
        raise ValueError(
            f"steps, formats and correct differ in length: {len(steps)}, {len(formats)}, "
            f"{len(correct) if correct is not None else '-'}"
        )
    names = list(names) if names is not None else sorted(set(formats))
    unknown = sorted(set(formats) - set(names))
    if unknown:
        raise ValueError(f"formats {unknown} are not among names {names}")
    counts = Counter(zip(steps, formats))
    totals = Counter(steps)
    right: Counter = Counter()
    if correct is not None:
        for s, f, c in zip(steps, formats, correct):
            right[s, f] += float(c)
    rows = []
    for s in sorted(totals):
        for f in names:
            n = counts[s, f]
            rows.append(
                {
                    "step": int(s),
                    "format": f,
                    "count": n,
                    "share": n / totals[s],
                    "accuracy": right[s, f] / n if n and correct is not None else None,
                }
            )
    return rows


def shares_by_step(rows: Sequence[dict[str, Any]]) -> dict[str, list[float]]:
    """{format: [share at each step, in step order]} from `format_table` rows."""
    steps = sorted({r["step"] for r in rows})
    index = {s: i for i, s in enumerate(steps)}
    out: dict[str, list[float]] = {}
    for r in rows:
        out.setdefault(r["format"], [0.0] * len(steps))[index[r["step"]]] = r["share"]
    return out


def winner(rows: Sequence[dict[str, Any]], last: int = 1) -> str | None:
    """The format with the largest mean share over the `last` recorded steps (one step is a few dozen samples, so
    a window smooths out a lucky batch; ties: the first in row order); None without rows."""
    if not rows:
        return None
    window = set(sorted({r["step"] for r in rows})[-max(1, last) :])
    return argmax(end_shares(rows, window), ties="first")


def end_shares(rows: Sequence[dict[str, Any]], steps: set[int]) -> dict[str, float]:
    """{format: mean share over `steps`}, in row order."""
    out: dict[str, list[float]] = {}
    for r in rows:
        if r["step"] in steps:
            out.setdefault(r["format"], []).append(r["share"])
    return {k: sum(v) / len(v) for k, v in out.items()}


def dominance_step(rows: Sequence[dict[str, Any]], fmt: str, threshold: float = 0.9) -> int | None:
    """The first step from which `fmt`'s share stays >= `threshold` at every later step recorded; None if the
    share is below it at the last step."""
    shares = {r["step"]: r["share"] for r in rows if r["format"] == fmt}
    first = None
    for s in sorted(shares, reverse=True):
        if shares[s] < threshold:
            break
        first = s
    return first


def epoch_fraction(step: int | None, prompts_per_step: int, train_size: int) -> float | None:
    """The fraction of the first pass over the training prompts used up after `step` optimizer steps."""
    if step is None:
        return None
    if prompts_per_step < 1 or train_size < 1:
        raise RldeltaError(f"prompts_per_step and train_size must be >= 1, got {prompts_per_step}, {train_size}")
    return step * prompts_per_step / train_size


def accuracy_at(rows: Sequence[dict[str, Any]], step: int | None = None) -> dict[str, float | None]:
    """{format: accuracy} at `step` (default: the first step recorded)."""
    if not rows:
        return {}
    step = min(r["step"] for r in rows) if step is None else step
    return {r["format"]: r["accuracy"] for r in rows if r["step"] == step}


def argmax(values: dict[str, float | None], ties: str = "none") -> str | None:
    """The key with the largest value, None and NaN values ignored; None if none is left. A largest value that
    several keys share gives None (nothing stands out: "the most accurate" of formats that all score 0 is none of
    them), or with ties="first" the first of them."""
    known = {k: v for k, v in values.items() if v is not None and not math.isnan(v)}
    if not known:
        return None
    top = max(known.values())
    best = [k for k, v in known.items() if v == top]
    return best[0] if len(best) == 1 or ties == "first" else None
