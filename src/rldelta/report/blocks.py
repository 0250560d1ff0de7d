"""The pieces every section of the study report is made of: a number tagged with the table, row and column it came
from (`cell`), a table, a figure, a verdict template filled with headline numbers, and the page's style."""

from __future__ import annotations

import base64
import html
import re

import pandas as pd

from rldelta.columns import MISSING, fmt, is_missing, kind_of


def py(value):
    """numpy scalars to Python; NaN and None alike to None."""
    if hasattr(value, "item"):
        value = value.item()
    return None if is_missing(value) else value


def cell(table: str, row: int, col: str, value, kind: str | None = None) -> str:
    """A number from tables/<table>.parquet, tagged with where it came from."""
    value = py(value)
    kind = kind or kind_of(col, value)
    text = html.escape(fmt(value, kind))
    if kind == "text":
        return text
    return (
        f'<span class="num" data-table="{table}" data-row="{row}" data-col="{html.escape(col)}" '
        f'data-fmt="{kind}" data-value="{html.escape(repr(value))}">{text}</span>'
    )


def table_html(
    tables: dict[str, pd.DataFrame], name: str, cols: list[str] | None = None, headers: dict[str, str] | None = None
) -> str:
    df = tables[name]
    cols = [c for c in (cols or list(df.columns)) if c in df.columns]
    if not len(df):
        return "<p class='note'>(empty)</p>"
    head = "".join(f"<th>{html.escape((headers or {}).get(c, c))}</th>" for c in cols)
    body = []
    for i, rec in enumerate(df.to_dict("records")):
        body.append("<tr>" + "".join(f"<td>{cell(name, i, c, rec[c])}</td>" for c in cols) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def claim_text(text: str, headline: pd.DataFrame) -> str:
    """A verdict template with {key} replaced by that headline number (tagged like every other number)."""
    rows = {k: i for i, k in enumerate(headline["key"])}
    out, last = [], 0
    for m in _PLACEHOLDER.finditer(text):
        out.append(html.escape(text[last : m.start()]))
        i = rows.get(m.group(1))
        if i is None:
            out.append(MISSING)  # a number this study did not measure (a probe or stage that was off)
        else:
            rec = headline.iloc[i].to_dict()
            out.append(
                cell("headline", i, "value", rec["value"], rec["format"]) + interval("headline", i, rec, rec["format"])
            )
        last = m.end()
    out.append(html.escape(text[last:]))
    return "".join(out)


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.7em;margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0;font-size:.85em}th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f3f3f3}td .num{font-variant-numeric:tabular-nums}
.verdict{margin:.5em 0;padding:.5em .8em;border-left:5px solid #999;background:#fafafa}
.verdict.yes{border-color:#2a8a3a}.verdict.no{border-color:#c0392b}.verdict.part{border-color:#d4a017}
.verdict b.tag{display:inline-block;min-width:12em}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}.note{color:#666;font-size:.9em}
figure{margin:1em 0}figcaption{color:#555;font-size:.9em}
"""


def verdict_class(v: str) -> str:
    if v.startswith(("reproduces", "supported")):
        return "yes"
    if v.startswith(("does not", "not supported")):
        return "no"
    return "part"


def interval(table: str, i: int, rec: dict, kind: str) -> str:
    """A headline number's 95% interval, "[lo, hi]", each end tagged; empty when it has none."""
    if py(rec.get("lo")) is None or py(rec.get("hi")) is None:
        return ""
    return f" [{cell(table, i, 'lo', rec['lo'], kind)}, {cell(table, i, 'hi', rec['hi'], kind)}]"


def figure(fid: str, title: str, png: bytes, caption: str) -> str:
    return (
        f"<figure id='{fid}'><h3>{html.escape(title)}</h3>{img(png, title)}"
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )
