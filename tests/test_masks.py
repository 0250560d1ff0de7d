"""Mask file format, set operations and builders, checked against numpy on hand-built tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from rldelta.checkpoint import open_checkpoint
from rldelta.cli import app
from rldelta.diff import run_diff
from rldelta.masks import (
    Mask,
    MaskError,
    check_compatible,
    difference,
    intersection,
    load_mask,
    mask_counts,
    mask_from_diff,
    random_mask,
    save_mask,
    threshold_delta_mask,
    threshold_weight_mask,
    topk_delta_mask,
    union,
)

runner = CliRunner()
SHAPES = {
    "model.layers.0.mlp.up_proj.weight": (12, 10),
    "model.layers.0.self_attn.q_proj.weight": (8, 8),
    "model.norm.weight": (10,),
}


def _rand_masks(seed: int, density: float) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(s, generator=g) < density for n, s in SHAPES.items()}


def _pair(tmp_path, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = {n: torch.randn(s, generator=g) for n, s in SHAPES.items()}
    tuned = {
        n: t + 0.1 * torch.randn(t.shape, generator=g) * (torch.rand(t.shape, generator=g) < 0.3)
        for n, t in base.items()
    }
    (tmp_path / "base").mkdir()
    (tmp_path / "tuned").mkdir()
    save_file(base, str(tmp_path / "base" / "model.safetensors"))
    save_file(tuned, str(tmp_path / "tuned" / "model.safetensors"))
    return base, tuned


def test_save_load_roundtrip_lazy(tmp_path):
    tensors = _rand_masks(0, 0.3)
    counts = save_mask(Mask.from_tensors(tensors), tmp_path / "m.safetensors", metadata={"note": "x"})
    m = load_mask(tmp_path / "m.safetensors")
    assert set(m.names()) == set(SHAPES)
    for n, t in tensors.items():
        assert m.shape(n) == tuple(t.shape)
        assert torch.equal(m.get(n), t)
        assert counts.count[n] == int(t.numpy().sum())
    assert m.metadata["format"] == "rldelta.mask" and m.metadata["note"] == "x"
    total = sum(int(t.numpy().sum()) for t in tensors.values())
    assert counts.total_count == total
    assert counts.total_density == pytest.approx(total / sum(t.numel() for t in tensors.values()))
    # a directory target receives mask.safetensors, and a directory holding one loads as that mask
    save_mask(m, tmp_path / "d")
    assert torch.equal(load_mask(tmp_path / "d").get("model.norm.weight"), tensors["model.norm.weight"])


def test_set_operations_match_numpy(tmp_path):
    a, b = _rand_masks(1, 0.4), _rand_masks(2, 0.5)
    ma, mb = Mask.from_tensors(a), Mask.from_tensors(b)
    for op, ref in ((intersection, np.logical_and), (union, np.logical_or), (difference, lambda x, y: x & ~y)):
        got = op(ma, mb)
        for n in SHAPES:
            np.testing.assert_array_equal(got.get(n).numpy(), ref(a[n].numpy(), b[n].numpy()))
    c = mask_counts(intersection(ma, mb))
    for n in SHAPES:
        expect = int(np.logical_and(a[n].numpy(), b[n].numpy()).sum())
        assert c.count[n] == expect
        assert c.density(n) == expect / np.prod(SHAPES[n])


def test_mismatched_masks_name_tensor_and_shapes():
    a = Mask.from_tensors({"w": torch.zeros(4, 8, dtype=torch.bool)}, source="A")
    b = Mask.from_tensors({"w": torch.zeros(4, 9, dtype=torch.bool)}, source="B")
    with pytest.raises(MaskError, match=r"'w'.*\(4, 8\).*\(4, 9\)"):
        intersection(a, b)
    c = Mask.from_tensors({"v": torch.zeros(4, 8, dtype=torch.bool)}, source="C")
    with pytest.raises(MaskError, match="'w' is in A but not in C"):
        check_compatible(a, c)


def test_load_errors_name_the_file(tmp_path):
    (tmp_path / "diffdir").mkdir()
    (tmp_path / "diffdir" / "summary.json").write_text("{}")
    with pytest.raises(MaskError, match=r"diffdir: diff directory without mask.safetensors"):
        load_mask(tmp_path / "diffdir")
    save_file({"w": torch.zeros(3)}, str(tmp_path / "floats.safetensors"))
    with pytest.raises(MaskError, match=r"floats.safetensors: not a mask \(tensor 'w' has dtype"):
        load_mask(tmp_path / "floats.safetensors")
    with pytest.raises(MaskError, match="no such file"):
        load_mask(tmp_path / "nope")


def test_builders_match_numpy(tmp_path):
    base, tuned = _pair(tmp_path)
    b, t = open_checkpoint(tmp_path / "base"), open_checkpoint(tmp_path / "tuned")
    thr = threshold_delta_mask(b, t, 0.05)
    topk = topk_delta_mask(b, t, 0.25)
    wlow = threshold_weight_mask(b, 0.5, below=True)
    whigh = threshold_weight_mask(b, 0.5)
    for n in SHAPES:
        d = np.abs(tuned[n].numpy().astype(np.float64) - base[n].numpy().astype(np.float64))
        np.testing.assert_array_equal(thr.get(n).numpy(), d > 0.05)
        k = round(0.25 * d.size)
        sel = topk.get(n).numpy()
        assert sel.sum() == k
        assert d[sel].min() >= d[~sel].max()  # the k largest |Δ|
        np.testing.assert_array_equal(wlow.get(n).numpy(), np.abs(base[n].numpy()) < 0.5)
        np.testing.assert_array_equal(whigh.get(n).numpy(), np.abs(base[n].numpy()) > 0.5)


def test_random_mask_counts_and_seed(tmp_path):
    like = Mask.from_tensors(_rand_masks(3, 0.2))
    r1, r2, r3 = random_mask(like, 7), random_mask(like, 7), random_mask(like, 8)
    differs = False
    for n in SHAPES:
        assert int(r1.get(n).sum()) == int(like.get(n).sum())  # exactly the same count per tensor
        assert torch.equal(r1.get(n), r2.get(n))  # same seed, same mask
        differs |= not torch.equal(r1.get(n), r3.get(n))
    assert differs
    # a tensor's random mask does not depend on which other tensors the mask holds
    only = Mask.from_tensors({"model.norm.weight": like.get("model.norm.weight")})
    assert torch.equal(random_mask(only, 7).get("model.norm.weight"), r1.get("model.norm.weight"))
    d = random_mask(like, 0, density=0.5)
    assert int(d.get("model.layers.0.mlp.up_proj.weight").sum()) == 60


def test_mask_from_diff_is_the_bitwise_changed_set(tmp_path):
    base, tuned = _pair(tmp_path)
    run_diff(tmp_path / "base", tmp_path / "tuned", tmp_path / "diff", save_mask=True, rank=False)
    m = mask_from_diff(tmp_path / "diff")
    for n in SHAPES:
        np.testing.assert_array_equal(
            m.get(n).numpy(), base[n].numpy().view(np.int32) != tuned[n].numpy().view(np.int32)
        )


def test_cli_mask_commands(tmp_path):
    _pair(tmp_path)
    b, t = str(tmp_path / "base"), str(tmp_path / "tuned")
    r = runner.invoke(app, ["mask", "topk", b, t, "--frac", "0.1", "-o", str(tmp_path / "top.safetensors")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["mask", "threshold", b, t, "-t", "0.05", "-o", str(tmp_path / "thr.safetensors")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        app,
        ["mask", "random", str(tmp_path / "thr.safetensors"), "--seed", "3", "-o", str(tmp_path / "rnd.safetensors")],
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        app,
        [
            "mask",
            "combine",
            str(tmp_path / "top.safetensors"),
            str(tmp_path / "thr.safetensors"),
            "--op",
            "and",
            "-o",
            str(tmp_path / "and.safetensors"),
        ],
    )
    assert r.exit_code == 0, r.output
    top, thr = load_mask(tmp_path / "top.safetensors"), load_mask(tmp_path / "thr.safetensors")
    both = load_mask(tmp_path / "and.safetensors")
    rnd = load_mask(tmp_path / "rnd.safetensors")
    for n in SHAPES:
        assert torch.equal(both.get(n), top.get(n) & thr.get(n))
        assert int(rnd.get(n).sum()) == int(thr.get(n).sum())
    r = runner.invoke(app, ["mask", "info", str(tmp_path / "and.safetensors")])
    assert r.exit_code == 0 and "model.norm.weight" in r.output


def test_cli_bad_inputs(tmp_path):
    (tmp_path / "diffdir").mkdir()
    (tmp_path / "diffdir" / "tensors.parquet").write_bytes(b"")
    r = runner.invoke(app, ["mask", "from-diff", str(tmp_path / "diffdir"), "-o", str(tmp_path / "m.safetensors")])
    assert r.exit_code != 0 and "without mask.safetensors" in r.output and "diffdir" in r.output
    assert not (tmp_path / "m.safetensors").exists()
    save_mask(Mask.from_tensors({"w": torch.zeros(4, 8, dtype=torch.bool)}), tmp_path / "a.safetensors")
    save_mask(Mask.from_tensors({"w": torch.zeros(4, 9, dtype=torch.bool)}), tmp_path / "b.safetensors")
    r = runner.invoke(
        app,
        [
            "mask",
            "combine",
            str(tmp_path / "a.safetensors"),
            str(tmp_path / "b.safetensors"),
            "--op",
            "or",
            "-o",
            str(tmp_path / "c.safetensors"),
        ],
    )
    assert r.exit_code != 0 and "'w'" in r.output and "(4, 8)" in r.output and "(4, 9)" in r.output
    assert not list(tmp_path.glob("c.safetensors*"))  # nothing half-written left behind
    r = runner.invoke(
        app,
        [
            "mask",
            "topk",
            str(tmp_path / "nothere"),
            str(tmp_path / "nothere"),
            "--frac",
            "0.1",
            "-o",
            str(tmp_path / "x.safetensors"),
        ],
    )
    assert r.exit_code != 0 and "nothere" in r.output


def test_cli_refuses_to_write_over_an_input_mask(tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_mask(Mask.from_tensors({"w": torch.tensor([[True, False, True]])}), a)
    save_mask(Mask.from_tensors({"w": torch.tensor([[True, True, False]])}), b)
    _pair(tmp_path)
    run_diff(tmp_path / "base", tmp_path / "tuned", tmp_path / "d", save_mask=True)
    before = a.read_bytes(), (tmp_path / "d" / "mask.safetensors").read_bytes()
    for args, out in (
        (["combine", str(a), str(b), "--op", "and"], a),
        (["combine", str(a), str(b), "--op", "or"], tmp_path / ".." / tmp_path.name / "b.safetensors"),
        (["random", str(a)], a),
        (["from-diff", str(tmp_path / "d")], tmp_path / "d"),  # the diff folder's own mask
    ):
        r = runner.invoke(app, ["mask", *args, "-o", str(out)])
        assert r.exit_code == 2 and r.output.strip().startswith(f"error: {out}: is the input mask"), r.output
    assert (a.read_bytes(), (tmp_path / "d" / "mask.safetensors").read_bytes()) == before
    assert torch.equal(load_mask(b).get("w"), torch.tensor([[True, True, False]]))


def test_delta_builders_refuse_checkpoints_of_different_models(ckpt):
    base = open_checkpoint(ckpt("base", {"w": torch.zeros(2, 3), "v": torch.zeros(4)}))
    missing = open_checkpoint(ckpt("missing", {"w": torch.zeros(2, 3)}))
    reshaped = open_checkpoint(ckpt("reshaped", {"w": torch.zeros(3, 2), "v": torch.zeros(4)}))
    with pytest.raises(MaskError, match=r"tensor 'v' is in .*base but not in .*missing"):
        threshold_delta_mask(base, missing, 1e-5)
    with pytest.raises(MaskError, match=r"tensor 'w' has shape \(2, 3\) in .*base but \(3, 2\) in .*reshaped"):
        topk_delta_mask(base, reshaped, 0.5)
