"""Copy a formats study's tables to docs/formats/ and write them into docs/formats.md's measured block and the
README's summary of it.

    python scripts/formats_tables.py formats-out

tests/test_formats_doc.py checks that both blocks are what these tables give.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pandas as pd

from rldelta.report.markdown import (
    SELECTION_BEGIN,
    SELECTION_END,
    SUMMARY_BEGIN,
    SUMMARY_END,
    replace_block,
    selection_markdown,
    selection_summary_markdown,
)

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "formats"
PAGE = ROOT / "docs" / "formats.md"
README = ROOT / "README.md"
TABLES = ("selection_pretraining", "selection_claims", "steering", "probe_formats", "probe_verdicts")


def _answers() -> list[str]:
    verdicts = pd.read_csv(DOCS / "probe_verdicts.csv")
    return verdicts[verdicts["probe"] == "steering instead of RL"]["verdict"].tolist()


def block() -> str:
    """The page's measured block from the tables in docs/formats/."""
    pre, claims = pd.read_csv(DOCS / "selection_pretraining.csv"), pd.read_csv(DOCS / "selection_claims.csv")
    return selection_markdown(pre, claims, pd.read_csv(DOCS / "steering.csv"), _answers())


def summary() -> str:
    """The README's block from the same tables."""
    claims, steering = pd.read_csv(DOCS / "selection_claims.csv"), pd.read_csv(DOCS / "steering.csv")
    return selection_summary_markdown(claims, steering, _answers())


def main(study: str) -> None:
    DOCS.mkdir(parents=True, exist_ok=True)
    for name in TABLES:
        shutil.copyfile(Path(study) / "tables" / f"{name}.csv", DOCS / f"{name}.csv")
    PAGE.write_text(replace_block(PAGE.read_text(), block(), SELECTION_BEGIN, SELECTION_END))
    README.write_text(replace_block(README.read_text(), summary(), SUMMARY_BEGIN, SUMMARY_END))
    print(f"docs/formats.md's measured block and the README's summary from {study}/tables")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "formats-out")
