"""The claims table as a Markdown list, for the README: the same verdicts, texts and numbers as the report's verdict
lines (each {key} of a verdict's text replaced by that headline number and its interval, as the report shows it)."""

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


def replace_block(text: str, block: str) -> str:
    """`text` with its verdict block (BEGIN … END) replaced by `block`."""
    a, b = text.find(BEGIN), text.find(END)
    if a < 0 or b < a:
        raise ValueError(f"no {BEGIN} … {END} block")
    return text[:a] + block + text[b + len(END) :]
