"""docs/formats.md's measured block is the formats study's tables (docs/formats/*.csv, copied from the study by
scripts/formats_tables.py), and the Markdown it is written in shows each table's numbers."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

from rldelta.report.markdown import (
    SELECTION_BEGIN,
    SELECTION_END,
    SUMMARY_BEGIN,
    SUMMARY_END,
    selection_markdown,
    selection_summary_markdown,
)

ROOT = Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location("formats_tables", ROOT / "scripts" / "formats_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_page_shows_the_study_tables():
    page = (ROOT / "docs" / "formats.md").read_text()
    measured = page[page.index(SELECTION_BEGIN) : page.index(SELECTION_END) + len(SELECTION_END)]
    assert measured == _script().block()
    readme = (ROOT / "README.md").read_text()
    assert readme[readme.index(SUMMARY_BEGIN) : readme.index(SUMMARY_END) + len(SUMMARY_END)] == _script().summary()


def test_selection_markdown_by_hand():
    pre = pd.DataFrame(
        [
            {
                "size": "1m",
                "parameters": 827136,
                "steps": 2112,
                "step_cap": 4000,
                "plateau": "plateau at step 1520",
                "final_loss": 0.131,
                **{f"{f}_corpus": v for f, v in zip(("code", "plain", "boxed"), (0.5, 0.3, 0.2))},
                **{f"{f}_sampled": v for f, v in zip(("code", "plain", "boxed"), (0.51, 0.27, 0.21))},
                **{f"{f}_accuracy": v for f, v in zip(("code", "plain", "boxed"), (0.19, 0.4, None))},
            }
        ]
    )
    claims = pd.DataFrame(
        [
            {"run": "1m", "dominance": "partly", "format": "plain", "step": 40.0, "epoch_fraction": 0.25, "share": 0.93,
             "origin": "most_accurate", "text": "partly: plain ..."},
            {"run": "all", "algo": "grpo", "dominance": None, "format": None, "step": None, "epoch_fraction": None,
             "share": None, "origin": "undecided", "text": "undecided: fewer than two sizes"},
        ]
    )  # fmt: skip
    steering = pd.DataFrame(
        [
            {"size": "1m", "target": "plain", "method": "prompt", "setting": "answer lead", "share": 0.996,
             "share_low": 0.986, "share_high": 0.999, "accuracy": 0.43, "flops": 1.69e9, "share_of_rl_flops": 0.0018,
             "changed_frac": None, "overlap": None, "random_overlap": None},
        ]
    )  # fmt: skip
    md = selection_markdown(pre, claims, steering, ["1m → plain: ..."])
    assert md.startswith(SELECTION_BEGIN) and md.endswith(SELECTION_END)
    assert "| 1m | 827,136 | 2112 of ≤ 4000 | plateau at step 1520 | 0.131 | 50.00% / 30.00% / 20.00% |" in md
    assert "| 0.190 / 0.400 / — |" in md
    assert "- **1m**: partly: plain ..." in md and "- **size, grpo**: undecided: fewer than two sizes" in md
    assert "| 1m | partly | plain | 40 (0.25 epochs) | 93.00% | most_accurate |" in md
    assert "| 1m → plain | prompt | answer lead | 0.996 [0.986, 0.999] | 0.430 | 1.7e+09 | 0.18% | — | — |" in md
    assert "- 1m → plain: ..." in md
    rl = {**steering.iloc[0].to_dict(), "method": "rl", "setting": "run", "share": 0.86, "share_of_rl_flops": 1.0}
    sft = [
        {**steering.iloc[0].to_dict(), "method": "sft", "setting": f"k={k}", "share": v}
        for k, v in ((4, 0.8), (16, 0.5))
    ]
    both = pd.DataFrame([rl, steering.iloc[0].to_dict(), *sft]).assign(baseline_share=0.27, baseline_accuracy=0.28)
    summary = selection_summary_markdown(claims, both, ["1m → plain: ..."])
    assert summary.startswith(SUMMARY_BEGIN) and summary.endswith(SUMMARY_END)
    # RL first, then each method's best setting: SFT at k=4 (0.8), not k=16
    rows = [line for line in summary.splitlines() if line.startswith("| 1m → plain")]
    assert [r.split(" | ")[2] for r in rows] == ["GRPO, 3 epochs", "prompt: answer lead", "sft: k=4"]
    assert rows[0] == "| 1m → plain | 0.270, 0.280 | GRPO, 3 epochs | 0.860 [0.986, 0.999] | 0.430 | 100.00% |"
