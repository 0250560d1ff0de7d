"""The README's verdict list is the demo's claims table (docs/demo/claims.csv, copied from demo-out/tables by
scripts/readme_verdicts.py), and the report's verdict lines show each claim's paired comparison from its table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from rldelta.report.markdown import BEGIN, END, replace_block, verdict_line, verdict_list

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "docs" / "demo"


@pytest.mark.parametrize("page", ["README.md", "docs/study.md"])
def test_the_readme_lists_the_demo_claims_table(page):
    claims, headline = pd.read_csv(DEMO / "claims.csv"), pd.read_csv(DEMO / "headline.csv")
    readme = (ROOT / page).read_text()
    block = readme[readme.index(BEGIN) : readme.index(END) + len(END)]
    assert block == verdict_list(claims, headline)
    for rec in claims.to_dict("records"):
        assert f"**{rec['claim']} — {rec['verdict']}**" in block


def test_verdict_line_fills_numbers_and_the_paired_comparison():
    head = {
        "patch_share": {"value": 0.93, "format": "pct", "lo": 0.8, "hi": 1.05},
        "paired_gain": {"value": 1.5, "format": "num", "lo": None, "hi": None},
    }
    claim = {
        "claim": "subnetwork sufficiency",
        "verdict": "reproduces",
        "text": "RL gained {paired_gain}; the patch keeps {patch_share}; {absent}.",
        "difference": 0.25,
        "lo": 0.1,
        "hi": 0.4,
        "score": "ref_logprob",
        "test": "paired bootstrap",
        "n": 43.0,
        "more_data": "",
    }
    line = verdict_line(claim, head)
    assert line == (
        "- **subnetwork sufficiency — reproduces**: RL gained 1.500; the patch keeps 93.00% [80.00%, 105.00%]; —."
        " Paired on ref_logprob: difference 0.250 [0.100, 0.400] (paired bootstrap, n = 43)."
    )


def test_replace_block_needs_its_markers():
    assert replace_block(f"a {BEGIN} old {END} b", "NEW") == "a NEW b"
    with pytest.raises(ValueError):
        replace_block("no markers", "NEW")
