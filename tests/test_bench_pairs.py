"""The benchmarks' synthetic RL-like pair: the share of entries it changes and where they fall, computed again.

The pair is read back with safetensors; the expected changed share of each matrix comes from the bf16 grid alone
(a step u ~ N(0, s) moves w when it crosses half the gap to a neighbour: 2^(e-7) wide, half that below a power of
two), with the scale s the builder recorded, and must match what the files hold.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from scipy.stats import norm

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from _pairs import (  # noqa: E402
    INDEX,
    PROBE,
    ModelShape,
    RLUpdate,
    groups_by_bytes,
    llama_tensors,
    read_manifest,
    write_pair,
)

SMALL = ModelShape(hidden=256, inter=512, layers=1, heads=4, kv_heads=2, vocab=1000)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("pair")
    shapes = llama_tensors(SMALL)
    base, tuned = write_pair(root, shapes, groups_by_bytes(shapes, 300_000), RLUpdate(seed=3), {"test": 1})
    where = json.loads((base / INDEX).read_text())["weight_map"]

    def load(side: Path, name: str) -> np.ndarray:
        with safe_open(side / where[name], "pt") as f:
            return f.get_tensor(name).double().numpy()

    pairs = {n: (load(base, n), load(tuned, n)) for n in shapes}
    return shapes, pairs, read_manifest(root), where


def _expected_share(w: np.ndarray, s: float) -> float:
    a = np.abs(w)
    e = np.floor(np.log2(a))
    ulp = np.exp2(e - 7)
    away = ulp
    toward = np.where(a == np.exp2(e), ulp / 2, ulp)
    return float(np.mean(norm.sf(away / 2 / s) + norm.sf(toward / 2 / s)))


def test_shapes_sharding_and_counts(pair):
    shapes, pairs, manifest, where = pair
    assert shapes["model.layers.0.self_attn.k_proj.weight"] == (128, 256)  # 2 kv heads of 64
    assert len(set(where.values())) > 1
    for name, (b, t) in pairs.items():
        assert b.shape == shapes[name]
        assert manifest["tensors"][name]["changed"] == int(np.sum(b != t))


def test_changed_share_matches_the_bf16_grid(pair):
    _, pairs, manifest, _ = pair
    for name, (b, t) in pairs.items():
        if b.ndim != 2:
            assert np.all(b == 1.0)  # norms start at 1.0; a step this small never moves them
            continue
        got = np.mean(b != t)
        want = _expected_share(b, manifest["tensors"][name]["scale"])
        se = np.sqrt(want * (1 - want) / b.size)
        assert abs(got - want) < 5 * se + 1e-3, name
        assert 0.05 < got < 0.15, name


def test_changes_fall_on_small_weights(pair):
    _, pairs, manifest, _ = pair
    b, t = pairs[PROBE]
    moved = b != t
    a = np.abs(b)
    lower_median = lambda x: np.sort(x)[(x.size - 1) // 2]  # noqa: E731  torch.median's convention
    rec = manifest["tensors"][PROBE]
    assert rec["median_abs_w_changed"] == pytest.approx(lower_median(a[moved]))
    assert rec["median_abs_w_unchanged"] == pytest.approx(lower_median(a[~moved]))
    assert lower_median(a[moved]) < 0.3 * lower_median(a[~moved])


def test_reused_only_with_the_same_spec(tmp_path):
    shapes = llama_tensors(SMALL)
    groups = groups_by_bytes(shapes, 1e9)
    calls = []

    def make(i, name, shape):
        calls.append(name)
        return torch.zeros(shape, dtype=torch.bfloat16), torch.zeros(shape, dtype=torch.bfloat16)

    write_pair(tmp_path, shapes, groups, make, {"v": 1})
    write_pair(tmp_path, shapes, groups, make, {"v": 1})
    assert len(calls) == len(shapes)
    write_pair(tmp_path, shapes, groups, make, {"v": 2})
    assert len(calls) == 2 * len(shapes)
