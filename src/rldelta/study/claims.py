"""The verdict rules: one pure function per published claim, from numbers and their intervals to a verdict.

Every rule gives one of VERDICTS, names the comparison it rests on and the null or control it beat or failed to
beat, and, when the data cannot decide ("inconclusive"), how much more eval n or how many seeds would. Texts are
templates: {key} is the headline number of that key (the report shows the table's value with its interval).
The thresholds are the named constants below; tests/test_claims.py plants tables for every outcome of each rule.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from rldelta.metrics.stats import difference_interval, n_to_decide, seeds_to_decide

REPRODUCES, PARTLY, DOES_NOT, INCONCLUSIVE, NOT_MEASURED = (
    "reproduces",
    "partly",
    "does not reproduce",
    "inconclusive",
    "not measured",
)
VERDICTS = (REPRODUCES, PARTLY, DOES_NOT, INCONCLUSIVE, NOT_MEASURED)

# "RL updates only 5–30% of the parameters": the published range of the changed fraction.
SPARSITY_LOW, SPARSITY_HIGH = 0.05, 0.30
# Mean rank / max rank of Δ from which the update counts as full rank, and as partly so.
FULL_RANK, PARTLY_FULL_RANK = 0.99, 0.9
# Within this of the random sparse matrices' rank fraction: the rank follows from the density alone.
RANK_NULL_MARGIN = 0.01
# Share of the accuracy RL gained that the subnetwork patch must recover (and the revert must remove).
RECOVERED = 0.9
# The retrain matches the full run when the interval of their accuracy difference lies within ± this.
EQUIVALENCE_MARGIN = 0.1
# ... and its Δ points the same way when their cosine is at least this.
RETRAIN_COSINE = 0.9
# In-distribution data explains the sparsity when SFT on the policy's own samples changes at least this share
# fewer entries than SFT on the same answers in a foreign style; KL matters when it moves the fraction this much.
CAUSE_MARGIN = 0.2


@dataclass(frozen=True)
class Verdict:
    verdict: str
    comparison: str  # what was compared with what
    null: str  # the null model or control it beat or failed to beat
    text: str  # a template: {key} = that headline number
    more_data: str = ""  # inconclusive: how much more eval n or how many seeds would decide it

    def row(self, claim: str, published: str, key: str, value) -> dict:
        return {"claim": claim, "published": published, "key": key, "value": value, **asdict(self)}


@dataclass(frozen=True)
class Acc:
    """An accuracy and the number of problems it was measured on."""

    value: float
    n: int

    @property
    def k(self) -> float:
        return round(self.value * self.n)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _straddles(lo: float | None, hi: float | None, threshold: float) -> bool:
    return lo is not None and hi is not None and lo < threshold < hi


def _seeds_text(mean: float, sd: float | None, threshold: float, have: int) -> str:
    k = seeds_to_decide(mean, sd, threshold, have) if sd is not None else None
    return f"about {k} runs (now {have}) would decide it" if k else f"more runs than {have} would be needed"


def _n_text(diff: float, lo: float, hi: float, n: int) -> str:
    need = n_to_decide(diff, (hi - lo) / 2, n)
    return (
        f"about {need} test problems (now {n}) would resolve a difference of {abs(diff):.3f}"
        if need
        else "no eval size resolves a zero difference"
    )


def sparsity_rule(
    bf16: float | None,
    lo: float | None = None,
    hi: float | None = None,
    *,
    sd: float | None = None,
    runs: int = 1,
    fp32: float | None = None,
) -> Verdict:
    """The bf16 changed fraction against the published 5–30%, next to the fp32 master weights (no rounding)."""
    cmp = "bitwise changed fraction of the bf16 checkpoint vs the published 5–30%"
    null = "the fp32 master weights (the same update before bf16 rounding)"
    if bf16 is None:
        return Verdict(NOT_MEASURED, cmp, null, "No run finished.")
    why = ""
    if fp32 is not None:
        why = (
            "; in the fp32 master weights {fp32_changed_frac} changed; bf16 rounding removed {lost_to_rounding_frac}"
            " of the updates; −|w| predicts the changed set with AUC {auc_small_weights}"
        )
    for edge in (SPARSITY_LOW, SPARSITY_HIGH):
        if _straddles(lo, hi, edge):
            return Verdict(
                INCONCLUSIVE,
                cmp,
                null,
                "Across runs the changed fraction {changed_frac} straddles " + _pct(edge) + why + ".",
                _seeds_text(bf16, sd, edge, runs),
            )
    inside = SPARSITY_LOW <= bf16 <= SPARSITY_HIGH
    if inside and fp32 is not None and fp32 > SPARSITY_HIGH:
        return Verdict(
            PARTLY,
            cmp,
            null,
            "Reproduces in the bf16 checkpoint ({changed_frac}) but not in the fp32 master weights"
            + why
            + ": the sparsity is that of the stored precision.",
        )
    if inside:
        return Verdict(REPRODUCES, cmp, null, "RL changed {changed_frac} of the entries, inside 5–30%" + why + ".")
    side = "below" if bf16 < SPARSITY_LOW else "above"
    return Verdict(DOES_NOT, cmp, null, "RL changed {changed_frac} of the entries, " + side + " 5–30%" + why + ".")


def rank_rule(
    rank: float | None,
    null_rank: float | None,
    lo: float | None = None,
    hi: float | None = None,
    *,
    sd: float | None = None,
    runs: int = 1,
) -> Verdict:
    """Rank / max rank of Δ against 99% (full) and 90% (partly), next to random sparse matrices of its density."""
    cmp = "mean rank / max rank of Δ vs 99%"
    null = "random sparse matrices of the same per-tensor density"
    if rank is None:
        return Verdict(NOT_MEASURED, cmp, null, "No 2-D tensor changed.")
    text = "Mean rank / max rank of Δ is {mean_rank_frac}"
    if null_rank is not None:
        text += "; random sparse matrices of the same density reach {null_rank_frac}"
        if abs(null_rank - rank) <= RANK_NULL_MARGIN + 1e-9:
            text += ", so the rank follows from the density alone"
    for edge in (FULL_RANK, PARTLY_FULL_RANK):
        if _straddles(lo, hi, edge):
            return Verdict(INCONCLUSIVE, cmp, null, text + ".", _seeds_text(rank, sd, edge, runs))
    v = REPRODUCES if rank >= FULL_RANK else (PARTLY if rank >= PARTLY_FULL_RANK else DOES_NOT)
    return Verdict(v, cmp, null, text + ".")


def overlap_rule(
    observed: float | None,
    random_hi: float | None,
    matched_hi: float | None,
    lo: float | None = None,
    hi: float | None = None,
    *,
    sd: float | None = None,
    pairs: int = 1,
) -> Verdict:
    """Seed overlap against the top of the random and the magnitude-matched nulls' 95% ranges. With ≥ 3 seeds
    (lo, hi: the spread over seed pairs) its lower end must clear the random null's top."""
    cmp = "one-sided overlap of two seeds' changed sets"
    null = "random sets of the same per-tensor density (95% range), and random within |w| bins"
    if observed is None or random_hi is None:
        return Verdict(NOT_MEASURED, cmp, null, "Needs two or more seeds.")
    text = "Seeds overlap by {seed_overlap}, vs {seed_overlap_random} at random"
    if matched_hi is not None:
        text += " and {seed_overlap_matched} for random sets with the same |w| profile"
    if _straddles(lo, hi, random_hi):
        return Verdict(INCONCLUSIVE, cmp, null, text + ".", _seeds_text(observed, sd, random_hi, pairs))
    low = lo if lo is not None else observed
    if low <= random_hi:
        return Verdict(DOES_NOT, cmp, null, text + ": no more than chance.")
    if matched_hi is not None and low <= matched_hi:
        text += ": weight magnitude alone predicts that much overlap"
    return Verdict(REPRODUCES, cmp, null, text + ".")


def surgery_rule(kind: str, mask: Acc | None, control: Acc | None, target: Acc, base: Acc, mask_name: str) -> Verdict:
    """Sufficiency (kind "patch": base + the target's update on the mask only) or necessity ("revert": the target
    with the mask reset to base), against the random-mask controls of the same per-tensor density and against the
    target whose update was used. "reproduces" only when the mask beats its controls beyond the interval."""
    patch = kind == "patch"
    cmp = (
        f"base + the update on {mask_name} vs the same on random masks"
        if patch
        else f"the tuned model with {mask_name} reset vs with random masks reset instead"
    ) + ", and vs the tuned model whose update was used"
    null = "random masks of the same per-tensor density (Newcombe 95% interval of the difference)"
    key = "patch" if patch else "revert"
    if mask is None or control is None:
        return Verdict(NOT_MEASURED, cmp, null, "Needs two or more seeds and one or more controls.")
    text = (
        "{" + key + "_accuracy} with " + mask_name + " vs {" + key + "_random_accuracy} with random masks; "
        "{tuned_accuracy} tuned, {base_accuracy} base"
    )
    glo, ghi = difference_interval(target.k, target.n, base.k, base.n)
    gain = target.value - base.value
    if glo <= 0:
        return Verdict(
            INCONCLUSIVE,
            cmp,
            null,
            text + f": RL's gain over the base ({gain:+.3f}, interval [{glo:+.3f}, {ghi:+.3f}]) is not above noise.",
            _n_text(gain, glo, ghi, target.n),
        )
    # Sufficiency: the mask keeps more than random masks; necessity: resetting the mask loses more.
    a, b = (mask, control) if patch else (control, mask)
    lo, hi = difference_interval(a.k, a.n, b.k, b.n)
    d = a.k / a.n - b.k / b.n  # in whole problems, as the interval is
    text += f"; difference to the controls {d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
    if lo <= 0 < hi:
        return Verdict(INCONCLUSIVE, cmp, null, text + ".", _n_text(d, lo, hi, mask.n))
    if hi <= 0:
        return Verdict(DOES_NOT, cmp, null, text + ": random masks do as well.")
    share = (mask.value - base.value) / gain if patch else (target.value - mask.value) / gain
    text += f"; it {'recovers' if patch else 'removes'} {_pct(share)} of RL's gain"
    return Verdict(REPRODUCES if share >= RECOVERED else PARTLY, cmp, null, text + ".")


def retrain_rule(retrain: Acc | None, full: Acc | None, cosine: float | None) -> Verdict:
    """Subnetwork-only retraining against the full run: accuracy equal within ±EQUIVALENCE_MARGIN (the whole
    interval of the difference inside it) and Δs pointing the same way (cosine ≥ RETRAIN_COSINE)."""
    cmp = "retrained on the mask only vs the full run it retrains"
    null = f"equivalence within ±{EQUIVALENCE_MARGIN:g} accuracy; cosine ≥ {RETRAIN_COSINE:g}"
    if retrain is None or full is None:
        return Verdict(NOT_MEASURED, cmp, null, "Retraining is off.")
    lo, hi = difference_interval(retrain.k, retrain.n, full.k, full.n)
    d = retrain.value - full.value
    text = (
        "Retrained on the mask only: {retrain_accuracy} vs {retrain_full_accuracy} for the full run "
        f"(difference {d:+.3f} [{lo:+.3f}, {hi:+.3f}]); cosine of the two Δs {{retrain_cosine}}; it changed "
        "{retrain_coverage} of the full run's changed entries."
    )
    same = cosine is not None and cosine >= RETRAIN_COSINE
    equal = -EQUIVALENCE_MARGIN <= lo and hi <= EQUIVALENCE_MARGIN
    differs = lo > 0 or hi < 0
    if not equal and not differs:
        need = (
            n_to_decide(EQUIVALENCE_MARGIN - abs(d), (hi - lo) / 2, retrain.n) if abs(d) < EQUIVALENCE_MARGIN else None
        )
        more = f"about {need} test problems (now {retrain.n}) would show equivalence" if need else ""
        return Verdict(INCONCLUSIVE, cmp, null, text, more or "the accuracies differ by about the margin")
    v = REPRODUCES if equal and same else (PARTLY if equal or same else DOES_NOT)
    return Verdict(v, cmp, null, text)


def cause_rule(
    own: float | None, foreign: float | None, kl: float | None, no_kl: float | None, *, runs_per_arm: int = 1
) -> Verdict:
    """arXiv:2505.11711's cause: training on data close to the policy's own distribution (SFT on its own correct
    samples changes fewer entries than SFT on the same answers in a foreign style), not the KL term (RL with
    β > 0 and without change about as many)."""
    cmp = "changed fraction of SFT on the policy's own correct samples vs on the same answers in a foreign style"
    null = "the foreign-style SFT (same prompts, answers, steps); RL with KL vs without"
    if own is None or foreign is None or not foreign:
        return Verdict(NOT_MEASURED, cmp, null, "The cause analysis is off (cause = true runs it).")
    rel = (foreign - own) / foreign
    text = (
        "SFT on the policy's own samples changed {cause_sft_own}, on foreign-style answers {cause_sft_foreign}"
        f" ({_pct(rel)} fewer)"
    )
    kl_moves = False
    if kl is not None and no_kl:
        kl_moves = abs(kl - no_kl) / no_kl >= CAUSE_MARGIN
        text += "; RL with KL {cause_rl_kl} vs without {cause_rl_no_kl}"
    if abs(rel) < CAUSE_MARGIN:
        return Verdict(
            INCONCLUSIVE,
            cmp,
            null,
            text + f": a difference within ±{_pct(CAUSE_MARGIN)} from one run per arm.",
            f"≥ 3 seeds per arm (now {runs_per_arm}) would give the spread to decide it",
        )
    if rel < 0:
        return Verdict(DOES_NOT, cmp, null, text + ": in-distribution data did not make the update sparser.")
    return Verdict(
        PARTLY if kl_moves else REPRODUCES,
        cmp,
        null,
        text + (": the KL term matters too." if kl_moves else "."),
    )
