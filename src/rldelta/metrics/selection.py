"""The Echo Chamber claims (Zhao et al. 2025, arXiv:2504.07912) as verdict rules over format tables.

Three claims, one rule each, each a pure function returning a small frozen record (outcome, the numbers it was
decided on, one line of text):

(a) `dominance`: one format passes a share of 90% within the first epoch of RL and holds it to the end;
(b) `winner_origin`: the winning format is the most frequent pretraining format, the most accurate one, both or
    neither;
(c) `size_change`: the winner changes with model size.

(a) is here, with the outcome names of all three; (b), (c) and the end winner they read are in selection_winner.py.

A format table is `metrics.formats.format_table` rows (step, format, count, share, accuracy). A step holds a few
dozen completions, so no share is read bare: every comparison goes through a 95% Wilson interval on the counts
(metrics/stats.py), and a rule answers "undecided" where the interval straddles the line it needs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from rldelta.metrics.formats import epoch_fraction
from rldelta.metrics.stats import wilson_interval

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


def record_dict(record) -> dict[str, Any]:
    """A verdict record as a plain dict (for JSON)."""
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

    as_dict = record_dict


def step_counts(rows: Sequence[Mapping[str, Any]]) -> tuple[list[int], dict[str, list[int]], list[int]]:
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


def span_text(a: int, b: int) -> str:
    return f"step {a}" if a == b else f"steps {a}-{b}"


def dominance(  # noqa: C901
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
    steps, per, totals = step_counts(rows)
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
                f"partly: {f} passed {threshold:.0%} over {span_text(steps[a], steps[b])} ({share_text(f, a, b)}) but "
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
