"""Copy a demo study's claims and headline tables to docs/demo/ and write them into the README's verdict list.

    python scripts/readme_verdicts.py demo-out

tests/test_readme_verdicts.py checks that the README's list is what these tables give.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pandas as pd

from rldelta.report.markdown import replace_block, verdict_list

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "demo"


def main(study: str) -> None:
    tables = Path(study) / "tables"
    DOCS.mkdir(parents=True, exist_ok=True)
    for name in ("claims", "headline"):
        shutil.copyfile(tables / f"{name}.csv", DOCS / f"{name}.csv")
    readme = ROOT / "README.md"
    block = verdict_list(pd.read_csv(DOCS / "claims.csv"), pd.read_csv(DOCS / "headline.csv"))
    readme.write_text(replace_block(readme.read_text(), block))
    print(f"README verdicts from {tables}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "demo-out")
