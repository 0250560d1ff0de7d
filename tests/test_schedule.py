"""The diff hands out the costliest tensors first (rank: k²·L + k³ per 2-D slice; without ranks, the entry count),
and its files keep the checkpoint's order whatever order the work was done in."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from rldelta import diff as diff_mod
from rldelta.checkpoint import open_checkpoint
from rldelta.diff import run_diff

SHAPES = {
    "a.norm": (300,),
    "b.square": (40, 40),  # 40²·40 + 40³ = 128,000
    "c.tall": (200, 30),  # 30²·200 + 30³ = 207,000
    "d.wide": (20, 90),  # 20²·90 + 20³ = 44,000
    "e.experts": (3, 30, 30),  # 3 · (30³ + 30³) = 162,000
}
BY_RANK_COST = ["c.tall", "e.experts", "b.square", "d.wide", "a.norm"]
BY_SIZE = ["c.tall", "e.experts", "d.wide", "b.square", "a.norm"]  # 6000, 2700, 1800, 1600, 300 entries


def _pair(tmp_path: Path) -> tuple[Path, Path]:
    g = torch.Generator().manual_seed(0)
    base = {n: torch.randn(s, generator=g).bfloat16() for n, s in SHAPES.items()}
    tuned = {n: (t.float() + 0.05 * torch.randn(t.shape, generator=g)).bfloat16() for n, t in base.items()}
    for side, tensors in (("base", base), ("tuned", tuned)):
        (tmp_path / side).mkdir()
        save_file(tensors, tmp_path / side / "model.safetensors")
    return tmp_path / "base", tmp_path / "tuned"


@pytest.mark.parametrize("rank,expect", [(True, BY_RANK_COST), (False, BY_SIZE)])
def test_costliest_first_files_in_checkpoint_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rank: bool, expect: list[str]
) -> None:
    base, tuned = _pair(tmp_path)
    handed: list[list[str]] = []
    real = diff_mod._results
    monkeypatch.setattr(
        diff_mod, "_results", lambda b, t, names, *a: handed.append(list(names)) or real(b, t, names, *a)
    )
    run_diff(base, tuned, tmp_path / "out", rank=rank, workers=2)
    assert handed == [expect]
    rows = pd.read_parquet(tmp_path / "out" / "tensors.parquet")
    on_disk = open_checkpoint(base).names()
    assert list(dict.fromkeys(rows["name"])) == on_disk
