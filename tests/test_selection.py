"""The Echo Chamber verdict rules (metrics/selection.py, selection_winner.py) on planted format tables, one table per outcome of each rule.

Every planted table states the outcome it was built for; an independent restatement of the rule on scipy's Wilson
interval (and a Wald interval for accuracy differences) confirms the table has that outcome before the rule under
test is asked.
"""

from __future__ import annotations

import math

import pytest
from scipy.stats import binomtest

from rldelta.metrics.formats import format_table
from rldelta.metrics.selection import (
    BOTH,
    CHANGES,
    MOST_ACCURATE,
    MOST_FREQUENT,
    NEITHER,
    NOT_REPRODUCED,
    PARTLY,
    REPRODUCES,
    SAME,
    UNDECIDED,
    dominance,
)
from rldelta.metrics.selection_winner import end_winner, size_change, winner_origin, winner_origin_from_record

NAMES = ("code", "plain", "boxed", "other")
PPS, TRAIN = 4, 40  # ten steps to an epoch


def table(plan: dict[int, dict[str, int]]) -> list[dict]:
    """format_table rows from {step: {format: completions}} (the completions themselves are listed, as a run's are)."""
    steps, formats = [], []
    for s, counts in plan.items():
        for f, c in counts.items():
            steps += [s] * c
            formats += [f] * c
    return format_table(steps, formats, names=NAMES)


def mix(n: int, code: float, plain: float = 0.0, boxed: float = 0.0) -> dict[str, int]:
    c, p, b = round(n * code), round(n * plain), round(n * boxed)
    return {"code": c, "plain": p, "boxed": b, "other": n - c - p - b}


def ci(k: int, n: int) -> tuple[float, float]:
    r = binomtest(k, n).proportion_ci(method="wilson")
    return float(r.low), float(r.high)


def reference_dominance(plan: dict[int, dict[str, int]], thr: float = 0.9) -> tuple[str, str | None, int | None]:  # noqa: C901
    """The rule restated step by step: (outcome, format, step)."""
    steps = sorted(plan)
    n = {s: sum(plan[s].values()) for s in steps}
    formats = ["code", "plain", "boxed"]
    first_epoch = [s for s in steps if s * PPS <= TRAIN]

    def state(f, s):
        after = [t for t in steps if t >= s]
        if any(ci(plan[t][f], n[t])[1] < thr for t in after):
            return "fails"
        low, high = ci(sum(plan[t][f] for t in after), sum(n[t] for t in after))
        return "holds" if low >= thr else "fails" if high < thr else "open"

    for s in first_epoch:
        for f in formats:
            if state(f, s) == "holds":
                return REPRODUCES, f, s
    for s in first_epoch:
        for f in formats:
            if state(f, s) == "open":
                return UNDECIDED, f, s
    if steps[-1] * PPS < TRAIN:
        return UNDECIDED, None, None
    for s in steps:
        for f in formats:
            if s not in first_epoch and state(f, s) == "holds":
                return PARTLY, f, s
    for f in formats:
        for a in steps:
            for b in steps:
                window = [t for t in steps if a <= t <= b]
                if window and ci(sum(plan[t][f] for t in window), sum(n[t] for t in window))[0] >= thr:
                    return PARTLY, f, a
    for s in steps:
        for f in formats:
            if s not in first_epoch and state(f, s) == "open":
                return UNDECIDED, f, s
    return NOT_REPRODUCED, None, None


PLANTS = {
    # code at half the completions for two steps, then all of them from step 3 to the end: held from 30% of an epoch
    "reproduces": ({s: mix(100, 0.5, 0.3) if s < 3 else mix(100, 1.0) for s in range(1, 16)}, (REPRODUCES, "code", 3)),
    "after the first epoch": (
        {s: mix(100, 0.5, 0.3) if s < 13 else mix(100, 1.0) for s in range(1, 21)},
        (PARTLY, "code", 13),
    ),
    "passes and falls back": (
        {s: mix(100, 1.0) if 3 <= s <= 6 else mix(100, 0.5, 0.3) for s in range(1, 21)},
        (PARTLY, "code", 3),
    ),
    "never passes": ({s: mix(100, 0.5, 0.3, 0.2) for s in range(1, 21)}, (NOT_REPRODUCED, None, None)),
    # the run collapses into no trained format: "other" never dominates
    "collapse": ({s: mix(100, 0.3) if s < 3 else mix(100, 0.0) for s in range(1, 21)}, (NOT_REPRODUCED, None, None)),
    # every completion is code, but two a step: 24 of 24 has a Wilson interval from 0.86, straddling 0.9
    "too few completions": ({s: mix(2, 1.0) for s in range(1, 13)}, (UNDECIDED, "code", 1)),
    "shorter than an epoch": ({s: mix(100, 0.5, 0.3) for s in range(1, 6)}, (UNDECIDED, None, None)),
}


@pytest.mark.parametrize("name", list(PLANTS))
def test_dominance_planted(name):
    plan, (outcome, fmt, step) = PLANTS[name]
    ref = reference_dominance(plan)
    assert ref[0] == outcome and (outcome == NOT_REPRODUCED or ref[1:] == (fmt, step))
    v = dominance(table(plan), prompts_per_step=PPS, train_size=TRAIN)
    assert v.outcome == outcome and v.text.startswith(outcome.replace("_", " ")) and "\n" not in v.text
    if outcome != NOT_REPRODUCED:
        assert (v.format, v.step) == (fmt, step)
    assert v.covered == pytest.approx(max(plan) * PPS / TRAIN)
    if outcome in (REPRODUCES, PARTLY):
        assert v.epoch_fraction == pytest.approx(step * PPS / TRAIN)
        assert v.low >= 0.9 and v.share >= v.low
    if name == "reproduces":  # pooled from step 3 to 15: 13 steps x 100 completions, all code
        assert v.completions == 1300 and v.share == 1.0 and "30% of the first epoch" in v.text
    if name == "never passes":
        assert v.format == "code" and v.share == pytest.approx(0.5)  # the closest: code at half the completions
    assert v.as_dict()["outcome"] == outcome


def test_dominance_a_single_clear_drop_breaks_the_hold():
    # code at 100% everywhere but step 8 (50%): pooled from step 1 it is still 96%, yet it did not hold through
    # step 8; it holds from step 9 (within the first epoch at 90%).
    plan = {s: mix(100, 0.5, 0.5) if s == 8 else mix(100, 1.0) for s in range(1, 16)}
    assert reference_dominance(plan)[:3] == (REPRODUCES, "code", 9)
    v = dominance(table(plan), prompts_per_step=PPS, train_size=TRAIN)
    assert (v.outcome, v.step, v.epoch_fraction) == (REPRODUCES, 9, pytest.approx(0.9))


def test_dominance_bad_input():
    with pytest.raises(ValueError, match="threshold"):
        dominance(table({1: mix(4, 1.0)}), prompts_per_step=1, train_size=1, threshold=0)
    with pytest.raises(ValueError, match="non-empty"):
        dominance([], prompts_per_step=1, train_size=1)


# ---- the end winner ----------------------------------------------------------------------------------------------


def test_end_winner():
    clear = end_winner(table({1: mix(10, 0.1, 0.9), 2: mix(100, 0.7, 0.3)}))
    # 70 against 30 among 100: the head-to-head interval (scipy's) lies above one half
    assert ci(70, 100)[0] > 0.5
    assert (clear.format, clear.decided, clear.runner_up, clear.steps) == ("code", True, "plain", (2,))
    assert clear.head_to_head == pytest.approx(ci(70, 100))
    close = end_winner(table({1: mix(100, 0.52, 0.48)}))
    assert ci(52, 100)[0] < 0.5 and (close.format, close.decided) == ("code", False)
    pooled = end_winner(table({1: mix(100, 1.0), 2: mix(10, 0.0, 1.0)}), window=2)  # 100 code against 10 plain
    assert (pooled.format, pooled.decided, pooled.completions, pooled.share) == ("code", True, 110, 100 / 110)
    assert end_winner([]).format is None


# ---- (b) most frequent or most accurate --------------------------------------------------------------------------

SHARES = {"code": 0.5, "plain": 0.3, "boxed": 0.2}


def wald_above(a: float, na: int, b: float, nb: int) -> bool | None:
    half = 1.96 * math.sqrt(a * (1 - a) / na + b * (1 - b) / nb)
    return True if a - b > half else False if b - a > half else None


def reference_origin(winner, shares, acc, n):
    if winner is None:
        return UNDECIDED
    if winner not in shares:
        return NEITHER
    top = max(v for f, v in shares.items() if f != winner)
    freq = None if shares[winner] == top else shares[winner] > top
    cmp = [wald_above(acc[winner], n[winner], acc[f], n[f]) for f in shares if f != winner]
    accurate = False if False in cmp else True if all(c is True for c in cmp) else None
    if freq is None or accurate is None:
        return UNDECIDED
    return {(True, True): BOTH, (True, False): MOST_FREQUENT, (False, True): MOST_ACCURATE}.get(
        (freq, accurate), NEITHER
    )


N400 = {"code": 400, "plain": 400, "boxed": 400}
ORIGINS = {
    "both": ("code", SHARES, {"code": 0.8, "plain": 0.4, "boxed": 0.3}, N400, BOTH),
    "most frequent": ("code", SHARES, {"code": 0.2, "plain": 0.8, "boxed": 0.3}, N400, MOST_FREQUENT),
    "most accurate": ("plain", SHARES, {"code": 0.2, "plain": 0.8, "boxed": 0.3}, N400, MOST_ACCURATE),
    "neither": ("boxed", SHARES, {"code": 0.2, "plain": 0.8, "boxed": 0.3}, N400, NEITHER),
    "collapse": ("other", SHARES, {"code": 0.2, "plain": 0.8, "boxed": 0.3}, N400, NEITHER),
    "within sampling error": (
        "code",
        SHARES,
        {"code": 0.5, "plain": 0.44, "boxed": 0.1},
        {"code": 50, "plain": 50, "boxed": 50},
        UNDECIDED,
    ),
    "tied corpus shares": (
        "code",
        {"code": 0.4, "plain": 0.4, "boxed": 0.2},
        {"code": 0.8, "plain": 0.2, "boxed": 0.2},
        N400,
        UNDECIDED,
    ),
    "no winner": (None, SHARES, {"code": 0.8, "plain": 0.4, "boxed": 0.3}, N400, UNDECIDED),
}


@pytest.mark.parametrize("name", list(ORIGINS))
def test_winner_origin_planted(name):
    winner, shares, acc, n, outcome = ORIGINS[name]
    assert reference_origin(winner, shares, acc, n) == outcome
    v = winner_origin(winner, shares, acc, n)
    assert v.outcome == outcome and v.text.startswith(outcome.replace("_", " ")) and "\n" not in v.text
    if name == "within sampling error":
        assert v.is_most_frequent is True and v.is_most_accurate is None
    if name == "tied corpus shares":
        assert v.is_most_frequent is None and v.is_most_accurate is True


def test_winner_origin_unsampled_format_and_record():
    # boxed was never written after pretraining: its accuracy is unknown, so code cannot be called the most
    # accurate; but plain is clearly above code, so code is not the most accurate either way.
    acc = {"code": 0.3, "plain": 0.8, "boxed": None}
    n = {"code": 400, "plain": 400, "boxed": 0}
    assert winner_origin("code", SHARES, acc, n).outcome == MOST_FREQUENT
    assert winner_origin("plain", SHARES, acc, n).outcome == UNDECIDED
    record = {
        "corpus": {"shares": SHARES},
        "eval": {"formats": {f: {"count": n[f], "accuracy": acc[f]} for f in SHARES} | {"other": {"count": 3}}},
    }
    assert winner_origin_from_record("code", record) == winner_origin("code", SHARES, acc, n)


# ---- (c) size ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "runs,outcome",
    [
        ([("5m", "code"), ("30m", "plain")], CHANGES),
        ([("5m", "code"), ("5m", "code"), ("30m", "code")], SAME),
        ([("5m", "code"), ("30m", None)], UNDECIDED),
        ([("5m", "code"), ("30m", "code"), ("30m", "plain")], UNDECIDED),  # 30m's seeds disagree
        ([("5m", "code"), ("30m", "plain"), ("100m", None)], CHANGES),  # two decided sizes already differ
        ([("5m", "code")], UNDECIDED),
        ([], UNDECIDED),
    ],
)
def test_size_change(runs, outcome):
    per: dict[str, set] = {}
    for s, w in runs:
        per.setdefault(s, set()).add(w)
    decided = {next(iter(w)) for w in per.values() if len(w) == 1 and None not in w}
    expected = (
        CHANGES
        if len(decided) > 1
        else SAME
        if len(per) >= 2 and all(len(w) == 1 and None not in w for w in per.values())
        else UNDECIDED
    )
    assert expected == outcome
    v = size_change(runs)
    assert v.outcome == outcome and v.text.startswith(outcome) and list(v.winners) == list(per)
