"""Floating-point precision as a cause of sparsity: which updates survive rounding to the stored dtype.

A weight stored in bf16 changes only if its update exceeds half the spacing to the next representable value
(half a ULP), and the ULP grows with |w|. So a uniform update of size s changes exactly the entries whose half-ULP
is below s: the smallest weights. Everything here is a pure function of tensors or of histograms over them.

Histograms over |w| use a 15-bit magnitude key: the top 16 bits of |w| as an fp32 bit pattern (sign dropped).
IEEE bit patterns of non-negative floats order like their values, so the key is monotone in |w|; for bf16 weights
it is the exact value (bf16 is the top half of fp32), for fp16/fp32 weights it is a bin 2^-7 wide (relative).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

MAG_KEYS = 1 << 15  # number of distinct magnitude keys
# half-ULP exponents of bf16/fp16/fp32 lie in [-150, 127]; histograms index them with this offset
EXP_OFFSET = 160
EXP_BINS = 320


def _format(dtype: torch.dtype) -> tuple[int, int]:
    """(mantissa bits, exponent of the smallest normal) of a floating dtype."""
    if not dtype.is_floating_point:
        raise ValueError(f"ULP needs a floating dtype, not {dtype}")
    fi = torch.finfo(dtype)
    return round(-math.log2(fi.eps)), round(math.log2(fi.tiny))


def ulp_exponent(w: torch.Tensor, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """k with ULP(w) = 2^k in `dtype`: the spacing from |w| (rounded to dtype) to the next larger magnitude."""
    p, emin = _format(dtype)
    a = w.to(dtype).float().abs()
    _, e = torch.frexp(a)  # a = m·2^e with m in [0.5, 1), so floor(log2 a) = e - 1
    e = e.to(torch.int32) - 1
    e = torch.where(a == 0, torch.full_like(e, emin), e)
    return torch.clamp(e, min=emin) - p  # below the smallest normal the spacing stays that of subnormals


def ulp(w: torch.Tensor, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """ULP of each weight in `dtype`, as fp32 (inf for non-finite weights)."""
    out = torch.ldexp(torch.ones(w.shape, dtype=torch.float32), ulp_exponent(w, dtype))
    return torch.where(torch.isfinite(w.float()), out, torch.full_like(out, float("inf")))


def half_ulp(w: torch.Tensor, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """The smallest update (moving away from zero) that rounding to `dtype` does not undo."""
    return ulp(w, dtype) / 2


def rounding_changed(w: torch.Tensor, s: float, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """Entries an update of size s would change through rounding alone: half-ULP(w) < s."""
    return half_ulp(w, dtype) < s


def rounding_changed_frac(w: torch.Tensor, s: float, dtype: torch.dtype = torch.bfloat16) -> float:
    return float(rounding_changed(w, s, dtype).double().mean()) if w.numel() else float("nan")


def half_ulp_exponent_index(w: torch.Tensor, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """Histogram index (exponent + EXP_OFFSET) of each weight's half-ULP; non-finite weights go to the top bin."""
    idx = ulp_exponent(w, dtype).long() - 1 + EXP_OFFSET
    idx = torch.where(torch.isfinite(w.float()), idx, torch.full_like(idx, EXP_BINS - 1))
    return idx.clamp_(0, EXP_BINS - 1)


def magnitude_key(w: torch.Tensor) -> torch.Tensor:
    """15-bit key monotone in |w| (see module doc): an integer tensor with values in [0, MAG_KEYS).

    For bf16 the key is the bit pattern without the sign (int16, no fp32 copy); otherwise int32.
    """
    if w.dtype == torch.bfloat16:
        return w.view(torch.int16) & 0x7FFF
    return w.float().abs().view(torch.int32) >> 16


@functools.cache
def _half_ulp_table(dtype: torch.dtype) -> torch.Tensor:
    return half_ulp_exponent_index(key_value(torch.arange(MAG_KEYS)), dtype)


def half_ulp_index_table(dtype: torch.dtype) -> torch.Tensor:
    """Half-ULP histogram index of every magnitude key, for weights stored in `dtype` itself.

    Valid when the weights' own dtype is `dtype` (or bf16 weights with an fp32 `dtype`): the key keeps the whole
    fp32 exponent, and the ULP depends on nothing else. Turns a per-entry computation into a per-key lookup.
    """
    return _half_ulp_table(dtype).clone()


def key_table_applies(weight_dtype: torch.dtype, dtype: torch.dtype) -> bool:
    """Whether `half_ulp_index_table(dtype)` is exact for weights stored in `weight_dtype`."""
    return weight_dtype == dtype or (weight_dtype == torch.bfloat16 and dtype == torch.float32)


def key_value(key: torch.Tensor | np.ndarray | int) -> torch.Tensor:
    """The smallest |w| a magnitude key holds (fp32); key+1 gives the bin's upper edge."""
    k = torch.as_tensor(key, dtype=torch.int64)
    return (k << 16).to(torch.int32).view(torch.float32)


@dataclass(frozen=True)
class SStar:
    """The uniform update size whose rounding-alone prediction best matches the observed changed count.

    The prediction {half-ULP < s} only changes when s crosses a power of two, so every s in (s_lo, s_hi] gives the
    same predicted set; `s_star` is their geometric middle.
    """

    s_star: float
    s_lo: float
    s_hi: float
    observed: int
    predicted: int
    true_positive: int

    @property
    def precision(self) -> float:
        return self.true_positive / self.predicted if self.predicted else float("nan")

    @property
    def recall(self) -> float:
        return self.true_positive / self.observed if self.observed else float("nan")


def solve_s_star(total: torch.Tensor, changed: torch.Tensor) -> SStar:
    """s* from half-ULP exponent histograms (index = exponent + EXP_OFFSET) of all and of changed entries."""
    total = torch.as_tensor(total, dtype=torch.int64)
    changed = torch.as_tensor(changed, dtype=torch.int64)
    observed = int(changed.sum())
    nonempty = torch.nonzero(total).flatten().tolist()
    cum_t = torch.cumsum(total, 0)
    cum_c = torch.cumsum(changed, 0)
    # candidate j = -1 is the empty prediction; candidate i includes every bin up to i
    best_i, best_err = -1, observed
    for i in nonempty:
        err = abs(int(cum_t[i]) - observed)
        if err < best_err:
            best_i, best_err = i, err
    if best_i < 0:
        lo = 0.0
        predicted = tp = 0
    else:
        lo = 2.0 ** (best_i - EXP_OFFSET)
        predicted, tp = int(cum_t[best_i]), int(cum_c[best_i])
    above = [i for i in nonempty if i > best_i]
    hi = 2.0 ** (above[0] - EXP_OFFSET) if above else math.inf
    if lo > 0 and math.isfinite(hi):
        s = math.sqrt(lo * hi)
    elif lo > 0:
        s = lo * math.sqrt(2)
    elif math.isfinite(hi):
        s = hi / math.sqrt(2)
    else:
        s = float("nan")
    return SStar(s_star=s, s_lo=lo, s_hi=hi, observed=observed, predicted=predicted, true_positive=tp)


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Exact ROC-AUC = Mann-Whitney U / (P·N), tied scores given their average rank (a tie counts one half)."""
    s = scores.reshape(-1).double()
    y = labels.reshape(-1).bool()
    if s.numel() != y.numel():
        raise ValueError(f"{s.numel()} scores but {y.numel()} labels")
    n_pos = int(y.sum())
    n_neg = y.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = torch.argsort(s, stable=True)
    s_sorted = s[order]
    _, counts = torch.unique_consecutive(s_sorted, return_counts=True)
    ends = torch.cumsum(counts, 0).double()  # 1-based rank of each tie group's last member
    avg = ends - (counts.double() - 1) / 2
    ranks = torch.empty_like(s)
    ranks[order] = torch.repeat_interleave(avg, counts)
    u = float(ranks[y].sum()) - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


def auc_from_counts(pos: torch.Tensor, neg: torch.Tensor) -> float:
    """ROC-AUC from per-bin counts of positives and negatives, bins in increasing score; within a bin a tie."""
    p, n = torch.as_tensor(pos).double(), torch.as_tensor(neg).double()
    n_pos, n_neg = float(p.sum()), float(n.sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    neg_below = torch.cumsum(n, 0) - n
    return float((p * (neg_below + n / 2)).sum()) / (n_pos * n_neg)


def auc_tie_bound(pos: torch.Tensor, neg: torch.Tensor) -> float:
    """How far `auc_from_counts` can be from the exact AUC when a bin pools distinct scores (0 if bins are exact)."""
    p, n = torch.as_tensor(pos).double(), torch.as_tensor(neg).double()
    denom = float(p.sum()) * float(n.sum())
    return float((p * n).sum()) / (2 * denom) if denom else float("nan")


def roc_curve_from_counts(pos: torch.Tensor, neg: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) thresholding from the highest-score bin down; starts at (0, 0), ends at (1, 1)."""
    p = torch.as_tensor(pos).double().flip(0).numpy()
    n = torch.as_tensor(neg).double().flip(0).numpy()
    keep = (p + n) > 0
    tpr = np.concatenate([[0.0], np.cumsum(p[keep]) / max(p.sum(), 1)])
    fpr = np.concatenate([[0.0], np.cumsum(n[keep]) / max(n.sum(), 1)])
    return fpr, tpr


def quantile_group_fractions(total: torch.Tensor, changed: torch.Tensor, groups: int = 10) -> list[float]:
    """Changed fraction in each of `groups` equal-count groups of entries ordered by bin (e.g. |w| deciles).

    Bins are in increasing order. A bin straddling a group boundary is split in proportion, as if its tied
    entries were in random order, so the answer is exact for exact bins.
    """
    t = torch.as_tensor(total).double().numpy()
    c = torch.as_tensor(changed).double().numpy()
    n = t.sum()
    if n == 0:
        return [float("nan")] * groups
    xp = np.concatenate([[0.0], np.cumsum(t)])
    fp = np.concatenate([[0.0], np.cumsum(c)])
    keep = np.concatenate([[True], t > 0])  # np.interp wants increasing xp: drop empty bins
    xp, fp = xp[keep], fp[keep]
    edges = np.linspace(0.0, n, groups + 1)
    cum = np.interp(edges, xp, fp)
    return [float(x) for x in np.diff(cum) / np.diff(edges)]


def quantile_group_of_bins(total: torch.Tensor, groups: int = 10) -> torch.Tensor:
    """Group index of each bin: the equal-count group holding the bin's middle entry (bins in increasing order)."""
    t = torch.as_tensor(total).double()
    n = float(t.sum())
    if n == 0:
        return torch.zeros(t.numel(), dtype=torch.int64)
    mid = torch.cumsum(t, 0) - t / 2
    return torch.clamp((mid / n * groups).floor().long(), 0, groups - 1)


def histogram_median_key(hist: torch.Tensor) -> float:
    """Median of values binned by magnitude key, interpolated inside its bin (relative error < 2^-7)."""
    h = torch.as_tensor(hist).double()
    n = float(h.sum())
    if n == 0:
        return float("nan")
    cum = torch.cumsum(h, 0)
    i = int(torch.searchsorted(cum, torch.tensor([n / 2], dtype=torch.float64)).item())
    before = float(cum[i - 1]) if i > 0 else 0.0
    frac = (n / 2 - before) / float(h[i])
    lo, hi = float(key_value(i)), float(key_value(i + 1))
    return lo + frac * (hi - lo)
