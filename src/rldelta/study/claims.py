"""The published claims, each defined once: `CLAIMS` (at the end) names each claim, its published statement and
source, the headline numbers it reads and its rule; the headline (study/headline.py), the claims table, the HTML
report and the tests all read it, so adding a claim is one entry there (and its rule, here). docs/add-a-claim.md
shows one added.

The rules are pure functions, from numbers and their intervals to a verdict. Every rule gives one of VERDICTS, names the comparison it rests on and the null or control it beat or failed to
beat, and, when the data cannot decide ("inconclusive"), how much more eval n or how many seeds would. Texts are
templates: {key} is the headline number of that key (the report shows the table's value with its interval).
The thresholds are the named constants below; tests/test_claims.py plants tables for every outcome of each rule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import pandas as pd

from rldelta.metrics.paired import n_to_decide, power_difference, power_equivalence, tost
from rldelta.metrics.stats import seeds_to_decide
from rldelta.study.paired_evidence import SCORE_NAMES, RetrainEvidence, SurgeryEvidence, removed_share

REPRODUCES, PARTLY, DOES_NOT, INCONCLUSIVE, NOT_MEASURED = (
    "reproduces",
    "partly",
    "does not reproduce",
    "inconclusive",
    "not measured",
)
VERDICTS = (REPRODUCES, PARTLY, DOES_NOT, INCONCLUSIVE, NOT_MEASURED)

# Where the claims were published.
SOURCE = "arXiv:2505.11711"
# "RL updates only 5–30% of the parameters": the published range of the changed fraction.
SPARSITY_LOW, SPARSITY_HIGH = 0.05, 0.30
SPARSITY_RANGE = f"{100 * SPARSITY_LOW:g}–{100 * SPARSITY_HIGH:g}%"
# Mean rank / max rank of Δ from which the update counts as full rank, and as partly so.
FULL_RANK, PARTLY_FULL_RANK = 0.99, 0.9
# Within this of the random sparse matrices' rank fraction: the rank follows from the density alone.
RANK_NULL_MARGIN = 0.01
# Share of the accuracy RL gained that the subnetwork patch must recover (and the revert must remove).
RECOVERED = 0.9
# The retrain matches the full run when the paired TOST shows their difference within ± this share of RL's gain.
EQUIVALENCE_MARGIN = 0.2
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
    # The paired comparison a surgery or retrain verdict rests on (None for the other claims).
    score: str | None = None  # the per-problem score compared
    difference: float | None = None
    lo: float | None = None
    hi: float | None = None
    test: str | None = None
    n: int | None = None

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


def sparsity_rule(
    bf16: float | None,
    lo: float | None = None,
    hi: float | None = None,
    *,
    sd: float | None = None,
    runs: int = 1,
    fp32: float | None = None,
) -> Verdict:
    """The bf16 changed fraction against the published SPARSITY_RANGE, next to the fp32 master weights (no rounding)."""
    cmp = "bitwise changed fraction of the bf16 checkpoint vs the published " + SPARSITY_RANGE
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
        return Verdict(
            REPRODUCES, cmp, null, "RL changed {changed_frac} of the entries, inside " + SPARSITY_RANGE + why + "."
        )
    side = "below" if bf16 < SPARSITY_LOW else "above"
    return Verdict(
        DOES_NOT, cmp, null, "RL changed {changed_frac} of the entries, " + side + " " + SPARSITY_RANGE + why + "."
    )


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


def _paired_fields(ev_score: str, d: dict, test: str) -> dict:
    return {"score": ev_score, "difference": d["difference"], "lo": d["lo"], "hi": d["hi"], "test": test, "n": d["n"]}


def _power_text(d: dict, what: str) -> str:
    need = n_to_decide(lambda n: power_difference(n, d["difference"], d["sd"]), d["n"])
    return (
        f"about {need} test problems (now {d['n']}) would decide {what} at 80% power, from the observed paired sd "
        f"{d['sd']:.3f}"
        if need
        else f"no number of test problems decides {what}: its observed paired difference is about 0"
    )


def surgery_rule(kind: str, ev: SurgeryEvidence | None, mask_name: str) -> Verdict:
    """Sufficiency (kind "patch": base + the target's update on the mask only) or necessity ("revert": the target
    with the mask reset to base), paired by problem on the study's score: RL's gain over the base must be real, the
    mask must beat the random-mask controls of the same per-tensor density (paired bootstrap interval of the
    difference above 0), and the share of the gain kept (patch) or removed (revert) decides reproduces vs partly."""
    patch = kind == "patch"
    cmp = (
        f"base + the update on {mask_name} vs the same on random masks"
        if patch
        else f"the tuned model with {mask_name} reset vs with random masks reset instead"
    ) + ", paired by test problem, and vs the tuned model whose update was used"
    null = "random masks of the same per-tensor density (paired bootstrap 95% interval, sign-flip test)"
    if ev is None:
        return Verdict(NOT_MEASURED, cmp, null, "Needs two or more seeds and one or more controls.")
    g, vc = ev.gain, ev.vs_control
    test = "paired bootstrap 95% interval; sign-flip permutation p"
    fields = _paired_fields(ev.score, vc, test)
    text = (
        f"On {SCORE_NAMES[ev.score]}, over {vc['n']} test problems, RL changed the score by {{paired_gain}} "
        f"(p = {g['p']:.3g}); "
        + (
            f"base + the update on {mask_name} keeps {{patch_share}} of that change, on random masks {{patch_random_share}}"
            if patch
            else f"resetting {mask_name} removes {{revert_share}} of it, resetting random masks {{revert_random_share}}"
        )
        + f"; mask vs controls {{{kind}_vs_random}} (p = {vc['p']:.3g}). Greedy, exact McNemar: "
        f"{ev.greedy['only_a']} vs {ev.greedy['only_b']} problems solved by one side only (p = {ev.greedy['p']:.3g})"
    )
    if g["lo"] <= 0 <= g["hi"]:
        return Verdict(
            INCONCLUSIVE,
            cmp,
            null,
            text + ": RL's own change is not above noise.",
            _power_text(g, "RL's change"),
            **fields,
        )
    if vc["lo"] <= 0 < vc["hi"]:
        return Verdict(INCONCLUSIVE, cmp, null, text + ".", _power_text(vc, "mask vs controls"), **fields)
    if vc["hi"] <= 0:
        return Verdict(DOES_NOT, cmp, null, text + ": random masks do as well.", **fields)
    share = (ev.share if patch else removed_share(ev.share))["share"]
    return Verdict(REPRODUCES if share >= RECOVERED else PARTLY, cmp, null, text + ".", **fields)


def _retrain_n(d: dict, margin: float) -> str:
    """The test problems that would decide the retrain: equivalence while the observed difference is inside the
    margin, a difference beyond the margin once it is outside (80% power, noncentral t, the observed paired sd)."""
    n, effect, sd = d["n"], d["difference"], d["sd"]
    if abs(effect) < margin:
        need = n_to_decide(lambda k: power_equivalence(k, effect, sd, margin), n)
        what = "show equivalence"
    else:
        need = n_to_decide(lambda k: power_difference(k, abs(effect) - margin, sd), n)
        what = f"show a difference beyond the margin ±{margin:.3g}"
    if not need:
        return f"the observed difference sits on the margin ±{margin:.3g}: no number of test problems decides it"
    return f"about {need} test problems (now {n}) would {what} at 80% power (paired sd {sd:.3f})"


def retrain_rule(ev: RetrainEvidence | None, cosine: float | None, equal_1e4: float | None = None) -> Verdict:
    """Subnetwork-only retraining against the full run, paired by problem: equivalent when the paired TOST within
    ±EQUIVALENCE_MARGIN of RL's gain (full − base) rejects a larger difference, and Δs pointing the same way
    (cosine ≥ RETRAIN_COSINE); the paper's parameter-level shares (θ_sub vs θ_full) are reported beside it."""
    cmp = "retrained on the mask only vs the full run it retrains, paired by test problem"
    null = (
        f"equivalence within ±{EQUIVALENCE_MARGIN:g} × RL's gain (paired TOST); cosine of the Δs ≥ {RETRAIN_COSINE:g}"
    )
    if ev is None:
        return Verdict(NOT_MEASURED, cmp, null, "Retraining is off.")
    gain, d = ev.gain, ev.vs_full
    margin = EQUIVALENCE_MARGIN * abs(gain["difference"])
    fields = _paired_fields(ev.score, d, f"paired TOST within ±{margin:.3g}; paired bootstrap 95% interval")
    text = (
        f"On {SCORE_NAMES[ev.score]}, over {d['n']} test problems, the retrain differs from the full run by "
        "{retrain_vs_full}, against RL's gain {retrain_full_gain}; cosine of the two Δs {retrain_cosine}. "
        "Parameters: {retrain_equal_bitwise} of the entries equal bitwise, {retrain_equal_1e5} within 1e-5, "
        "{retrain_equal_1e4} within 1e-4 (published: 94.0% DPO and 90.5% PRIME within 1e-5, 100% within 1e-4). "
        f"Greedy, exact McNemar: {ev.greedy['only_a']} vs {ev.greedy['only_b']} (p = {ev.greedy['p']:.3g})"
    )
    if gain["lo"] <= 0 <= gain["hi"]:
        return Verdict(
            INCONCLUSIVE,
            cmp,
            null,
            text + ": the full run's own gain is not above noise, so no margin relative to it can be set.",
            _power_text(gain, "the full run's gain"),
            **fields,
        )
    eq = tost(ev.retrain, ev.full, margin)
    same = cosine is not None and cosine >= RETRAIN_COSINE
    differs = d["lo"] > margin or d["hi"] < -margin
    if not eq["equivalent"] and not differs:
        return Verdict(INCONCLUSIVE, cmp, null, text + f" (TOST p = {eq['p']:.3g}).", _retrain_n(d, margin), **fields)
    v = REPRODUCES if eq["equivalent"] and same else (PARTLY if eq["equivalent"] or same else DOES_NOT)
    return Verdict(v, cmp, null, text + f" (TOST p = {eq['p']:.3g}).", **fields)


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


# ---- the registry ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evidence:
    """What the claims' rules read: the headline numbers by key (`num`: None where missing; `raw`: as measured,
    NaN kept), their 95% intervals (`bounds`), the spread over runs a mean came from (`spread`: mean, sd, lo, hi,
    k), and the paired evidence of the surgery and the retrain."""

    num: dict[str, float | None]
    raw: dict[str, object]
    bounds: dict[str, tuple]
    spread: dict[str, dict]
    surgery: dict[str, SurgeryEvidence | None]
    retrain: RetrainEvidence | None
    mask_name: str


@dataclass(frozen=True)
class Claim:
    """One published claim: its name, the statement as published and where, the headline number shown beside its
    verdict (`key`), every headline number its rule reads (`reads`), and the rule itself."""

    name: str
    statement: str
    source: str
    key: str
    reads: tuple[str, ...]
    rule: Callable[[Evidence], Verdict]

    def row(self, e: Evidence) -> dict:
        """This claim's row of the claims table."""
        return self.rule(e).row(self.name, self.statement, self.key, e.num[self.key])


def _sparsity(e: Evidence) -> Verdict:
    s = e.spread["changed_frac"]
    return sparsity_rule(
        s["mean"], s["lo"], s["hi"], sd=s["sd"], runs=s["k"], fp32=e.spread["fp32_changed_frac"]["mean"]
    )


def _full_rank(e: Evidence) -> Verdict:
    s = e.spread["mean_rank_frac"]
    return rank_rule(s["mean"], e.num["null_rank_frac"], s["lo"], s["hi"], sd=s["sd"], runs=s["k"])


def _seed_consistency(e: Evidence) -> Verdict:
    s = e.spread["seed_overlap"]
    r_hi, m_hi = e.bounds["seed_overlap_random"][1], e.bounds["seed_overlap_matched"][1]
    random_hi = r_hi if r_hi is not None else e.num["seed_overlap_random"]
    return overlap_rule(s["mean"], random_hi, m_hi, s["lo"], s["hi"], sd=s["sd"], pairs=s["k"])


def _cause(e: Evidence) -> Verdict:
    n = e.num
    return cause_rule(n["cause_sft_own"], n["cause_sft_foreign"], n["cause_rl_kl"], n["cause_rl_no_kl"])


CLAIMS: list[Claim] = [
    Claim(
        "sparsity",
        f"RL updates only {SPARSITY_RANGE} of the parameters",
        SOURCE,
        "changed_frac",
        ("changed_frac", "fp32_changed_frac", "lost_to_rounding_frac", "auc_small_weights"),
        _sparsity,
    ),
    Claim(
        "full rank",
        "each update matrix is nearly full rank (>99%)",
        SOURCE,
        "mean_rank_frac",
        ("mean_rank_frac", "null_rank_frac"),
        _full_rank,
    ),
    Claim(
        "seed consistency",
        "different seeds update nearly the same entries",
        SOURCE,
        "seed_overlap",
        ("seed_overlap", "seed_overlap_random", "seed_overlap_matched"),
        _seed_consistency,
    ),
    Claim(
        "subnetwork sufficiency",
        "the update on the subnetwork alone recovers the tuned accuracy",
        SOURCE,
        "patch_share",
        ("paired_gain", "patch_share", "patch_random_share", "patch_vs_random"),
        lambda e: surgery_rule("patch", e.surgery["patch"], e.mask_name),
    ),
    Claim(
        "subnetwork necessity",
        "resetting the subnetwork to base loses the tuned accuracy",
        SOURCE,
        "revert_share",
        ("paired_gain", "revert_share", "revert_random_share", "revert_vs_random"),
        lambda e: surgery_rule("revert", e.surgery["revert"], e.mask_name),
    ),
    Claim(
        "subnetwork-only training",
        "training only the subnetwork recovers the full run's accuracy and parameters",
        SOURCE,
        "retrain_vs_full",
        (
            "retrain_vs_full",
            "retrain_full_gain",
            "retrain_cosine",
            "retrain_equal_bitwise",
            "retrain_equal_1e5",
            "retrain_equal_1e4",
        ),
        lambda e: retrain_rule(e.retrain, e.raw["retrain_cosine"]),
    ),
    Claim(
        "in-distribution data",
        "training on data close to the policy's own distribution makes the update sparse",
        SOURCE,
        "cause_sft_own",
        ("cause_sft_own", "cause_sft_foreign", "cause_rl_kl", "cause_rl_no_kl"),
        _cause,
    ),
]

# The report's opening question: the claims in one paragraph.
QUESTION = (
    f"RL fine-tuning of a language model is reported to change only a small slice of its weights ({SPARSITY_RANGE}), "
    "yet each changed matrix is nearly full rank, the slice is almost the same across random seeds, and training "
    f"that slice alone recovers the full run ({SOURCE}). This study trained its own grid of RL runs and "
    "measured each of these claims, next to what simple causes — bf16 rounding, weight magnitude, a random sparse "
    "matrix of the same density — already predict."
)


def claims_table(e: Evidence, claims: list[Claim] | None = None) -> pd.DataFrame:
    """One verdict per claim (of CLAIMS unless given), with its comparison, null and what more data would decide."""
    return pd.DataFrame([c.row(e) for c in (CLAIMS if claims is None else claims)])
