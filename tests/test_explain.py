"""Null models of `rldelta explain`, on synthetic checkpoints built so that the answer is known."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file
from scipy.stats import mannwhitneyu
from typer.testing import CliRunner

from conftest import bf16_rne, bits
from rldelta.cli import app
from rldelta.diff import run_diff
from rldelta.explain import ExplainError, run_explain
from rldelta.masks import Mask, save_mask
from rldelta.metrics.nulls import random_sparse_matrix, random_sparse_rank_null
from rldelta.metrics.precision import (
    EXP_OFFSET,
    auc_from_counts,
    half_ulp,
    half_ulp_exponent_index,
    half_ulp_index_table,
    magnitude_key,
    quantile_group_fractions,
    roc_auc,
    solve_s_star,
    ulp,
)
from rldelta.metrics.rank import rank_stats

runner = CliRunner()
NAMES = ("model.layers.0.mlp.up_proj.weight", "model.layers.1.mlp.up_proj.weight", "model.norm.weight")


def _next_up_gap(x: torch.Tensor) -> np.ndarray:
    """Independent ULP: the distance from |x| to the value whose bit pattern is one higher, in float64."""
    bits = x.abs().view(torch.int16)
    nxt = (bits + 1).view(x.dtype)
    return nxt.double().numpy() - x.abs().double().numpy()


@pytest.mark.parametrize("dtype,last_finite", [(torch.bfloat16, 0x7F7E), (torch.float16, 0x7BFE)])
def test_ulp_every_finite_value(dtype, last_finite):
    x = torch.arange(0, last_finite + 1, dtype=torch.int32).to(torch.int16).view(dtype)  # every finite |w|
    np.testing.assert_array_equal(ulp(x, dtype).double().numpy(), _next_up_gap(x))
    np.testing.assert_array_equal(half_ulp(-x, dtype).double().numpy(), _next_up_gap(x) / 2)
    # the per-key lookup the engine uses gives the same half-ULP bin as the per-entry computation
    key = magnitude_key(x).long()
    assert torch.equal(half_ulp_index_table(dtype)[key], half_ulp_exponent_index(x, dtype))
    assert torch.equal(key, (x.float().abs().view(torch.int32) >> 16).long())  # monotone fp32 key
    assert bool((key[1:] >= key[:-1]).all())


def test_roc_auc_matches_mann_whitney_with_ties():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 12, (500,), generator=g).float()  # many ties
    labels = torch.rand(500, generator=g) < 0.2 + 0.04 * scores
    s, y = scores.numpy(), labels.numpy()
    expect = mannwhitneyu(s[y], s[~y]).statistic / (y.sum() * (~y).sum())
    assert roc_auc(scores, labels) == pytest.approx(expect, abs=1e-12)
    pos = torch.bincount(scores.long()[labels], minlength=12)
    neg = torch.bincount(scores.long()[~labels], minlength=12)
    assert auc_from_counts(pos, neg) == pytest.approx(expect, abs=1e-12)
    assert roc_auc(torch.arange(4.0), torch.tensor([False, False, True, True])) == 1.0


def test_decile_fractions():
    g = torch.Generator().manual_seed(1)
    vals = torch.randperm(1000, generator=g)  # distinct values 0..999; each is its own bin
    changed = torch.rand(1000, generator=g) < vals.float() / 1000
    total = torch.ones(1000, dtype=torch.int64)
    pos = torch.zeros(1000, dtype=torch.int64)
    pos[vals[changed]] = 1
    order = np.argsort(vals.numpy())
    expect = changed.numpy()[order].reshape(10, 100).mean(axis=1)
    np.testing.assert_allclose(quantile_group_fractions(total, pos, 10), expect, atol=1e-12)
    # a bin straddling a boundary is split in proportion
    assert quantile_group_fractions(torch.tensor([3, 2]), torch.tensor([3, 0]), 2) == pytest.approx([1.0, 0.2])


def test_s_star_by_hand():
    total = torch.zeros(320, dtype=torch.int64)
    changed = torch.zeros(320, dtype=torch.int64)
    total[[100, 101, 103]] = 10
    changed[[100, 101]] = torch.tensor([10, 5])
    st = solve_s_star(total, changed)
    assert (st.observed, st.predicted, st.true_positive) == (15, 10, 10)
    assert st.s_lo == 2.0 ** (100 - EXP_OFFSET) and st.s_hi == 2.0 ** (101 - EXP_OFFSET)
    assert st.precision == 1.0 and st.recall == pytest.approx(10 / 15)


def test_random_sparse_rank_matches_numpy():
    g = torch.Generator().manual_seed(3)
    for shape, d in (((20, 30), 0.02), ((20, 30), 0.1), ((30, 12), 0.5), ((8, 8), 0.0)):
        m = random_sparse_matrix(shape, d, g)
        assert int((m != 0).sum()) == round(d * shape[0] * shape[1])
        assert rank_stats(m).rank == np.linalg.matrix_rank(m.numpy())
    null = random_sparse_rank_null((20, 30), 0.02, samples=3, seed=9)
    g = torch.Generator().manual_seed(9)
    expect = [np.linalg.matrix_rank(random_sparse_matrix((20, 30), 0.02, g).numpy()) for _ in range(3)]
    assert list(null.ranks) == expect and max(expect) <= 12  # 12 nonzeros: rank-deficient
    assert null.rank_frac_mean == pytest.approx(np.mean(expect) / 20)
    assert random_sparse_rank_null((30, 40), 0.5, samples=2, seed=0).rank_frac_mean == 1.0
    assert random_sparse_rank_null((20, 30), 0.02, samples=3, seed=9).ranks == null.ranks  # seeded


def _uniform_update(tmp_path, s: float, random_sign: bool = False):
    """bf16 base, fp32 master = base + s·direction, tuned = master rounded to bf16; diffed with the mask."""
    g = torch.Generator().manual_seed(0)
    shapes = {NAMES[0]: (64, 48), NAMES[1]: (48, 64), NAMES[2]: (48,)}
    base = {n: torch.randn(sh, generator=g).bfloat16() for n, sh in shapes.items()}
    if random_sign:
        sign = {n: torch.where(torch.rand(b.shape, generator=g) < 0.5, 1.0, -1.0) for n, b in base.items()}
    else:
        sign = {n: torch.where(b >= 0, 1.0, -1.0) for n, b in base.items()}  # away from zero
    master = {n: b.float() + s * sign[n] for n, b in base.items()}
    tuned = {n: m.bfloat16() for n, m in master.items()}
    for name, d in (("base", base), ("master", master), ("tuned", tuned)):
        (tmp_path / name).mkdir()
        save_file(d, str(tmp_path / name / "model.safetensors"))
    run_diff(tmp_path / "base", tmp_path / "tuned", tmp_path / "diff", save_mask=True)
    return base


def test_uniform_update_is_explained_by_rounding(tmp_path):
    s = 3e-3  # between 2^-9 and 2^-8, so never equal to a half-ULP (no rounding ties)
    base = _uniform_update(tmp_path, s)
    res = run_explain(tmp_path / "diff", tmp_path / "base", tmp_path / "out", tuned_master=tmp_path / "master")
    r = res["rounding"]
    half = np.concatenate([_next_up_gap(base[n]).reshape(-1) / 2 for n in NAMES])
    expect_changed = half < s
    assert 0.2 < expect_changed.mean() < 0.9  # the case is not degenerate
    assert r["observed_changed_frac"] == pytest.approx(expect_changed.mean(), abs=0)
    assert r["auc"] == 1.0 and r["auc_exact"]
    assert r["precision"] == 1.0 and r["recall"] == 1.0
    assert r["s_star_range"][0] < s <= r["s_star_range"][1]
    dec = r["changed_frac_by_decile"]
    assert len(dec) == 10 and dec[0] == 1.0 and dec[-1] == 0.0 and all(a >= b for a, b in zip(dec, dec[1:]))
    m = res["master"]
    assert m["fp32_changed_frac"] == 1.0 and m["mask_disagreement"] == 0
    assert m["lost_to_rounding_frac"] == pytest.approx(1 - expect_changed.mean(), abs=0)
    assert all(abs(x - s) < s * 2**-7 for x in m["median_abs_update_by_decile"])  # update size ⟂ |w|
    df = pd.read_parquet(tmp_path / "out" / "explain.parquet")
    for n in NAMES:
        row = df[df.name == n].iloc[0]
        exp_t = _next_up_gap(base[n]).reshape(-1) / 2 < s
        assert row.changed == exp_t.sum() and row.rounding_recall == 1.0 and row.rounding_precision == 1.0
    on_disk = json.loads((tmp_path / "out" / "explain.json").read_text())
    assert on_disk["rounding"]["auc"] == 1.0 and len(on_disk["rounding"]["changed_frac_by_decile"]) == 10
    assert set(on_disk["rank_null"]) == {"mlp.up_proj"}
    for png in ("changed_by_decile.png", "roc.png", "rank_null.png"):
        assert (tmp_path / "out" / png).read_bytes()[:4] == b"\x89PNG"


def test_random_sign_update_within_rounding_ties(tmp_path):
    """Moving towards zero from an exact power of two needs only a quarter ULP: the only misses allowed."""
    s = 3e-3
    base = _uniform_update(tmp_path, s, random_sign=True)
    r = run_explain(tmp_path / "diff", tmp_path / "base", tmp_path / "out", rank_null=False, plot=False)["rounding"]
    w = np.concatenate([base[n].float().abs().numpy().reshape(-1) for n in NAMES])
    pow2 = np.mean(np.frexp(w)[0] == 0.5)
    assert r["precision"] == 1.0
    assert r["recall"] >= 1 - pow2 / r["observed_changed_frac"]
    assert r["auc"] >= 1 - pow2


def test_an_fp32_base_is_explained_in_the_dtype_the_diff_compared_in(tmp_path):
    """An fp32 base, its fp32 master after an update and the master's bf16 publication: the default diff compares in
    bf16 (the narrower dtype), and explain's fp32 pass must take the same dtype for what survived the rounding."""
    g = np.random.default_rng(7)
    base = (g.standard_normal((48, 32)) * 0.02).astype(np.float32)
    moved = g.random(base.shape) < 0.2
    master = (base + moved * g.standard_normal(base.shape).astype(np.float32) * np.float32(1e-4)).astype(np.float32)
    save_file({"w.weight": torch.from_numpy(base)}, str(tmp_path / "base.safetensors"))
    save_file({"w.weight": torch.from_numpy(master)}, str(tmp_path / "master.safetensors"))
    save_file({"w.weight": bf16_rne(master)}, str(tmp_path / "tuned.safetensors"))
    run_diff(tmp_path / "base.safetensors", tmp_path / "tuned.safetensors", tmp_path / "diff", save_mask=True)
    m = run_explain(
        tmp_path / "diff", tmp_path / "base.safetensors", tmp_path / "out", tuned_master=tmp_path / "master.safetensors"
    )["master"]
    survived = bits(bf16_rne(base)) != bits(bf16_rne(master))  # in bf16, by the rounding's definition
    nz = (master != base).reshape(-1)
    assert m["mask_disagreement"] == 0  # the same set the diff's mask holds
    assert m["lost_to_rounding_frac"] == (nz & ~survived.numpy().reshape(-1)).sum() / nz.sum()
    # the mask alone does not say which dtype the tuned side had: refused, not guessed
    (tmp_path / "alone").mkdir()
    (tmp_path / "alone" / "mask.safetensors").write_bytes((tmp_path / "diff" / "mask.safetensors").read_bytes())
    with pytest.raises(ExplainError, match="compared in the narrower stored dtype, but no tensors.parquet"):
        run_explain(tmp_path / "alone", tmp_path / "base.safetensors", tmp_path / "out2")


def _fake_diff(path, tensors: dict[str, torch.Tensor]):
    save_mask(Mask.from_tensors(tensors), path, metadata={"compare_dtype": "base"})


def test_magnitude_matched_overlap(tmp_path):
    """Two runs whose changes depend on |w| only: observed overlap ≈ magnitude-matched ≫ random."""
    g = torch.Generator().manual_seed(4)
    base = {"a.weight": torch.randn(200, 100, generator=g), "b.weight": 0.3 * torch.randn(100, 150, generator=g)}
    save_file(base, str(tmp_path / "base.safetensors"))
    runs = []
    for _ in range(2):
        runs.append(
            {n: torch.rand(w.shape, generator=g) < torch.where(w.abs() < 0.4, 0.8, 0.05) for n, w in base.items()}
        )
    _fake_diff(tmp_path / "d1", runs[0])
    _fake_diff(tmp_path / "d2", runs[1])
    res = run_explain(
        tmp_path / "d1", tmp_path / "base.safetensors", tmp_path / "out", other=tmp_path / "d2", rank_samples=1
    )
    mo = res["magnitude_matched_overlap"]
    inter = sum(int((runs[0][n] & runs[1][n]).sum()) for n in base)
    size_a = sum(int(runs[0][n].sum()) for n in base)
    assert mo["observed"] == inter / size_a
    assert abs(mo["observed"] - mo["magnitude_matched"]) < 4 * math.sqrt(inter) / size_a
    assert mo["observed"] - mo["random"] > 0.2
    # fp32 base: per-tensor AUC by exact ranks, checked against scipy
    df = pd.read_parquet(tmp_path / "out" / "explain.parquet")
    w = base["a.weight"].abs().double().numpy().reshape(-1)  # scipy ranks float32 input inexactly
    y = runs[0]["a.weight"].numpy().reshape(-1)
    expect = mannwhitneyu(-w[y], -w[~y]).statistic / (y.sum() * (~y).sum())
    assert df[df.name == "a.weight"].auc.iloc[0] == pytest.approx(expect, abs=1e-12)
    assert not res["rounding"]["auc_exact"] and res["rounding"]["auc_tie_bound"] < 0.01
    assert (tmp_path / "out" / "overlap_null.png").is_file()


def test_cli_explain_and_bad_inputs(tmp_path):
    _uniform_update(tmp_path, 3e-3)
    ok = runner.invoke(
        app,
        [
            "explain",
            str(tmp_path / "diff"),
            "--base",
            str(tmp_path / "base"),
            "-o",
            str(tmp_path / "out"),
            "--rank-samples",
            "1",
        ],
    )
    assert ok.exit_code == 0, ok.output
    assert "AUC" in ok.output and (tmp_path / "out" / "explain.json").is_file()

    other = {
        NAMES[0]: torch.zeros(64, 49).bfloat16(),
        NAMES[1]: torch.zeros(48, 64).bfloat16(),
        NAMES[2]: torch.zeros(48).bfloat16(),
    }
    (tmp_path / "wrong").mkdir()
    save_file(other, str(tmp_path / "wrong" / "model.safetensors"))
    r = runner.invoke(
        app, ["explain", str(tmp_path / "diff"), "--base", str(tmp_path / "wrong"), "-o", str(tmp_path / "out2")]
    )
    assert r.exit_code != 0
    assert NAMES[0] in r.output and "(64, 48)" in r.output and "(64, 49)" in r.output and "wrong" in r.output
    assert not (tmp_path / "out2" / "explain.json").exists()

    (tmp_path / "nomask").mkdir()
    (tmp_path / "nomask" / "summary.json").write_text("{}")
    r = runner.invoke(
        app, ["explain", str(tmp_path / "nomask"), "--base", str(tmp_path / "base"), "-o", str(tmp_path / "out3")]
    )
    assert r.exit_code != 0 and "nomask" in r.output and "mask.safetensors" in r.output

    (tmp_path / "partial").mkdir()
    save_file({NAMES[0]: torch.zeros(64, 48).bfloat16()}, str(tmp_path / "partial" / "model.safetensors"))
    r = runner.invoke(
        app, ["explain", str(tmp_path / "diff"), "--base", str(tmp_path / "partial"), "-o", str(tmp_path / "out4")]
    )
    assert r.exit_code != 0 and "is not in base" in r.output

    _fake_diff(tmp_path / "small", {"x": torch.zeros(3, dtype=torch.bool)})
    r = runner.invoke(
        app,
        [
            "explain",
            str(tmp_path / "diff"),
            "--base",
            str(tmp_path / "base"),
            "--other",
            str(tmp_path / "small"),
            "-o",
            str(tmp_path / "out5"),
        ],
    )
    assert r.exit_code != 0 and "small" in r.output

    r = runner.invoke(
        app,
        [
            "explain",
            str(tmp_path / "diff"),
            "--base",
            str(tmp_path / "base"),
            "--tuned-master",
            str(tmp_path / "nothere"),
            "-o",
            str(tmp_path / "out6"),
        ],
    )
    assert r.exit_code != 0 and "nothere" in r.output
