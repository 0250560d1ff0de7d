"""`rldelta predict` on a base with planted ULP structure: entries at known distances from their bf16 rounding edges,
under a given drift, against the changed fraction numpy computes by doing the arithmetic and the rounding."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import rldelta.metrics.law as law_mod
from conftest import bf16_rne, write_checkpoint
from rldelta.cli import app
from rldelta.metrics.law import changed_under_drift
from rldelta.predict import Settings, learning_rates, predict, read_base

DELTA = np.float32(3e-4)  # not dyadic: it never lands on an edge of these cells
# A point-mass drift: every entry moves by exactly lr per step (ρ = 1, β = 1), either way with probability ½.
GIVEN = {"source": "a given drift", "laws": [dict(mu=0.0, sigma=0.0, beta=1.0, mu_step=0.0, q={}, default_q=1.0)]}


def planted(seed: int) -> dict[str, np.ndarray]:
    """fp32 entries b + f·ULP(b): bf16 values b over seven binades, offsets f in sixteenths of a ULP (|f| < ½), both
    signs; and a tensor of bf16 values themselves (distance ½ ULP, ¼ toward zero at a power of two)."""
    rng = np.random.default_rng(seed)
    n = 4000
    e = rng.integers(-6, 1, n)
    m = rng.integers(1, 128, n)
    ulp = np.exp2(e - 7.0)
    b = np.exp2(e.astype(np.float64)) * (1 + m / 128)
    f = rng.integers(-7, 8, n) / 16
    sign = rng.choice([-1.0, 1.0], n)
    w = (sign * (b + f * ulp)).astype(np.float32)
    mb = rng.integers(0, 128, 1000)  # includes powers of two
    wb = (rng.choice([-1.0, 1.0], 1000) * np.exp2(rng.integers(-6, 1, 1000)) * (1 + mb / 128)).astype(np.float32)
    return {
        "model.layers.0.mlp.up_proj.weight": w.reshape(40, 100),
        "model.layers.1.self_attn.q_proj.weight": wb.reshape(10, 100),
    }


def numpy_fraction(tensors: dict[str, np.ndarray], drift: np.float32) -> float:
    """The arithmetic itself: fp32 w ± drift rounded to bf16 (by the definition), compared bitwise with bf16(w)."""
    changed = total = 0
    for w in tensors.values():
        base = bf16_rne(w).view(torch.int16).numpy()
        for d in (drift, -drift):
            changed += int((bf16_rne(w + np.float32(d)).view(torch.int16).numpy() != base).sum())
        total += 2 * w.size
    return changed / total


def law_fraction(path, steps: int) -> float:
    return predict(read_base(path), Settings(lr=float(DELTA), steps=steps), GIVEN)["changed_frac"]


@pytest.fixture
def base(tmp_path):
    tensors = planted(0)
    path = write_checkpoint(tmp_path / "base", {k: torch.from_numpy(v) for k, v in tensors.items()})
    return path, tensors


@pytest.mark.parametrize("steps", [1, 3, 7])
def test_planted_ulp_structure_exact(base, steps):
    path, tensors = base
    drift = np.float32(steps * DELTA)
    for w in tensors.values():  # no entry within the histogram's 1/64 octave of the drift: the law is exact here
        d_out, d_in, _ = law_mod.distances(w.reshape(-1))
        assert np.min(np.abs(np.log2(np.r_[d_out, d_in] / float(drift)))) > 1 / 100
    want = numpy_fraction(tensors, drift)
    assert 0.05 < want < 0.95  # a drift that crosses some edges and not others
    assert law_fraction(path, steps) == pytest.approx(want, abs=1e-12)
    # per entry too: the exact crossing rule against the arithmetic
    for w in tensors.values():
        ref = bf16_rne(w + drift).view(torch.int16).numpy() != bf16_rne(w).view(torch.int16).numpy()
        assert np.array_equal(changed_under_drift(w, np.full(w.shape, drift)), ref)


def test_a_wrong_law_fails(base, monkeypatch):
    """The same check fails for a law that takes a whole ULP as the distance (the edge is half a ULP away)."""
    path, tensors = base
    right = law_mod.distances
    monkeypatch.setattr(law_mod, "distances", lambda w, stored="bf16": tuple(2 * x for x in right(w, stored)))
    assert law_fraction(path, 3) != pytest.approx(numpy_fraction(tensors, np.float32(3 * DELTA)), abs=0.01)


def test_ties_round_to_even():
    """A value landing exactly on an edge rounds to the even neighbour: it changes only from an odd stored value."""
    b = np.array([1 + 1 / 128, 1 + 2 / 128], np.float32)  # odd, even last mantissa bit
    half = np.float32(2**-8)  # half a ULP in [1, 2): exactly the edge
    ref = bf16_rne(b + half).view(torch.int16).numpy() != bf16_rne(b).view(torch.int16).numpy()
    assert list(ref) == [True, False]
    assert list(changed_under_drift(b, np.full(2, half))) == [True, False]


def test_schedule_weight_decay_and_cli(base):
    path, tensors = base
    lrs = learning_rates(Settings(lr=1.0, steps=10, schedule="linear", warmup=2))
    assert np.allclose(lrs, [0, 0.5, 1, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8])
    # weight decay shortens the distance toward zero: with a drift of 0 it alone decides; |w|·wd·lr crosses d_in
    s = Settings(lr=float(DELTA), steps=1, weight_decay=1.0)
    still = dict(GIVEN, laws=[dict(GIVEN["laws"][0], q={}, default_q=1.0)])
    assert predict(read_base(path), s, still)["changed_frac"] >= law_fraction(path, 1)
    r = CliRunner().invoke(app, ["predict", str(path), "--lr", "1e-5", "--steps", "8", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert 0 <= out["changed_frac"] <= 1 and out["interval"][0] <= out["changed_frac"] <= out["interval"][1]
    assert set(out["by_module"]) == {"mlp.up_proj", "self_attn.q_proj"} and set(out["by_layer"]) == {"0", "1"}
    assert len(out["per_step"]) == 8 and {"bytes_index", "bytes_bitmask", "changed_step_frac"} <= set(
        out["per_step"][0]
    )
    assert "validation sweep" in out["calibration"]
    r = CliRunner().invoke(app, ["predict", str(path), "--lr", "1e-5", "--steps", "8", "--schedule", "step"])
    assert r.exit_code == 2 and "--schedule must be one of" in r.output
    r = CliRunner().invoke(app, ["predict", str(path), "--lr", "1e-5", "--steps", "8", "--from-run", str(path)])
    assert r.exit_code == 2 and "run.json" in r.output
