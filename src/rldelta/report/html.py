"""The study report: one self-contained HTML file (plots embedded as base64 PNG, no external assets).

Every number on the page is rendered from the study's exported tables by `cell()` (report/blocks.py), which tags it
with the table, row and column it came from (`data-table`, `data-row`, `data-col`) and the exact value
(`data-value`), so anyone (and the tests) can check the page against tables/*.parquet. A number is shown in its
column's unit, looked up by the column's name in `rldelta.columns`. The page is its sections in reading order
(report/sections.py, report/probe_sections.py): a new section is one function there and one entry in SECTIONS.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from rldelta.columns import fmt
from rldelta.report.blocks import CSS, cell
from rldelta.report.law_section import law_section
from rldelta.report.probe_sections import PROBE_SECTIONS
from rldelta.report.sections import (
    cause_section,
    experts_section,
    head_section,
    headline_section,
    plots_section,
    setup_section,
    surgery_section,
    tables_section,
    verdicts_section,
    why_section,
)
from rldelta.report.selection_section import selection_section
from rldelta.runtime.atomic import atomic_write_bytes

SECTIONS = (
    why_section,
    setup_section,
    headline_section,
    verdicts_section,
    plots_section,
    experts_section,
    surgery_section,
    cause_section,
    *PROBE_SECTIONS,
    selection_section,
    law_section,
    tables_section,
)


def render(tables: dict[str, pd.DataFrame], question: str | None = None) -> str:
    """The report as one HTML string; `question` opens it (the study passes its claims' question)."""
    parts = head_section(tables, question)
    for section in SECTIONS:
        parts += section(tables)
    return "\n".join(parts)


def write_report(tables: dict[str, pd.DataFrame], path: str | Path, question: str | None = None) -> Path:
    """Render the report and write it atomically; returns its path."""
    path = Path(path)
    atomic_write_bytes(path, render(tables, question).encode())
    return path


__all__ = ["render", "write_report", "fmt", "cell", "CSS"]
