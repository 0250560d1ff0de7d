"""The Echo Chamber claims (Zhao et al. 2025, arXiv:2504.07912) as verdict rules over format tables.

Three claims, one rule each, each a pure function returning a small frozen record (outcome, the numbers it was
decided on, one line of text):

(a) `dominance`: one format passes a share of 90% within the first epoch of RL and holds it to the end;
(b) `winner_origin`: the winning format is the most frequent pretraining format, the most accurate one, both or
    neither;
(c) `size_change`: the winner changes with model size.

A format table is `metrics.formats.format_table` rows (step, format, count, share, accuracy). A step holds a few
dozen completions, so no share is read bare: every comparison goes through a 95% Wilson interval on the counts
(metrics/stats.py), and a rule answers "undecided" where the interval straddles the line it needs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from rldelta.metrics.formats import epoch_fraction
from rldelta.metrics.stats import difference_interval, wilson_interval

OTHER = "other"  # the format table's name for a completion in no trained format (train.formats.OTHER)

# Outcomes of (a)
REPRODUCES = "reproduces"
PARTLY = "partly"
NOT_REPRODUCED = "does_not_reproduce"
UNDECIDED = "undecided"
# Outcomes of (b)
MOST_FREQUENT = "most_frequent"
MOST_ACCURATE = "most_accurate"
BOTH = "both"
NEITHER = "neither"
# Outcomes of (c)
CHANGES = "changes"
SAME = "same"


def _as_dict(record) -> dict[str, Any]:
    return asdict(record)


@dataclass(frozen=True)
class Dominance:
    """Verdict of claim (a). `format`/`step`: the format and the first step of the stretch the outcome rests on (the
    held stretch, or for "partly" the stretch it passed over); `share`, `low`, `high`, `completions`: its pooled
    share over that stretch, the 95% interval and the completions counted; `epoch_fraction`: the fraction of the
    first epoch used up after `step`; `covered`: the fraction of the first epoch the run's last step reached."""

    outcome: str
    format: str | None
    step: int | None
    last_step: int | None
    epoch_fraction: float | None
    share: float | None
    low: float | None
    high: float | None
    completions: int
    threshold: float
    covered: float
    text: str

    as_dict = _as_dict


def _counts(rows: Sequence[Mapping[str, Any]]) -> tuple[list[int], dict[str, list[int]], list[int]]:
    """(steps in order, {format: count at each step}, completions at each step) from format-table rows."""
    steps = sorted({int(r["step"]) for r in rows})
    index = {s: i for i, s in enumerate(steps)}
    per: dict[str, list[int]] = {}
    totals = [0] * len(steps)
    for r in rows:
        i = index[int(r["step"])]
        per.setdefault(r["format"], [0] * len(steps))[i] += int(r["count"])
        totals[i] += int(r["count"])
    return steps, per, totals


def _hold_status(k: list[int], n: list[int], threshold: float) -> list[tuple[str, tuple[int, int]]]:
    """For every start index: whether a format holds a share >= threshold from there to the last step — "holds"
    (its pooled share's interval lies above the threshold and no single step is clearly below it), "fails" (a
    step, or the pooled share, is clearly below), or "open" (the interval straddles the threshold) — and the
    pooled (k, n). One pass from the end: suffix sums and whether any later step is clearly below."""
    out: list[tuple[str, tuple[int, int]]] = []
    kk = nn = 0
    below = False
    for i in range(len(n) - 1, -1, -1):
        kk, nn = kk + k[i], nn + n[i]
        below = below or bool(n[i] and wilson_interval(k[i], n[i])[1] < threshold)
        low, high = wilson_interval(kk, nn)
        if below or (nn and high < threshold):
            state = "fails"
        elif nn and low >= threshold:
            state = "holds"
        else:
            state = "open"
        out.append((state, (kk, nn)))
    return out[::-1]


def _passing_stretch(k: list[int], n: list[int], threshold: float) -> tuple[int, int] | None:
    """The earliest stretch of steps (first, last index, the shortest from that first step) over which the pooled
    share's interval lies above the threshold; None if there is none."""
    for a in range(len(n)):
        kk = nn = 0
        for b in range(a, len(n)):
            kk, nn = kk + k[b], nn + n[b]
            if nn and wilson_interval(kk, nn)[0] >= threshold:
                return a, b
    return None


def _span(a: int, b: int) -> str:
    return f"step {a}" if a == b else f"steps {a}-{b}"


def dominance(
    rows: Sequence[Mapping[str, Any]],
    *,
    prompts_per_step: int,
    train_size: int,
    threshold: float = 0.9,
) -> Dominance:
    """Claim (a) on an RL run's format table: does one format pass `threshold` and hold it within the first epoch?

    A format holds from step s when its share pooled over s..last has a 95% Wilson interval above the threshold
    and no single step from s on is clearly below it (its own interval under the threshold). Outcomes:
    reproduces — some format holds from a step within the first epoch (the earliest such step is reported);
    partly — none does, every format is clearly not holding from any first-epoch step, but one holds from a later
    step, or passed the threshold over a stretch (pooled interval above it) and did not hold;
    does_not_reproduce — the run covers the first epoch and no format holds or passes from any step;
    undecided — a first-epoch start is neither clearly held nor clearly failed (too few completions to tell), or
    the run ends before the first epoch does and nothing held.
    "other" (no trained format) is never the dominating format.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must lie in (0, 1], got {threshold}")
    if not rows:
        raise ValueError("dominance needs a non-empty format table")
    steps, per, totals = _counts(rows)
    covered = epoch_fraction(steps[-1], prompts_per_step, train_size)
    in_epoch = [i for i, s in enumerate(steps) if epoch_fraction(s, prompts_per_step, train_size) <= 1.0]
    later = [i for i in range(len(steps)) if i not in set(in_epoch)]
    formats = [f for f in per if f != OTHER]

    def found(outcome: str, f: str | None, a: int | None, b: int | None, kn: tuple[int, int], text: str) -> Dominance:
        kk, nn = kn
        low, high = wilson_interval(kk, nn) if nn else (None, None)
        return Dominance(
            outcome=outcome,
            format=f,
            step=None if a is None else steps[a],
            last_step=None if b is None else steps[b],
            epoch_fraction=None if a is None else epoch_fraction(steps[a], prompts_per_step, train_size),
            share=kk / nn if nn else None,
            low=low,
            high=high,
            completions=nn,
            threshold=threshold,
            covered=covered,
            text=text,
        )

    status = {(f, i): st for f in formats for i, st in enumerate(_hold_status(per[f], totals, threshold))}
    last = len(steps) - 1

    def first(indices: list[int], wanted: str) -> tuple[str, int] | None:
        for i in indices:
            for f in formats:
                if status[f, i][0] == wanted:
                    return f, i
        return None

    def share_text(f: str, i: int, j: int) -> str:
        kk, nn = sum(per[f][i : j + 1]), sum(totals[i : j + 1])
        low, high = wilson_interval(kk, nn)
        return f"{kk}/{nn} = {kk / nn:.2f}, 95% CI {low:.2f}-{high:.2f}"

    if hit := first(in_epoch, "holds"):
        f, i = hit
        frac = epoch_fraction(steps[i], prompts_per_step, train_size)
        return found(
            REPRODUCES,
            f,
            i,
            last,
            status[f, i][1],
            f"reproduces: {f} holds >= {threshold:.0%} from step {steps[i]} ({frac:.0%} of the first epoch) to step "
            f"{steps[last]} ({share_text(f, i, last)})",
        )
    if hit := first(in_epoch, "open"):
        f, i = hit
        return found(
            UNDECIDED,
            f,
            i,
            last,
            status[f, i][1],
            f"undecided: too few completions to tell whether {f} holds >= {threshold:.0%} from step {steps[i]} "
            f"({share_text(f, i, last)})",
        )
    if covered < 1.0:
        return found(
            UNDECIDED,
            None,
            None,
            None,
            (0, 0),
            f"undecided: the run covers {covered:.0%} of the first epoch and no format held >= {threshold:.0%} in it",
        )
    if hit := first(later, "holds"):
        f, i = hit
        frac = epoch_fraction(steps[i], prompts_per_step, train_size)
        return found(
            PARTLY,
            f,
            i,
            last,
            status[f, i][1],
            f"partly: {f} holds >= {threshold:.0%} only from step {steps[i]} ({frac:.0%} of the first epoch, after "
            f"it; {share_text(f, i, last)})",
        )
    for f in formats:
        if stretch := _passing_stretch(per[f], totals, threshold):
            a, b = stretch
            kn = (sum(per[f][a : b + 1]), sum(totals[a : b + 1]))
            return found(
                PARTLY,
                f,
                a,
                b,
                kn,
                f"partly: {f} passed {threshold:.0%} over {_span(steps[a], steps[b])} ({share_text(f, a, b)}) but "
                f"did not hold it to step {steps[last]}",
            )
    if hit := first(later, "open"):
        f, i = hit
        return found(
            UNDECIDED,
            f,
            i,
            last,
            status[f, i][1],
            f"undecided: no format held >= {threshold:.0%} within the first epoch; too few completions to tell "
            f"whether {f} holds from step {steps[i]} after it ({share_text(f, i, last)})",
        )
    # The evidence of a miss: the start and format that came closest (largest pooled share to the end).
    candidates = [(sum(per[f][i:]) / sum(totals[i:]), -i, f) for f in formats for i in range(len(steps))]
    _, neg_i, bf = max(candidates, key=lambda c: c[:2])  # the largest share; of equal ones the earliest start
    bi = -neg_i
    return found(
        NOT_REPRODUCED,
        bf,
        bi,
        last,
        (sum(per[bf][bi:]), sum(totals[bi:])),
        f"does not reproduce: no format passed {threshold:.0%} over {covered:.0%} of the first epoch (the closest: "
        f"{bf} from step {steps[bi]}, {share_text(bf, bi, last)})",
    )


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

    as_dict = _as_dict


def end_winner(rows: Sequence[Mapping[str, Any]], window: int = 1) -> EndWinner:
    """The winning format over the last `window` recorded steps (completions pooled), and whether it is decided.
    "other" can win (the run collapsed into no trained format)."""
    if not rows:
        return EndWinner(None, False, None, None, None, None, 0, (), "no completions: no winner")
    steps, per, totals = _counts(rows)
    keep = list(range(max(0, len(steps) - max(1, window)), len(steps)))
    n = sum(totals[i] for i in keep)
    pooled = {f: sum(c[i] for i in keep) for f, c in per.items()}
    ranked = sorted(pooled, key=lambda f: -pooled[f])  # stable: ties keep row order
    win = ranked[0]
    second = ranked[1] if len(ranked) > 1 else None
    k1, k2 = pooled[win], pooled[second] if second is not None else 0
    h2h = wilson_interval(k1, k1 + k2) if k1 + k2 else (0.0, 1.0)
    decided = k1 > 0 and h2h[0] > 0.5
    span = _span(steps[keep[0]], steps[keep[-1]])
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

    as_dict = _as_dict


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

    as_dict = _as_dict


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
