"""The step recorder under FSDP2: two processes (torchrun, gloo, CPU), each recording its shard, write exactly the
files one unsharded process writes for the same run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors import safe_open

WORKER = Path(__file__).with_name("steps_fsdp_worker.py")


def _tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(path, "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}


def _run(cmd: list[str], tmp: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without distributed")
def test_two_fsdp_ranks_write_the_files_of_one_process(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    assert torchrun, "torchrun not found"
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    _run([sys.executable, str(WORKER), str(single), "--single"], tmp_path)
    _run([torchrun, "--standalone", "--nproc-per-node", "2", str(WORKER), str(sharded)], tmp_path)

    a, b = pd.read_parquet(single / "steps.parquet"), pd.read_parquet(sharded / "steps.parquet")
    pd.testing.assert_frame_equal(a, b)
    assert a[a.module == "total"].changed_base.gt(0).all() and a.new_in_union.sum() > 0  # not trivially empty
    files = sorted(str(p.relative_to(single)) for p in (single / "steps").rglob("*.safetensors"))
    want = {"steps/base.safetensors", "steps/first_changed.safetensors", "steps/step-4.mask.safetensors"}
    assert want | {"steps/patches/step-5.safetensors"} <= set(files), files
    for f in files:
        (ta, ma), (tb, mb) = _tensors(single / f), _tensors(sharded / f)
        assert sorted(ta) == sorted(tb) and ma == mb, f
        for k in ta:
            assert ta[k].dtype == tb[k].dtype and torch.equal(ta[k].view(-1), tb[k].view(-1)), (f, k)
    assert (single / "steps" / "summary.json").read_text().split('"memory_bytes"')[0] == (
        sharded / "steps" / "summary.json"
    ).read_text().split('"memory_bytes"')[0]
