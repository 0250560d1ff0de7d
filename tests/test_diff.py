"""`rldelta diff`: every column against an independent numpy computation on hand-built pairs."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

import rldelta.diff as diff_mod
from conftest import bf16_rne, bf16_to_f32, bits, write_checkpoint
from rldelta.cli import app
from rldelta.diff import DiffError, run_diff
from rldelta.metrics.rank import effective_rank, numerical_rank, rank_stats

runner = CliRunner()


def np_expected(base: np.ndarray, tuned: np.ndarray, base_bits: np.ndarray, tuned_bits: np.ndarray, atol: float):
    """Every diff column from numpy alone: values already decoded to float32, bits as unsigned integers."""
    changed = base_bits != tuned_bits
    delta = tuned.astype(np.float32) - base.astype(np.float32)
    d64 = delta.astype(np.float64)
    out = {
        "numel": base.size,
        "changed": int(changed.sum()),
        "changed_frac": changed.sum() / base.size,
        "changed_atol": int((np.abs(delta) > atol).sum()),
        "nonfinite": int((~np.isfinite(tuned)).sum()),
        "delta_fro": float(np.sqrt((d64**2).sum())),
        "base_fro": float(np.sqrt((base.astype(np.float64) ** 2).sum())),
    }
    out["rel_norm"] = out["delta_fro"] / out["base_fro"]
    if base.ndim == 2:
        s = np.linalg.svd(d64, compute_uv=False)
        # Same tolerance rule as torch.linalg.matrix_rank on fp32: σ_max · max(m, n) · eps(fp32)
        tol = s.max() * max(base.shape) * np.finfo(np.float32).eps
        rank = int((s > tol).sum())
        p = s[s > 0] / s.sum()
        out.update(
            rank=rank,
            max_rank=min(base.shape),
            rank_frac=rank / min(base.shape),
            effective_rank=float(np.exp(-(p * np.log(p)).sum())) if s.sum() > 0 else 0.0,
            row_coverage=changed.any(axis=1).mean(),
            col_coverage=changed.any(axis=0).mean(),
        )
    return out, changed


def check_row(row: pd.Series, expected: dict, rank_rtol: float = 1e-4) -> None:
    for key, want in expected.items():
        got = row[key]
        if key in ("effective_rank",):
            assert got == pytest.approx(want, rel=rank_rtol), key
        elif isinstance(want, float):
            assert got == pytest.approx(want, rel=1e-6, abs=1e-12), key
        else:
            assert got == want, key


def read(out) -> tuple[pd.DataFrame, dict]:
    df = pd.read_parquet(out / "tensors.parquet").set_index("name")
    return df, json.loads((out / "summary.json").read_text())


# ---- metrics --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("r", [0, 1, 3, 7])
def test_numerical_rank_matches_torch_and_numpy(r):
    g = torch.Generator().manual_seed(r)
    m = (torch.randn(50, r, generator=g) @ torch.randn(r, 30, generator=g)) if r else torch.zeros(50, 30)
    rs = rank_stats(m)
    md = m.double().numpy()
    s = np.linalg.svd(md, compute_uv=False)
    tol = s.max() * max(md.shape) * np.finfo(np.float32).eps  # the data is fp32: its noise floor is fp32's
    assert rs.rank == r == int(torch.linalg.matrix_rank(m)) == np.linalg.matrix_rank(md, tol=tol)
    assert rs.max_rank == 30 and rs.rank_frac == pytest.approx(r / 30)


def test_effective_rank_known_cases():
    # Equal singular values: entropy log k, effective rank exactly k.
    assert effective_rank(torch.tensor([2.0, 2.0, 2.0, 0.0])) == pytest.approx(3.0)
    assert effective_rank(torch.tensor([5.0])) == pytest.approx(1.0)
    assert effective_rank(torch.zeros(4)) == 0.0
    s = torch.tensor([3.0, 1.0])
    p = np.array([0.75, 0.25])
    assert effective_rank(s) == pytest.approx(math.exp(-(p * np.log(p)).sum()))
    assert numerical_rank(torch.tensor([1.0, 1e-9]), (2, 2)) == 1


# ---- hand-built pairs -----------------------------------------------------------------------------------------


def test_exact_rank_r_update_fp32(ckpt, tmp_path):
    g = torch.Generator().manual_seed(1)
    base = torch.randn(48, 32, generator=g)
    update = 0.01 * torch.randn(48, 3, generator=g) @ torch.randn(3, 32, generator=g)
    tuned = base + update
    names = "model.layers.2.self_attn.q_proj.weight"
    b = ckpt("base", {names: base})
    t = ckpt("tuned", {names: tuned})
    run_diff(b, t, tmp_path / "out", save_mask=True)
    df, summary = read(tmp_path / "out")
    bn, tn = base.numpy(), tuned.numpy()
    exp, changed = np_expected(bn, tn, bn.view(np.uint32), tn.view(np.uint32), 1e-5)
    assert exp["rank"] == 3
    row = df.loc[names]
    check_row(row, exp)
    assert row["layer"] == 2 and row["module"] == "self_attn.q_proj"
    assert list(row["shape"]) == [48, 32] and row["dtype_base"] == "float32" == row["dtype_tuned"]
    with safe_open(str(tmp_path / "out" / "mask.safetensors"), "pt") as f:
        assert np.array_equal(f.get_tensor(names).numpy(), changed)
        assert f.metadata()["format"] == "rldelta.mask"
    assert summary["totals"]["changed"] == exp["changed"]


def test_bf16_k_entries_moved_one_ulp(ckpt, tmp_path):
    g = torch.Generator().manual_seed(2)
    base = (torch.rand(40, 24, generator=g) + 0.5).bfloat16()  # no zeros or subnormals: one ULP is well defined
    bits = base.view(torch.int16).clone()
    k_idx = torch.randperm(base.numel(), generator=g)[:17]
    bits.view(-1)[k_idx] += 1  # next representable bf16 away from zero: exactly one unit in the last place
    tuned = bits.view(torch.bfloat16)
    norm = torch.ones(24).bfloat16()
    b = ckpt("base", {"w": base, "norm.weight": norm})
    t = ckpt("tuned", {"w": tuned, "norm.weight": norm})
    run_diff(b, t, tmp_path / "out")
    df, summary = read(tmp_path / "out")
    exp, _ = np_expected(
        bf16_to_f32(base),
        bf16_to_f32(tuned),
        base.view(torch.int16).numpy(),
        tuned.view(torch.int16).numpy(),
        1e-5,
    )
    assert exp["changed"] == 17
    check_row(df.loc["w"], exp)
    assert df.loc["w", "dtype_base"] == "bfloat16"
    # 1-D tensors: no rank, no coverage
    assert pd.isna(df.loc["norm.weight", "rank"]) and pd.isna(df.loc["norm.weight", "row_coverage"])
    assert summary["totals"]["changed"] == 17 and summary["totals"]["numel"] == 40 * 24 + 24


def test_bf16_base_vs_fp32_tuned_below_half_ulp(ckpt, tmp_path):
    g = torch.Generator().manual_seed(3)
    base = (torch.randn(32, 16, generator=g) * 0.1).bfloat16()
    w = bf16_to_f32(base)
    # ULP of a bf16 value: 2^(exponent - 7); a quarter of it never survives round-to-nearest-even
    ulp = np.exp2(np.floor(np.log2(np.abs(w))) - 7).astype(np.float32)
    sign = np.where(torch.rand(32, 16, generator=g).numpy() < 0.5, -1, 1).astype(np.float32)
    tuned_np = (w + sign * 0.25 * ulp).astype(np.float32)
    tuned = torch.from_numpy(tuned_np)
    b = ckpt("base", {"w": base})
    t = ckpt("tuned", {"w": tuned})
    run_diff(b, t, tmp_path / "bf16")
    run_diff(b, t, tmp_path / "fp32", compare_dtype="fp32")
    df16, _ = read(tmp_path / "bf16")
    df32, _ = read(tmp_path / "fp32")
    assert df16.loc["w", "changed"] == 0
    exp32, _ = np_expected(w, tuned_np, w.view(np.uint32), tuned_np.view(np.uint32), 1e-5)
    assert exp32["changed"] == base.numel()  # every fp32 entry moved
    check_row(df32.loc["w"], exp32)
    assert df16.loc["w", "changed_atol"] == exp32["changed_atol"] > 0  # the tolerance view ignores the dtype
    assert df16.loc["w", "dtype_tuned"] == "float32"
    # the wider side here is the tuned one: every master value lies off the bf16 grid, so the cast changes each
    assert df16.loc["w", "cast_changed"] == df32.loc["w", "cast_changed"] == base.numel()


def test_fp32_base_against_its_bf16_copy_reports_the_planted_change_not_the_cast(ckpt, tmp_path):
    """An fp32 base against a bf16 publication of it with 5% of the entries moved: by default the diff compares in
    bf16 (the narrower dtype) and reports the planted entries; its output names both dtypes and how many entries
    the cast alone changed; --compare-dtype fp32 still counts the cast."""
    g = np.random.default_rng(11)
    base = (g.standard_normal((64, 48)) * 0.02).astype(np.float32)
    base[0, :8] = [0.5, -1.0, 0.25, 2.0, 0.0, -0.125, 1.5, 3.0]  # on the bf16 grid: the cast leaves them alone
    planted = g.random(base.shape) < 0.05
    step = np.copysign(np.abs(base) * 0.1 + 1e-3, base)  # away from zero, 10% or more: well above a bf16 ULP
    moved = np.where(planted, base + step, base).astype(np.float32)
    tuned = bf16_rne(moved)
    b, t = ckpt("base", {"w": torch.from_numpy(base)}), ckpt("tuned", {"w": tuned})
    cast = int((bf16_to_f32(bf16_rne(base)) != base).sum())  # base entries bf16 cannot hold
    assert cast == base.size - 8

    s16 = run_diff(b, t, tmp_path / "default")
    df16, _ = read(tmp_path / "default")
    want16 = int((bits(bf16_rne(base)) != bits(tuned)).sum())
    assert df16.loc["w", "changed"] == s16["totals"]["changed"] == want16 == planted.sum()
    assert df16.loc["w", "cast_changed"] == s16["totals"]["cast_changed"] == cast
    assert s16["dtype_note"] == f"base fp32, tuned bf16: compared in bf16; {cast:,} entries differ by the cast alone"
    assert s16["mixed_dtypes"] == [
        {"base": "float32", "tuned": "bfloat16", "compared_in": "bfloat16", "tensors": 1, "numel": base.size}
        | {"cast_changed": cast}
    ]
    r = runner.invoke(app, ["diff", str(b), str(t), "-o", str(tmp_path / "cli")])
    assert r.exit_code == 0, r.output
    assert s16["dtype_note"] in " ".join(r.output.split())

    s32 = run_diff(b, t, tmp_path / "fp32", compare_dtype="fp32")
    want32 = int((base.view(np.uint32) != bf16_to_f32(tuned).view(np.uint32)).sum())
    assert s32["totals"]["changed"] == want32 >= cast  # the cast, and the planted entries on the bf16 grid
    assert s32["dtype_note"].startswith("base fp32, tuned bf16: compared in fp32;")
    assert s32["totals"]["cast_changed"] == cast


def test_float64_checkpoints_are_compared_in_float64(ckpt, tmp_path):
    g = np.random.default_rng(5)
    base = g.standard_normal((24, 16))
    tuned = base.copy()
    tuned[g.random(base.shape) < 0.3] += 1e-3
    tuned[0, 0] += 1e-12  # below fp32's resolution: a change in float64 only
    run_diff(ckpt("b", {"w": torch.from_numpy(base)}), ckpt("t", {"w": torch.from_numpy(tuned)}), tmp_path / "out")
    df, s = read(tmp_path / "out")
    assert df.loc["w", "changed"] == int((base.view(np.uint64) != tuned.view(np.uint64)).sum())
    assert df.loc["w", "base_fro"] == pytest.approx(float(np.sqrt((base**2).sum())), rel=1e-12)
    assert df.loc["w", "dtype_base"] == "float64" and "dtype_note" not in s


def test_a_run_that_fails_before_any_tensor_leaves_nothing(tmp_path, monkeypatch):
    b = write_checkpoint(tmp_path / "b", _model_tensors(0))
    t = write_checkpoint(tmp_path / "t", _model_tensors(0, moved=0.2))

    def broken(*args):
        raise DiffError("cannot diff this tensor")

    monkeypatch.setattr(diff_mod, "diff_tensor", broken)
    with pytest.raises(DiffError):
        run_diff(b, t, tmp_path / "new", save_mask=True)
    assert not (tmp_path / "new").exists()  # no journal of nothing, no folder this run made
    (tmp_path / "old").mkdir()
    with pytest.raises(DiffError):
        run_diff(b, t, tmp_path / "old")
    assert (tmp_path / "old").is_dir() and not any((tmp_path / "old").iterdir())  # a folder it found stays


def test_nonfinite_counted(ckpt, tmp_path):
    base = torch.ones(4, 4)
    tuned = base.clone()
    tuned[0, 0], tuned[1, 1], tuned[2, 2] = float("nan"), float("inf"), -float("inf")
    run_diff(ckpt("b", {"w": base}), ckpt("t", {"w": tuned}), tmp_path / "out", rank=False)
    df, _ = read(tmp_path / "out")
    assert df.loc["w", "nonfinite"] == 3 and df.loc["w", "changed"] == 3
    assert pd.isna(df.loc["w", "rank"])  # --no-rank


def test_finite_weights_whose_update_overflows_are_finite(ckpt, tmp_path):
    base = torch.ones(4, 4)
    base[0, 0] = -3e38
    tuned = base.clone()
    tuned[0, 0], tuned[1, 1] = 3e38, 2.0  # Δ = 6e38 overflows fp32; both weights are finite
    run_diff(ckpt("b", {"w": base}), ckpt("t", {"w": tuned}), tmp_path / "out", rank=False)
    df, _ = read(tmp_path / "out")
    assert df.loc["w", "nonfinite"] == 0 and df.loc["w", "changed"] == 2


def test_nonfinite_already_in_base_is_counted(ckpt, tmp_path):
    base = torch.ones(4, 4).bfloat16()
    base[3, 3] = float("inf")  # unchanged by the update, still a non-finite entry of TUNED
    tuned = base.clone()
    tuned[0, 1] = float("nan")
    tuned[0, 2] = 2.0
    run_diff(ckpt("b", {"w": base}), ckpt("t", {"w": tuned}), tmp_path / "out")
    df, _ = read(tmp_path / "out")
    assert df.loc["w", "nonfinite"] == 2 and df.loc["w", "changed"] == 2
    assert pd.isna(df.loc["w", "rank"]) and df.loc["w", "max_rank"] == 4  # no SVD of a non-finite update


def _model_tensors(seed: int, moved: float = 0.0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    t = {
        "model.embed_tokens.weight": torch.randn(60, 16, generator=g),
        "model.layers.0.self_attn.q_proj.weight": torch.randn(16, 16, generator=g),
        "model.layers.0.mlp.up_proj.weight": torch.randn(32, 16, generator=g),
        "model.layers.1.self_attn.q_proj.weight": torch.randn(16, 16, generator=g),
        "model.norm.weight": torch.ones(16),
    }
    t = {k: v.bfloat16() for k, v in t.items()}
    if moved:
        g2 = torch.Generator().manual_seed(seed + 100)
        t = {k: torch.where(torch.rand(v.shape, generator=g2) < moved, v * 1.05, v) for k, v in t.items()}
    return t


@pytest.mark.parametrize("layout", ["sharded", "file", "hub"])
def test_layouts_give_identical_results(tmp_path, layout):
    base, tuned = _model_tensors(0), _model_tensors(0, moved=0.2)
    ref_b = write_checkpoint(tmp_path / "b_dir", base)
    ref_t = write_checkpoint(tmp_path / "t_dir", tuned)
    suffix = ".safetensors" if layout == "file" else ""
    alt_b = write_checkpoint(tmp_path / f"b_{layout}{suffix}", base, layout)
    alt_t = write_checkpoint(tmp_path / f"t_{layout}{suffix}", tuned, layout)
    run_diff(ref_b, ref_t, tmp_path / "ref", save_mask=True)
    run_diff(alt_b, alt_t, tmp_path / "alt", save_mask=True)
    a, sa = read(tmp_path / "ref")
    b, sb = read(tmp_path / "alt")
    pd.testing.assert_frame_equal(a.sort_index(), b.sort_index())
    assert sa["totals"] == sb["totals"] and sa["totals"]["changed"] > 0
    with (
        safe_open(str(tmp_path / "ref" / "mask.safetensors"), "pt") as f,
        safe_open(str(tmp_path / "alt" / "mask.safetensors"), "pt") as g,
    ):
        for n in base:
            assert torch.equal(f.get_tensor(n), g.get_tensor(n)), n


# 2 local workers on 2 cores fork (one thread each), on 8 they spawn; Ray runs each tensor as a task.
@pytest.mark.parametrize("backend,cores", [("local", 2), ("local", 8), ("ray", 2)])
def test_workers_give_identical_results(tmp_path, monkeypatch, backend, cores):
    if backend == "ray":
        pytest.importorskip("ray")
    torch.ones(1 << 20).sum()  # the parent has used OpenMP before the workers start, as it has in a study
    monkeypatch.setattr(diff_mod.os, "cpu_count", lambda: cores)
    b = write_checkpoint(tmp_path / "b", _model_tensors(0))
    t = write_checkpoint(tmp_path / "t", _model_tensors(0, moved=0.1))
    run_diff(b, t, tmp_path / "w1", save_mask=True)
    run_diff(b, t, tmp_path / "w2", save_mask=True, workers=2, backend=backend)
    a, _ = read(tmp_path / "w1")
    c, _ = read(tmp_path / "w2")
    pd.testing.assert_frame_equal(a.sort_index(), c.sort_index())
    assert (tmp_path / "w1" / "mask.safetensors").read_bytes() == (tmp_path / "w2" / "mask.safetensors").read_bytes()


def test_tied_embeddings_counted_once(ckpt, tmp_path):
    base, tuned = _model_tensors(0), _model_tensors(0, moved=0.3)
    base["lm_head.weight"] = base["model.embed_tokens.weight"].clone()
    tuned["lm_head.weight"] = tuned["model.embed_tokens.weight"].clone()
    cfg = {"model_type": "llama", "tie_word_embeddings": True}
    run_diff(ckpt("b", base, config=cfg), ckpt("t", tuned, config=cfg), tmp_path / "out")
    df, summary = read(tmp_path / "out")
    assert "lm_head.weight" not in df.index and "model.embed_tokens.weight" in df.index
    assert summary["totals"]["numel"] == sum(v.numel() for k, v in base.items() if k != "lm_head.weight")
    assert summary["tied"] == ["lm_head.weight"] and summary["missing_in_tuned"] == []
    # Untied models keep lm_head as a tensor of its own.
    run_diff(ckpt("b2", base), ckpt("t2", tuned), tmp_path / "out2")
    assert "lm_head.weight" in read(tmp_path / "out2")[0].index


def test_missing_extra_and_reshaped_tensors(ckpt, tmp_path):
    base, tuned = _model_tensors(0), _model_tensors(0, moved=0.1)
    del tuned["model.norm.weight"]
    tuned["model.extra.weight"] = torch.zeros(3)
    tuned["model.embed_tokens.weight"] = torch.zeros(64, 16).bfloat16()  # vocabulary resized
    tuned["model.layers.1.self_attn.q_proj.weight"] = torch.zeros(16, 8).bfloat16()  # reshaped
    b, t = ckpt("b", base), ckpt("t", tuned)
    summary = run_diff(b, t, tmp_path / "out")
    assert summary["missing_in_tuned"] == ["model.norm.weight"]
    assert summary["extra_in_tuned"] == ["model.extra.weight"]
    # a grown vocabulary is compared on its shared rows (issue 12; tests/test_readers.py checks the numbers);
    # any other reshaped tensor is listed and skipped
    resized = {"name": "model.embed_tokens.weight", "base_shape": [60, 16], "tuned_shape": [64, 16]}
    assert summary["resized"] == [resized] and summary["totals"]["added"] == 4 * 16
    assert summary["shape_mismatch"] == [
        {"name": "model.layers.1.self_attn.q_proj.weight", "base_shape": [16, 16], "tuned_shape": [16, 8]}
    ]
    assert summary["totals"]["tensors"] == 3
    with pytest.raises(DiffError, match="model.layers.1.self_attn.q_proj.weight"):
        run_diff(b, t, tmp_path / "strict", strict=True)
    r = runner.invoke(app, ["diff", str(b), str(t), "-o", str(tmp_path / "s2"), "--strict"])
    assert r.exit_code != 0 and "--strict" in r.output


def test_resume_after_interruption(tmp_path, monkeypatch):
    b = write_checkpoint(tmp_path / "b", _model_tensors(0))
    t = write_checkpoint(tmp_path / "t", _model_tensors(0, moved=0.2))
    out = tmp_path / "out"

    def stop_after_two(done, total, name):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_diff(b, t, out, save_mask=True, progress=stop_after_two)
    # Nothing half-written: no final files, only the journal of the two finished tensors.
    assert not (out / "tensors.parquet").exists() and not (out / "mask.safetensors").exists()
    assert not (out / "summary.json").exists()

    computed = []
    real = diff_mod.diff_tensor
    monkeypatch.setattr(diff_mod, "diff_tensor", lambda *a: computed.append(a[2]) or real(*a))
    run_diff(b, t, out, save_mask=True, resume=True)
    assert len(computed) == 3  # 5 tensors, 2 done before the interruption
    run_diff(b, t, tmp_path / "fresh", save_mask=True)
    pd.testing.assert_frame_equal(read(out)[0], read(tmp_path / "fresh")[0])
    assert (out / "mask.safetensors").read_bytes() == (tmp_path / "fresh" / "mask.safetensors").read_bytes()
    assert not (out / ".partial").exists()


def test_resume_with_other_options_starts_over(tmp_path, monkeypatch):
    b = write_checkpoint(tmp_path / "b", _model_tensors(0))
    t = write_checkpoint(tmp_path / "t", _model_tensors(0, moved=0.2))
    with pytest.raises(KeyboardInterrupt):
        run_diff(b, t, tmp_path / "o", progress=lambda d, n, s: (_ for _ in ()).throw(KeyboardInterrupt))
    computed = []
    real = diff_mod.diff_tensor
    monkeypatch.setattr(diff_mod, "diff_tensor", lambda *a: computed.append(a[2]) or real(*a))
    run_diff(b, t, tmp_path / "o", atol=1e-3, resume=True)
    assert len(computed) == 5


# ---- bad input ------------------------------------------------------------------------------------------------


def _cli(*args):
    return runner.invoke(app, ["diff", *map(str, args)])


def test_bad_inputs_give_one_line_errors(tmp_path, ckpt):
    good = ckpt("good", {"w": torch.ones(2, 2)})
    out = tmp_path / "out"

    r = _cli(tmp_path / "nope", good, "-o", out)
    assert r.exit_code == 2 and "nope: no such file or directory" in r.output

    (tmp_path / "empty").mkdir()
    r = _cli(tmp_path / "empty", good, "-o", out)
    assert r.exit_code == 2 and "empty: not a checkpoint" in r.output

    (tmp_path / "notes.txt").write_text("hello")
    r = _cli(tmp_path / "notes.txt", good, "-o", out)
    assert r.exit_code == 2 and "notes.txt: not a checkpoint" in r.output

    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    r = _cli(tmp_path / "m.gguf", good, "-o", out)
    assert r.exit_code == 2 and "m.gguf: a GGUF file" in r.output and "rldelta models prepare" in r.output

    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "pytorch_model.bin").write_bytes(b"")
    r = _cli(tmp_path / "pickled", good, "-o", out)
    # pickled weights are read now (tests/test_readers.py); an unreadable one is still one line naming the file
    assert r.exit_code == 2 and "pytorch_model.bin: cannot read as a torch.save" in r.output
    assert "Traceback" not in r.output

    bad = tmp_path / "corrupt"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes((64).to_bytes(8, "little") + b"{definitely not json" + b"\0" * 50)
    r = _cli(bad, good, "-o", out)
    assert r.exit_code == 2 and "model.safetensors: corrupt safetensors header" in r.output

    (bad / "model.safetensors").write_bytes((10**9).to_bytes(8, "little") + b"{}")
    r = _cli(bad, good, "-o", out)
    assert r.exit_code == 2 and "corrupt safetensors header" in r.output

    sharded = write_checkpoint(tmp_path / "sharded", _model_tensors(0), "sharded")
    (sharded / "model-00002-of-00002.safetensors").unlink()
    r = _cli(sharded, good, "-o", out)
    assert r.exit_code == 2 and "names shard model-00002-of-00002.safetensors, which is missing" in r.output

    r = _cli(good, good, "-o", out, "--backend", "slurm")
    assert r.exit_code == 2 and "--backend must be local or ray, not 'slurm'" in r.output

    r = _cli(good, good, "-o", out, "--compare-dtype", "int8")
    assert r.exit_code == 2 and "--compare-dtype" in r.output
    for res in [r]:
        assert "Traceback" not in res.output


def test_cosine_parts_sum_to_the_whole_model_cosine():
    from rldelta.metrics.delta import cosine_parts

    g = np.random.default_rng(0)
    a1, a2, b1, b2 = g.normal(size=(3, 4)), g.normal(size=7), g.normal(size=(3, 4)), g.normal(size=7)
    parts = [cosine_parts(torch.from_numpy(x), torch.from_numpy(y)) for x, y in ((a1, b1), (a2, b2))]
    ab, aa, bb = (sum(p[i] for p in parts) for i in range(3))
    a, b = np.concatenate([a1.ravel(), a2]), np.concatenate([b1.ravel(), b2])
    assert ab / math.sqrt(aa * bb) == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b), rel=1e-12)


def test_ray_backend_without_ray_names_the_install(tmp_path, ckpt, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    good = ckpt("good", {"w": torch.ones(2, 2)})
    r = _cli(good, good, "-o", tmp_path / "out", "--backend", "ray")
    assert r.exit_code == 2 and "pip install 'rldelta[ray]'" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "out").exists()  # refused before anything was written
