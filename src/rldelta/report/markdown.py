"""The claims table as a Markdown list, for the README: the same verdicts, texts and numbers as the report's verdict
lines (each {key} of a verdict's text replaced by that headline number and its interval, as the report shows it);
and the format-selection study's tables as Markdown, for docs/formats.md (scripts/formats_tables.py)."""

from __future__ import annotations

import re

import pandas as pd

from rldelta.columns import fmt, is_missing

BEGIN, END = "<!-- BEGIN verdicts (scripts/readme_verdicts.py) -->", "<!-- END verdicts -->"
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def _number(rec: dict | None) -> str:
    if rec is None:
        return fmt(None, "num")
    text = fmt(None if is_missing(rec["value"]) else rec["value"], rec["format"])
    if not is_missing(rec.get("lo")) and not is_missing(rec.get("hi")):
        text += f" [{fmt(rec['lo'], rec['format'])}, {fmt(rec['hi'], rec['format'])}]"
    return text


def verdict_line(claim: dict, headline: dict[str, dict]) -> str:
    """One claim as a Markdown bullet: verdict, text with its numbers, the paired comparison, what would decide it."""
    text = _PLACEHOLDER.sub(lambda m: _number(headline.get(m.group(1))), claim["text"])
    line = f"- **{claim['claim']} — {claim['verdict']}**: {text}"
    if not is_missing(claim.get("difference")):
        line += (
            f" Paired on {claim['score']}: difference {fmt(claim['difference'], 'num')} "
            f"[{fmt(claim['lo'], 'num')}, {fmt(claim['hi'], 'num')}] ({claim['test']}, n = {int(claim['n'])})."
        )
    if not is_missing(claim.get("more_data")) and claim.get("more_data"):
        line += f" To decide: {claim['more_data']}."
    return line


def verdict_list(claims: pd.DataFrame, headline: pd.DataFrame) -> str:
    """The README's verdict block, markers included."""
    head = {r["key"]: r for r in headline.to_dict("records")}
    lines = [verdict_line(c, head) for c in claims.to_dict("records")]
    return "\n".join([BEGIN, *lines, END])


def replace_block(text: str, block: str, begin: str = BEGIN, end: str = END) -> str:
    """`text` with its block (`begin` … `end`, the verdicts' by default) replaced by `block`."""
    a, b = text.find(begin), text.find(end)
    if a < 0 or b < a:
        raise ValueError(f"no {begin} … {end} block")
    return text[:a] + block + text[b + len(end) :]


# ---- the format-selection study (docs/formats.md) ---------------------------------------------------------------

SELECTION_BEGIN, SELECTION_END = "<!-- BEGIN formats (scripts/formats_tables.py) -->", "<!-- END formats -->"
_FORMATS = ("code", "plain", "boxed")


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(header: list[str], rows: list[list]) -> list[str]:
    return [_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows)]


def _shares(rec: dict, suffix: str, kind: str) -> str:
    return " / ".join(fmt(None if is_missing(rec[f"{f}_{suffix}"]) else rec[f"{f}_{suffix}"], kind) for f in _FORMATS)


def _pretraining_md(pre: pd.DataFrame) -> list[str]:
    rows = [
        [
            r["size"],
            fmt(int(r["parameters"]), "int"),
            f"{int(r['steps'])} of ≤ {int(r['step_cap'])}",
            r["plateau"],
            fmt(r["final_loss"], "num"),
            _shares(r, "corpus", "pct"),
            _shares(r, "sampled", "pct"),
            _shares(r, "accuracy", "num"),
        ]
        for r in pre.to_dict("records")
    ]
    head = ["size", "parameters", "steps", "loss curve", "final loss", "corpus: code / plain / boxed"]
    return _table([*head, "sampled after pretraining", "accuracy within each"], rows)


def _size_lines(claims: pd.DataFrame) -> list[str]:
    """Claim (c), one line per algorithm (its rows are run "all")."""
    rows = [r for r in claims.to_dict("records") if r["run"] == "all"]
    return [
        f"- **size, {r['algo']}**: {r['text']}" if not is_missing(r.get("algo")) else f"- **size**: {r['text']}"
        for r in rows
    ]


def _claims_md(claims: pd.DataFrame) -> list[str]:
    runs = [r for r in claims.to_dict("records") if r["run"] != "all"]
    rows = [
        [
            r["run"],
            r["dominance"],
            r["format"],
            "—" if is_missing(r["step"]) else f"{int(r['step'])} ({float(r['epoch_fraction']):.2f} epochs)",
            fmt(r["share"], "pct"),
            r["origin"],
        ]
        for r in runs
    ]
    lines = [f"- **{r['run']}**: {r['text']}" for r in runs]
    lines += _size_lines(claims)
    return [
        *lines,
        "",
        *_table(["run", "(a) one format ≥ 90%", "format", "from step", "its share", "(b) winner"], rows),
    ]


def _steering_md(steering: pd.DataFrame) -> list[str]:
    rows = []
    for r in steering.to_dict("records"):
        share = f"{fmt(r['share'], 'num')} [{fmt(r['share_low'], 'num')}, {fmt(r['share_high'], 'num')}]"
        changed = "—" if is_missing(r["changed_frac"]) else fmt(r["changed_frac"], "pct")
        overlap = "—" if is_missing(r["overlap"]) else f"{fmt(r['overlap'], 'pct')} ({fmt(r['random_overlap'], 'pct')})"
        setting = "GRPO run, final step" if r["method"] == "rl" else r["setting"]
        rows.append(
            [
                f"{r['size']} → {r['target']}",
                r["method"],
                setting,
                share,
                fmt(r["accuracy"], "num"),
                f"{float(r['flops']):.2g}",
                fmt(r["share_of_rl_flops"], "pct"),
                changed,
                overlap,
            ]
        )
    head = ["model → format", "method", "setting", "share [95%]", "accuracy", "FLOPs", "of RL's", "weights changed"]
    return _table([*head, "overlap with RL (chance)"], rows)


def selection_markdown(
    pretraining: pd.DataFrame, claims: pd.DataFrame, steering: pd.DataFrame, answers: list[str]
) -> str:
    """docs/formats.md's measured block, markers included: the mixture models, the claims, the steering sweeps."""
    parts = [SELECTION_BEGIN, "**The mixture models after pretraining**", "", *_pretraining_md(pretraining), ""]
    parts += [
        "**The Echo Chamber claims** (each RL run; the size claim over the GRPO runs)",
        "",
        *_claims_md(claims),
        "",
    ]
    parts += [
        "**Steering instead of RL**",
        "",
        *(f"- {a}" for a in answers),
        "",
        *_steering_md(steering),
        SELECTION_END,
    ]
    return "\n".join(parts)


SUMMARY_BEGIN, SUMMARY_END = (
    "<!-- BEGIN formats summary (scripts/formats_tables.py) -->",
    "<!-- END formats summary -->",
)


def _best_rows(steering: pd.DataFrame) -> list[list]:
    """Per model → format: RL's row, then each method's setting with the largest share."""
    rows = []
    for (size, target), sub in steering.groupby(["size", "target"], sort=False):
        recs = sub.to_dict("records")
        picked = [r for r in recs if r["method"] == "rl"]
        for method in dict.fromkeys(r["method"] for r in recs if r["method"] != "rl"):
            picked.append(max((r for r in recs if r["method"] == method), key=lambda r: r["share"]))
        for r in picked:
            share = f"{fmt(r['share'], 'num')} [{fmt(r['share_low'], 'num')}, {fmt(r['share_high'], 'num')}]"
            setting = "GRPO, 3 epochs" if r["method"] == "rl" else f"{r['method']}: {r['setting']}"
            base = f"{fmt(r['baseline_share'], 'num')}, {fmt(r['baseline_accuracy'], 'num')}"
            rows.append(
                [
                    f"{size} → {target}",
                    base,
                    setting,
                    share,
                    fmt(r["accuracy"], "num"),
                    fmt(r["share_of_rl_flops"], "pct"),
                ]
            )
    return rows


def selection_summary_markdown(claims: pd.DataFrame, steering: pd.DataFrame, answers: list[str]) -> str:
    """The README's block: the claims as a table and a line per algorithm for size, each method's best steering
    beside RL, the answers."""
    table = _claims_md(claims)
    claim_table = table[table.index("") + 1 :]  # the table without the verdict lines above it
    head = ["model → format", "without (share, accuracy)", "intervention (best setting)", "share [95%]", "accuracy"]
    steer = _table([*head, "FLOPs, of RL's"], _best_rows(steering))
    parts = [SUMMARY_BEGIN, *claim_table, "", *_size_lines(claims), "", *steer, "", *(f"- {a}" for a in answers)]
    return "\n".join([*parts, SUMMARY_END])
