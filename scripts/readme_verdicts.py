"""Copy a demo study's claims and headline tables to docs/demo/ and write them into the verdict lists of the README
and of docs/study.md.

    python scripts/readme_verdicts.py demo-out

tests/test_readme_verdicts.py checks that both lists are what these tables give.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pandas as pd

from rldelta.report.markdown import replace_block, verdict_list

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "demo"
PAGES = (ROOT / "README.md", ROOT / "docs" / "study.md")  # the pages holding the verdict list


def main(study: str) -> None:
    tables = Path(study) / "tables"
    DOCS.mkdir(parents=True, exist_ok=True)
    for name in ("claims", "headline"):
        shutil.copyfile(tables / f"{name}.csv", DOCS / f"{name}.csv")
    block = verdict_list(pd.read_csv(DOCS / "claims.csv"), pd.read_csv(DOCS / "headline.csv"))
    for page in PAGES:
        page.write_text(replace_block(page.read_text(), block))
    print(f"verdicts of README.md and docs/study.md from {tables}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "demo-out")
