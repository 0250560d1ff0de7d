"""`--device`: Δ and the ranks on a device, stacked by shape. The same code runs here with the CPU as the device,
and must give the rows the per-tensor path gives; thread and device options fail with one line."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import write_checkpoint
from rldelta import diff as diff_mod
from rldelta.checkpoint import open_checkpoint, pair_tensors
from rldelta.diff import DiffError, DiffOptions, device_results, diff_tensor, resolve_device, run_diff
from rldelta.runtime import threads as threads_mod
from rldelta.runtime.errors import RldeltaError
from rldelta.runtime.threads import threads_per_worker, usable_cores


def _pair(tmp_path):
    g = torch.Generator().manual_seed(0)
    base, tuned = {}, {}

    def add(name, shape, frac, dtype=torch.bfloat16):
        w = (torch.randn(*shape, generator=g) * 0.02).to(dtype)
        u = torch.randn(*shape, generator=g) * 0.02 * 2**-7 * (torch.rand(*shape, generator=g) < frac)
        base[name], tuned[name] = w, (w.float() + u).to(dtype)

    for i in range(2):
        for p in ("q_proj", "k_proj", "v_proj", "o_proj"):  # four of one shape per layer: a stack of 8
            add(f"model.layers.{i}.self_attn.{p}.weight", (48, 48), 0.3)
        add(f"model.layers.{i}.mlp.up_proj.weight", (96, 48), 0.2)
        add(f"model.layers.{i}.input_layernorm.weight", (48,), 0.5)
    add("model.layers.0.mlp.experts.gate_up_proj", (4, 32, 48), 0.2)  # stacked experts: one row per expert
    add("model.embed_tokens.weight", (64, 48), 0.1, torch.float32)
    base["model.layers.1.mlp.up_proj.weight"][0, 0] = float("nan")  # non-finite Δ: null rank on both paths
    tuned["step"] = base["step"] = torch.tensor([3], dtype=torch.int64)
    tuned["model.layers.0.self_attn.q_proj.weight"] = base["model.layers.0.self_attn.q_proj.weight"].clone()
    return write_checkpoint(tmp_path / "b", base), write_checkpoint(tmp_path / "t", tuned)


def _rows(results) -> pd.DataFrame:
    rows = [r for rs, _ in results for r in rs]
    return pd.DataFrame(rows).sort_values(["name", "expert"], na_position="first").reset_index(drop=True)


@pytest.mark.parametrize("batch_bytes", [1 << 30, 1])  # one flush at the end, or a flush after every tensor
def test_device_path_on_the_cpu_gives_the_per_tensor_rows(tmp_path, monkeypatch, batch_bytes):
    monkeypatch.setattr(diff_mod, "DEVICE_BATCH_BYTES", batch_bytes)
    b, t = _pair(tmp_path)
    bc, tc = open_checkpoint(b), open_checkpoint(t)
    names = pair_tensors(bc, tc).for_diff().names
    opts = DiffOptions()
    want = _rows(diff_tensor(bc, tc, n, opts, True) for n in names)
    got_results = list(device_results(bc, tc, names, opts, True, torch.device("cpu")))
    got = _rows(got_results)
    assert len(got) == len(want) == len(names) + 3  # the stacked tensor gives 4 rows
    exact = [c for c in want.columns if c != "effective_rank"]
    pd.testing.assert_frame_equal(got[exact], want[exact])
    np.testing.assert_allclose(got["effective_rank"].astype(float), want["effective_rank"].astype(float), rtol=1e-9)
    ranked = want[want["rank"].notna()]
    assert len(ranked) == len(names) - 4 + 3  # not: the 1-D norms, the int step, the NaN update
    # the masks travel unchanged
    want_masks = {n: diff_tensor(bc, tc, n, opts, True)[1] for n in names}
    for rs, packed in got_results:
        assert np.array_equal(packed, want_masks[rs[0]["name"]])


def test_device_rank_matches_matrix_rank(tmp_path):
    b, t = _pair(tmp_path)
    bc, tc = open_checkpoint(b), open_checkpoint(t)
    names = [n for n in pair_tensors(bc, tc).for_diff().names if n.endswith("proj.weight") and "layers.0" in n]
    rows = _rows(device_results(bc, tc, names, DiffOptions(), False, torch.device("cpu")))
    for row in rows.itertuples():
        d = tc.get(row.name).float() - bc.get(row.name).float()
        assert row.rank == int(torch.linalg.matrix_rank(d)), row.name


def test_run_diff_threads_and_device_options(tmp_path):
    b, t = _pair(tmp_path)
    s = run_diff(b, t, tmp_path / "o1", threads=1)
    assert s["totals"]["tensors"] > 0
    with pytest.raises(DiffError, match="--threads must be >= 1"):
        run_diff(b, t, tmp_path / "o2", threads=0)
    with pytest.raises(DiffError, match="--device must be"):
        run_diff(b, t, tmp_path / "o3", device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DiffError, match="no CUDA GPU"):
            run_diff(b, t, tmp_path / "o4", device="cuda")
        assert resolve_device("auto") == torch.device("cpu")
    assert issubclass(DiffError, RldeltaError)


def test_threads_come_from_the_free_usable_cores(monkeypatch):
    assert threads_per_worker(2, threads=3) == 3
    if hasattr(os, "sched_getaffinity"):
        assert usable_cores() == len(os.sched_getaffinity(0))
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    n = max(cores) + 1
    monkeypatch.setattr(threads_mod.psutil, "cpu_percent", lambda **k: [0.0] * n)
    assert threads_per_worker(1) == len(cores)
    assert threads_per_worker(len(cores) * 4) == 1
    monkeypatch.setattr(threads_mod.psutil, "cpu_percent", lambda **k: [100.0] * n)  # every core taken by others
    assert threads_per_worker(1) == 1
    monkeypatch.setattr(threads_mod.psutil, "cpu_percent", lambda **k: [100.0] + [0.0] * (n - 1))
    assert threads_per_worker(1) == max(1, len([c for c in cores if c != 0]))
