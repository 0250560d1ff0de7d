"""The log-prob probe's verdicts, each one line from its numbers: suppression vs amplification (and where the
probability mass went), the two phases, positive vs negative advantages. probes/logprobs.py measures them."""

from __future__ import annotations

import pandas as pd

# A component "carries" the gain or the change when it holds at least this share of the sum of both.
CARRIES = 0.6


def _fmt(x: float | None, spec: str = "+.2f") -> str:
    return "n/a" if x is None else format(x, spec)


def verdict_logprobs(s: dict, has_both: bool) -> str:
    f = s["final"]
    if not has_both:
        kind = "correct" if s["wrong"] == 0 else "wrong"
        return (
            f"Not measurable: every probe completion sampled from the base is {kind}, so there is no "
            f"{'wrong' if kind == 'correct' else 'correct'} set to follow (raise the probe size or pick a harder task)."
        )
    a, sup = f["amplification"], f["suppression"]
    if a is None or sup is None:
        return "Not measurable."

    def moved(x: float) -> str:
        return f"{'rose' if x > 0 else 'fell'} by {abs(x):.2f} nats"

    text = (
        f"At step {int(f['step'])}, log p(correct) {moved(a)} and log p(wrong) {moved(-sup)} per completion "
        f"(probe: {s['correct']} correct and {s['wrong']} wrong base samples): "
    )
    if a <= 0 and sup <= 0:
        return text + "neither component moved towards the correct completions."
    if a > 0 and sup <= 0:
        return text + "amplification only (the wrong completions did not become less likely)."
    if sup > 0 and a <= 0:
        return text + "suppression only (the correct completions did not become more likely)."
    lead, share = ("suppression", sup / (a + sup)) if sup > a else ("amplification", a / (a + sup))
    if share >= CARRIES:
        return text + f"RL worked mostly by {lead} ({share:.0%} of the movement)."
    return text + f"both components moved comparably ({lead} {share:.0%})."


def mass_text(s: dict) -> str:
    b, f = s["base_stats"].get("correct_share"), s["final"].get("correct_share")
    if b is None or f is None:
        return ""
    return f" Within prompts that have both, the correct completions' share of the probability mass went {b:.2f} → {f:.2f}."


def verdict_phases(ph: dict | None, sub: pd.DataFrame) -> str:
    if ph is None:
        return "Not measurable (needs correct and wrong probe completions and at least one saved step)."
    ent = sub["probe_entropy"].tolist()
    ent_text = f"; policy entropy on the probe set {ent[0]:.3f} → {ent[-1]:.3f} nats/token" if ent else ""

    def who(d: str) -> str:
        return "neither component (both moved away from the correct completions)" if d == "neither" else d

    steps = ", ".join(str(int(x)) for x in sub["step"].iloc[1:])
    if ph["switch_step"] is None:
        return (
            f"One phase: {who(ph['first_dominant'])} led in the first interval and no lasting switch followed "
            f"(checkpoints at steps {steps}){ent_text}."
        )
    return (
        f"Two phases: {who(ph['first_dominant'])} led first, then from step {ph['switch_step']} "
        f"{who(ph['last_dominant'])}{ent_text}."
    )


def verdict_advantages(adv: pd.DataFrame) -> str:
    by = {r["run"]: r for r in adv.to_dict("records")}
    if not {"base", "all", "positive", "negative"} <= set(by):
        missing = {"positive", "negative"} - set(by)
        return f"Needs both split runs ({', '.join(sorted(missing))} missing)."
    b = by["base"]["accuracy"]
    gain = {k: by[k]["accuracy"] - b for k in ("all", "positive", "negative")}
    change = {k: by[k]["changed_frac"] for k in ("positive", "negative")}
    gp, gn = max(gain["positive"], 0.0), max(gain["negative"], 0.0)
    if gp + gn == 0:
        acc_text = "neither half alone raised greedy accuracy"
    else:
        lead = "negative" if gn > gp else "positive"
        acc_text = f"the {lead}-advantage half carries {max(gp, gn) / (gp + gn):.0%} of the accuracy gain"
    cp, cn = change["positive"], change["negative"]
    if cp == cn:
        ch_text = f"both halves changed {cp:.2%} of the weights"
    else:
        ch_lead = "negative" if cn > cp else "positive"
        ch_text = (
            f"the {ch_lead}-advantage half changed more weights ({max(cp, cn):.2%} vs {min(cp, cn):.2%}; "
            f"full run {by['all']['changed_frac']:.2%})"
        )
    return (
        f"Greedy accuracy base {b:.3f}, all {by['all']['accuracy']:.3f}, positive-only "
        f"{by['positive']['accuracy']:.3f}, negative-only {by['negative']['accuracy']:.3f}: {acc_text}; "
        f"{ch_text}; overlap with the full run's changed set: positive {_fmt(by['positive']['overlap_with_all'], '.2%')}, "
        f"negative {_fmt(by['negative']['overlap_with_all'], '.2%')}."
    )
