"""Overlap of changed sets: planted intersections checked exactly, random masks against the random expectation."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from rldelta.cli import app
from rldelta.masks import Mask, MaskError, load_mask, random_mask, save_mask
from rldelta.metrics.overlap import (
    expected_matched_intersection,
    expected_random_overlap,
    intersection_size,
    jaccard,
    magnitude_matched_overlap,
    one_sided_overlap,
)
from rldelta.overlap import OVERLAP_SCHEMA, run_overlap

runner = CliRunner()


def _planted(numel: int, a_only: int, b_only: int, both: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two masks over `numel` entries with exactly these region sizes, at random positions."""
    perm = torch.randperm(numel, generator=torch.Generator().manual_seed(seed))
    a = torch.zeros(numel, dtype=torch.bool)
    b = torch.zeros(numel, dtype=torch.bool)
    a[perm[:both]] = b[perm[:both]] = True
    a[perm[both : both + a_only]] = True
    b[perm[both + a_only : both + a_only + b_only]] = True
    return a, b


def test_planted_intersection_pure():
    a, b = _planted(1000, a_only=180, b_only=80, both=120, seed=0)
    assert intersection_size(a, b) == 120
    assert one_sided_overlap(a, b) == 120 / 300
    assert one_sided_overlap(b, a) == 120 / 200
    assert jaccard(a, b) == 120 / 380
    assert math.isnan(one_sided_overlap(torch.zeros(5, dtype=torch.bool), torch.ones(5, dtype=torch.bool)))
    # Σ_t |A_t|·d(B_t) / |A|, by hand
    assert expected_random_overlap([100, 300], [0.5, 0.1]) == pytest.approx((50 + 30) / 400)


def test_matched_intersection_by_hand():
    n = torch.tensor([10, 20, 0, 5])
    a = torch.tensor([5, 2, 0, 5])
    b = torch.tensor([4, 10, 0, 1])
    assert expected_matched_intersection(a, b, n) == pytest.approx(5 * 4 / 10 + 2 * 10 / 20 + 5 * 1 / 5)
    assert magnitude_matched_overlap(a, b, n) == pytest.approx((2 + 1 + 1) / 12)
    # one cell per tensor: magnitude matching is the plain random expectation
    assert magnitude_matched_overlap(torch.tensor([30]), torch.tensor([50]), torch.tensor([100])) == pytest.approx(
        expected_random_overlap([30], [0.5])
    )
    with pytest.raises(ValueError):
        expected_matched_intersection(torch.tensor([11]), torch.tensor([1]), torch.tensor([10]))


def test_run_overlap_planted_exact(tmp_path):
    a1, b1 = _planted(40 * 25, a_only=180, b_only=80, both=120, seed=1)
    a2, b2 = _planted(64, a_only=10, b_only=30, both=6, seed=2)
    c1 = torch.zeros(40 * 25, dtype=torch.bool)
    c2 = torch.ones(64, dtype=torch.bool)
    masks = {}
    for label, (t1, t2) in {"A": (a1, a2), "B": (b1, b2), "C": (c1, c2)}.items():
        masks[label] = tmp_path / f"{label}.safetensors"
        save_mask(Mask.from_tensors({"w1": t1.reshape(40, 25), "w2": t2}), masks[label])
    inputs = [str(masks[k]) for k in "ABC"]
    res = run_overlap(inputs, tmp_path / "out")
    df = pd.read_parquet(tmp_path / "out" / "overlap.parquet")
    assert (
        list(df.columns)
        == OVERLAP_SCHEMA.names
        == ["a", "b", "tensor", "size_a", "size_b", "intersection", "overlap", "jaccard", "random_overlap"]
    )
    assert len(df) == 6 * 3  # 6 ordered pairs × (2 tensors + __total__)
    A, B = inputs[0], inputs[1]
    tot = df[(df.a == A) & (df.b == B) & (df.tensor == "__total__")].iloc[0]
    assert (tot.size_a, tot.size_b, tot.intersection) == (316, 236, 126)
    assert tot.overlap == 126 / 316
    assert tot.jaccard == 126 / (316 + 236 - 126)
    assert tot.random_overlap == pytest.approx((300 * 200 / 1000 + 16 * 36 / 64) / 316)
    w2 = df[(df.a == B) & (df.b == A) & (df.tensor == "w2")].iloc[0]
    assert (w2.size_a, w2.intersection, w2.overlap, w2.random_overlap) == (36, 6, 6 / 36, 16 / 64)
    # C is empty in w1: overlap from C is undefined there, overlap into C is 0
    assert np.isnan(df[(df.a == inputs[2]) & (df.b == A) & (df.tensor == "w1")].overlap.iloc[0])
    assert df[(df.a == A) & (df.b == inputs[2]) & (df.tensor == "w1")].overlap.iloc[0] == 0.0
    js = json.loads((tmp_path / "out" / "overlap.json").read_text())
    assert js["matrix"]["overlap"][0][1] == pytest.approx(126 / 316)
    assert js["matrix"]["overlap"][0][0] == 1.0
    assert len(js["pairs"]) == 6 and res["inputs"] == inputs
    assert (tmp_path / "out" / "overlap.png").read_bytes()[:4] == b"\x89PNG"


def test_independent_random_masks_match_random_expectation(tmp_path):
    g = torch.Generator().manual_seed(5)
    shapes = {"w1": (200, 100), "w2": (300, 50), "w3": (100, 100)}
    dens_a = {"w1": 0.05, "w2": 0.3, "w3": 0.6}
    dens_b = {"w1": 0.4, "w2": 0.1, "w3": 0.7}
    like_a = Mask.from_tensors({n: torch.rand(s, generator=g) < dens_a[n] for n, s in shapes.items()})
    like_b = Mask.from_tensors({n: torch.rand(s, generator=g) < dens_b[n] for n, s in shapes.items()})
    save_mask(random_mask(like_a, seed=11), tmp_path / "a.safetensors")
    save_mask(random_mask(like_b, seed=12), tmp_path / "b.safetensors")
    res = run_overlap([tmp_path / "a.safetensors", tmp_path / "b.safetensors"], tmp_path / "out", plot=False)
    ab = res["pairs"][0]
    a, b = load_mask(tmp_path / "a.safetensors"), load_mask(tmp_path / "b.safetensors")
    # sampling sd of |A∩B|: Σ_t over tensors of |A_t|·d_t(1-d_t) (hypergeometric ≤ binomial)
    var = 0.0
    for n in shapes:
        d = float(b.get(n).float().mean())
        var += int(a.get(n).sum()) * d * (1 - d)
    sd = math.sqrt(var) / ab["size_a"]
    assert abs(ab["overlap"] - ab["random_overlap"]) < 4 * sd
    # and the random expectation differs clearly from the naive global density of B
    assert abs(ab["random_overlap"] - ab["size_b"] / b.numel) > 10 * sd


def test_cli_overlap_table_and_errors(tmp_path):
    g = torch.Generator().manual_seed(0)
    for name in ("r1", "r2"):
        save_mask(Mask.from_tensors({"w": torch.rand(6, 5, generator=g) < 0.5}), tmp_path / f"{name}.safetensors")
    r = runner.invoke(
        app,
        ["overlap", str(tmp_path / "r1.safetensors"), str(tmp_path / "r2.safetensors"), "-o", str(tmp_path / "out")],
    )
    assert r.exit_code == 0, r.output
    assert "overlap A→B" in r.output and (tmp_path / "out" / "overlap.parquet").is_file()

    save_mask(Mask.from_tensors({"w": torch.zeros(6, 4, dtype=torch.bool)}), tmp_path / "bad.safetensors")
    r = runner.invoke(
        app,
        ["overlap", str(tmp_path / "r1.safetensors"), str(tmp_path / "bad.safetensors"), "-o", str(tmp_path / "out2")],
    )
    assert r.exit_code != 0
    assert "'w'" in r.output and "(6, 5)" in r.output and "(6, 4)" in r.output and "bad.safetensors" in r.output
    assert not (tmp_path / "out2" / "overlap.parquet").exists()

    (tmp_path / "diffdir").mkdir()
    (tmp_path / "diffdir" / "summary.json").write_text("{}")
    r = runner.invoke(
        app, ["overlap", str(tmp_path / "r1.safetensors"), str(tmp_path / "diffdir"), "-o", str(tmp_path / "out3")]
    )
    assert r.exit_code != 0 and "diffdir" in r.output and "mask.safetensors" in r.output

    r = runner.invoke(app, ["overlap", str(tmp_path / "r1.safetensors"), "-o", str(tmp_path / "out4")])
    assert r.exit_code != 0 and "two or more" in r.output


def test_overlap_needs_two():
    with pytest.raises(MaskError):
        run_overlap(["x"], "/nonexistent")
