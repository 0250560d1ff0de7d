"""The fast rank (float64 Gram eigenvalues) returns `matrix_rank`'s integer on every matrix, or hands it to the SVD.

References: `torch.linalg.matrix_rank(Δ.float())` (the published definition, and the one answer every test holds
rldelta to), numpy's fp32 `matrix_rank` with the same tolerance as a second library where the case is well-posed,
and float64 SVDs (numpy) for the exact singular values a matrix has.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rldelta.metrics import rank as rank_mod
from rldelta.metrics.rank import EPS32, SVD_ERROR, gram_lower, rank_stats, rank_stats_batch


def _reference(d: torch.Tensor) -> int:
    """`torch.linalg.matrix_rank`'s integer. Where no singular value lies in the band around the threshold, numpy's
    fp32 `matrix_rank` must give it too (a check that the reference itself is right); inside the band two fp32 SVDs
    may round either way (on an AVX-512 Xeon they did: 256 against 255), so only the definition counts there."""
    r = int(torch.linalg.matrix_rank(d.float()))
    if not _in_band(d):
        dn = d.float().numpy()
        s = np.linalg.svd(dn, compute_uv=False)
        tol = s.max() * max(dn.shape) * np.finfo(np.float32).eps if s.size else 0.0
        assert np.linalg.matrix_rank(dn, tol=tol) == r
    return r


def _in_band(d: torch.Tensor) -> bool:
    """Whether an exact (float64) singular value of `d` lies within the band of rank.py's point 3 around the
    threshold, where two correct fp32 SVDs may disagree."""
    s = np.linalg.svd(d.double().numpy(), compute_uv=False)
    if not s.size or s[0] == 0:
        return False
    tau = s[0] * max(d.shape) * EPS32
    return bool(np.any(np.abs(s - tau) < _band(tuple(d.shape), s[0])))


def _eff_rank_np(d: torch.Tensor) -> float:
    s = np.linalg.svd(d.double().numpy(), compute_uv=False)
    if s.sum() == 0:
        return 0.0
    p = s[s > 0] / s.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def _rl_like(m: int, n: int, g: torch.Generator) -> torch.Tensor:
    w = (torch.randn(m, n, generator=g) * 0.02).bfloat16()
    u = torch.randn(m, n, generator=g) * 0.02 * 2**-9
    return (w.float() + u).bfloat16().float() - w.float()


def _planted(m: int, n: int, s: np.ndarray, seed: int) -> torch.Tensor:
    """U diag(s) Vᵀ with random orthonormal U, V, rounded to fp32."""
    rng = np.random.default_rng(seed)
    k = min(m, n)
    u, _ = np.linalg.qr(rng.standard_normal((m, k)))
    v, _ = np.linalg.qr(rng.standard_normal((n, k)))
    return torch.from_numpy((u * s) @ v.T).float()


def _cases() -> list[tuple[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    cols = torch.logspace(0, -6, 96)
    a, b = torch.randn(200, 7, generator=g), torch.randn(7, 150, generator=g)
    one = torch.zeros(40, 30)
    one[3, 4] = 1e-3
    return [
        ("gaussian square", torch.randn(128, 128, generator=g)),
        ("gaussian tall", torch.randn(300, 64, generator=g)),
        ("gaussian wide", torch.randn(64, 300, generator=g)),
        ("rl-like square", _rl_like(256, 256, g)),
        ("rl-like wide", _rl_like(96, 256, g)),
        ("ill-conditioned columns", torch.randn(160, 96, generator=g) * cols),
        ("exactly rank 7 (fp32 product)", a @ b),
        ("rank 1 outer product", torch.outer(torch.randn(90, generator=g), torch.randn(70, generator=g))),
        ("one non-zero entry", one),
        ("zero", torch.zeros(50, 20)),
        ("sparse 2%", torch.randn(120, 80, generator=g) * (torch.rand(120, 80, generator=g) < 0.02)),
        ("1 x n", torch.randn(1, 33, generator=g)),
        ("duplicated rows", torch.randn(40, 60, generator=g).repeat(2, 1)),
    ]


@pytest.mark.parametrize("label,d", _cases(), ids=[c[0] for c in _cases()])
def test_rank_equals_matrix_rank(label: str, d: torch.Tensor) -> None:
    rs = rank_stats(d)
    assert rs.rank == _reference(d), label
    assert rs.max_rank == min(d.shape)
    assert rs.effective_rank == pytest.approx(_eff_rank_np(d), rel=1e-5, abs=1e-9)


def _band(shape: tuple[int, int], sigma_max: float) -> float:
    """Half-width of the agreement band around the threshold, as rank.py's point 3 states it (dominant term)."""
    return SVD_ERROR * math.sqrt(max(shape)) * EPS32 * sigma_max


@pytest.mark.parametrize("side", [-1.0, 1.0])
@pytest.mark.parametrize("shape", [(256, 256), (200, 320)])
def test_near_threshold_inside_the_band_takes_the_svd(shape: tuple[int, int], side: float) -> None:
    m, n = shape
    tau = max(shape) * EPS32  # σ_max = 1
    s = np.linspace(1.0, 0.01, min(shape))
    s[-1] = tau + side * 0.1 * _band(shape, 1.0)  # well inside the band, on either side of the threshold
    d = _planted(m, n, s, seed=3)
    exact = np.linalg.svd(d.double().numpy(), compute_uv=False)
    assert abs(exact[-1] - exact[0] * tau) < 0.5 * _band(shape, exact[0])  # the fp32 rounding kept it there
    assert _in_band(d)  # so the reference is matrix_rank's alone: numpy's fp32 SVD may round the other way
    rs = rank_stats(d)
    assert rs.method == "svd"
    assert rs.rank == _reference(d)


@pytest.mark.parametrize("side", [-1.0, 1.0])
@pytest.mark.parametrize("shape", [(256, 256), (200, 320)])
def test_near_threshold_outside_the_band_is_decided_by_the_gram(shape: tuple[int, int], side: float) -> None:
    m, n = shape
    tau = max(shape) * EPS32
    s = np.linspace(1.0, 0.01, min(shape))
    s[-3:] = tau + side * 3.0 * _band(shape, 1.0)  # three values just outside the band
    d = _planted(m, n, s, seed=4)
    assert not _in_band(d)  # so numpy is consulted too
    rs = rank_stats(d)
    assert rs.method == "gram"
    expect = min(shape) - (3 if side < 0 else 0)
    assert rs.rank == _reference(d) == expect


def test_the_band_is_what_keeps_the_answers_equal(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the band switched off, a value planted on the threshold is decided by the Gram alone: the fallback
    must fire with the band on, so that the answer is the SVD's whatever side its rounding puts the value on."""
    shape = (256, 256)
    s = np.linspace(1.0, 0.01, 256)
    s[-1] = max(shape) * EPS32
    d = _planted(*shape, s, seed=5)
    assert rank_stats(d).method == "svd"
    monkeypatch.setattr(rank_mod, "SVD_ERROR", 0.0)
    monkeypatch.setattr(rank_mod, "U64", 0.0)
    assert rank_stats(d).method == "gram"


def test_batch_equals_one_at_a_time() -> None:
    g = torch.Generator().manual_seed(7)
    stack = torch.stack([_rl_like(64, 96, g), torch.zeros(64, 96), torch.randn(64, 96, generator=g) * 1e-30])
    assert rank_stats_batch(stack) == [rank_stats(d) for d in stack]
    assert [r.rank for r in rank_stats_batch(stack)] == [_reference(d) for d in stack]


def test_gram_lower_blocks_and_slices_sum_to_the_float64_product(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rank_mod, "BLOCK", 7)
    monkeypatch.setattr(rank_mod, "SLICE_ENTRIES", 100)  # slices of 100 // (2 * 20) = 2 columns
    g = torch.Generator().manual_seed(8)
    a = torch.randn(2, 20, 45, generator=g)
    got = np.tril(gram_lower(a).numpy())  # the upper triangle is not read (eigvalsh takes UPLO="L")
    for i in range(2):
        x = a[i].double().numpy()
        bound = 45 * np.finfo(np.float64).eps * (np.abs(x) @ np.abs(x).T)
        assert np.all(np.abs(got[i] - np.tril(x @ x.T)) <= np.tril(bound))


def test_rank_needs_a_matrix() -> None:
    with pytest.raises(ValueError, match="2-D"):
        rank_stats(torch.zeros(3, 4, 5))


def test_the_rectangular_certificate_proves_full_rank_and_refuses_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    """A clearly rectangular update is declared full-rank by one shifted Cholesky of the float64 Gram of its first
    1.25 k long-side vectors; with a singular value planted just below the threshold the certificate must fail, on
    those rows and on the whole Gram (and the float64 eigenvalues then count it)."""
    shape = (120, 300)
    s = np.linspace(1.0, 0.2, 120)
    full = _planted(*shape, s, seed=9)
    rows = []
    real = rank_mod._full_rank_certified
    monkeypatch.setattr(
        rank_mod, "_full_rank_certified", lambda g, r, *a: rows.append((r, real(g, r, *a))) or rows[-1][1]
    )
    assert rank_stats(full).rank == 120 == _reference(full)
    s[-1] = max(shape) * EPS32 * (1 - 3 * SVD_ERROR * math.sqrt(max(shape)) / max(shape))
    short = _planted(*shape, s, seed=9)
    assert rank_stats(short).rank == 119 == _reference(short)
    assert rows == [(150, True), (150, False), (300, False)]
    monkeypatch.setattr(rank_mod, "_full_rank_certified", lambda *a: True)  # a certificate that always says yes
    assert rank_stats(short).rank != _reference(short)


def test_a_rank_deficient_head_hands_over_to_the_whole_gram() -> None:
    """The first 1.25 k rows alone are rank-deficient (zero), the whole update is full-rank: the head's certificate
    fails and the whole float64 Gram proves it; the spectrum is the same as numpy's either way."""
    g = torch.Generator().manual_seed(10)
    d = torch.randn(400, 96, generator=g)
    d[:120] = 0
    rs = rank_stats(d)
    assert rs.rank == 96 == _reference(d)
    assert rs.effective_rank == pytest.approx(_eff_rank_np(d), rel=1e-5)


@pytest.mark.parametrize("scale", [1e-30, 1e-12, 1e12, 1e30])
def test_tiny_and_huge_updates_keep_their_rank(scale: float) -> None:
    """fp32 squares of entries near 1e-30 underflow (and near 1e30 overflow): such updates must take the float64
    Gram whole, so that scaling an update leaves its rank and effective rank unchanged."""
    g = torch.Generator().manual_seed(11)
    d = _rl_like(300, 80, g) * 300
    rs, scaled = rank_stats(d), rank_stats(d * scale)
    assert scaled.rank == rs.rank == _reference(d * scale)
    assert scaled.effective_rank == pytest.approx(rs.effective_rank, rel=1e-5)
