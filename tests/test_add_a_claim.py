"""Adding a claim touches one file: the diff in docs/add-a-claim.md, applied to study/claims.py alone, adds a row
to the claims table and to the report's verdict section; without it both are as before."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

from rldelta.report.sections import verdicts_section
from rldelta.study import claims

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "add-a-claim.md"


def _diff() -> str:
    return re.search(r"```diff\n(.*?)```", DOC.read_text(), re.S).group(1)


def apply(diff: str, text: str) -> str:
    """Apply a diff of one hunk made of context and added lines: the context must occur once in `text`."""
    body = [line for line in diff.splitlines() if not line.startswith(("---", "+++", "@@"))]
    old = [line[1:] for line in body if line.startswith(" ")]
    new = [line[1:] for line in body if line.startswith((" ", "+"))]
    assert all(line.startswith((" ", "+")) for line in body), "the toy diff only adds lines"
    lines = text.splitlines()
    at = [i for i in range(len(lines)) if lines[i : i + len(old)] == old]
    assert len(at) == 1, f"the diff's context occurs {len(at)} times"
    return "\n".join(lines[: at[0]] + new + lines[at[0] + len(old) :]) + "\n"


def _load(text: str, tmp_path: Path):
    path = tmp_path / "claims_with_toy.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("claims_with_toy", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def _evidence(module, changed: float | None):
    """A study that measured only the changed fraction: every other claim is "not measured"."""
    keys = {k for c in module.CLAIMS for k in (c.key, *c.reads)}
    empty = {"mean": None, "sd": None, "lo": None, "hi": None, "k": 0}
    num = dict.fromkeys(keys) | {"changed_frac": changed}
    return module.Evidence(
        num=num,
        raw=dict(num),
        bounds=dict.fromkeys(keys, (None, None)),
        spread=dict.fromkeys(keys, empty),
        surgery={"patch": None, "revert": None},
        retrain=None,
        mask_name="the toy mask",
    )


def _headline(changed: float | None):
    import pandas as pd

    return pd.DataFrame([{"key": "changed_frac", "value": changed, "format": "pct", "lo": None, "hi": None}])


def test_the_documented_diff_touches_one_file() -> None:
    files = re.findall(r"^\+\+\+ b/(\S+)", _diff(), re.M)
    assert files == ["src/rldelta/study/claims.py"]


@pytest.mark.parametrize(("changed", "verdict"), [(0.1, claims.REPRODUCES), (0.7, claims.DOES_NOT)])
def test_a_toy_claim_added_and_removed(tmp_path, changed, verdict) -> None:
    source = (ROOT / "src" / "rldelta" / "study" / "claims.py").read_text()
    with_toy = _load(apply(_diff(), source), tmp_path)
    table = with_toy.claims_table(_evidence(with_toy, changed))
    assert list(table["claim"]) == ["toy"] + [c.name for c in claims.CLAIMS]
    toy = table.iloc[0]
    assert (toy["verdict"], toy["published"], toy["value"]) == (
        verdict,
        "RL changes fewer than half of the entries",
        changed,
    )
    page = "".join(verdicts_section({"claims": table, "headline": _headline(changed)}))
    assert "<b>toy</b>" in page and "RL changes fewer than half of the entries" in page

    # removed again: the registry as shipped, and the same study, give the table without it
    without = claims.claims_table(_evidence(claims, changed))
    assert list(without["claim"]) == [c.name for c in claims.CLAIMS]
    assert without.equals(table.iloc[1:].reset_index(drop=True))
    assert "<b>toy</b>" not in "".join(verdicts_section({"claims": without, "headline": _headline(changed)}))


def test_apply_can_fail() -> None:
    with pytest.raises(AssertionError):
        apply(" not in the file\n+added\n", "some text\n")
