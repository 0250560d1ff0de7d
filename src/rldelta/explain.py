"""`rldelta explain`: how much of "sparse, full-rank, seed-consistent" simple causes already predict.

Three null models, each streamed tensor by tensor (memory bounded by the largest tensor):
1. Rounding: an update survives in bf16 only above half a ULP of the weight, which grows with |w|.
2. Magnitude-matched overlap (with `other`): the overlap of two runs if each changed set were random within
   (tensor, |w|-bin) cells at the rates the run actually shows.
3. Random-sparse rank: the rank of random matrices with each tensor's shape and changed density.

Global figures are merged from per-tensor histograms over a 15-bit |w| key (see metrics/precision.py): exact for
bf16 weights (the key is the value), binned (2^-7 relative) for fp16/fp32 ones; the output says which.
With `tuned_master` (fp32 weights of the run) a second pass measures what rounding discarded.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from rldelta import __version__
from rldelta.checkpoint import Checkpoint, open_checkpoint
from rldelta.checkpoint.dtypes import dtype_of_label
from rldelta.columns import unit_schema
from rldelta.masks import Mask, check_compatible, load_mask, resolve_mask_path
from rldelta.metrics.nulls import derive_seed, random_sparse_rank_null
from rldelta.metrics.overlap import MatchedOverlap, count
from rldelta.metrics.precision import (
    EXP_BINS,
    EXP_OFFSET,
    MAG_KEYS,
    auc_from_counts,
    auc_tie_bound,
    half_ulp_exponent_index,
    half_ulp_index_table,
    histogram_median_key,
    key_table_applies,
    magnitude_key,
    quantile_group_fractions,
    quantile_group_of_bins,
    roc_auc,
    roc_curve_from_counts,
    solve_s_star,
)
from rldelta.metrics.sparsity import COMPARE_CHOICES, changed_bitwise, compare_dtype
from rldelta.naming import parse_name
from rldelta.runtime.atomic import atomic_write_bytes, atomic_write_json, atomic_write_parquet
from rldelta.runtime.errors import RldeltaError
from rldelta.runtime.files import EXPLAIN_JSON, EXPLAIN_TABLE, SUMMARY_FILE, TENSORS_FILE
from rldelta.runtime.lock import locks_output
from rldelta.runtime.progress import progress_bar

PLOT_DECILES = "changed_by_decile.png"
PLOT_ROC = "roc.png"
PLOT_OVERLAP = "overlap_null.png"
PLOT_RANK = "rank_null.png"
DECILES = 10

EXPLAIN_SCHEMA = unit_schema(
    [
        ("name", pa.string()),
        ("module", pa.string()),
        ("layer", pa.int64()),
        ("shape", pa.list_(pa.int64())),
        ("numel", pa.int64()),
        ("dtype", pa.string()),
        ("changed", pa.int64()),
        ("changed_frac", pa.float64()),
        ("auc", pa.float64()),
        ("changed_frac_by_decile", pa.list_(pa.float64())),
        ("rounding_predicted", pa.int64()),
        ("rounding_precision", pa.float64()),
        ("rounding_recall", pa.float64()),
        ("observed_rank_frac", pa.float64()),
        ("null_rank_frac", pa.float64()),
        ("null_rank_frac_std", pa.float64()),
        ("other_changed", pa.int64()),
        ("intersection", pa.int64()),
        ("overlap", pa.float64()),
        ("random_overlap", pa.float64()),
        ("matched_overlap", pa.float64()),
        ("fp32_changed", pa.int64()),
        ("fp32_changed_frac", pa.float64()),
        ("lost_to_rounding", pa.int64()),
    ]
)


class ExplainError(RldeltaError):
    """Inputs that do not belong together (a base or master that is not this diff's model, ...)."""


@dataclass
class _Hist:
    """|w|-key histograms of all and of changed entries, merged over tensors."""

    total: torch.Tensor = field(default_factory=lambda: torch.zeros(MAG_KEYS, dtype=torch.int64))
    changed: torch.Tensor = field(default_factory=lambda: torch.zeros(MAG_KEYS, dtype=torch.int64))
    exact: bool = True

    def add(self, total: torch.Tensor, changed: torch.Tensor, exact: bool) -> None:
        self.total += total
        self.changed += changed
        self.exact &= exact

    def auc(self) -> float:
        # score −|w|: increasing score is decreasing key
        return auc_from_counts(self.changed.flip(0), (self.total - self.changed).flip(0))

    def deciles(self) -> list[float]:
        return quantile_group_fractions(self.total, self.changed, DECILES)


def _diff_context(diff_dir: Path) -> tuple[dict, dict[str, dict], dict[str, str]]:
    """summary.json, the tensors.parquet rows by name and each tensor's tuned dtype, where the diff dir holds them."""
    summary, rows, tuned_dtypes = {}, {}, {}
    if diff_dir.is_dir():
        if (diff_dir / SUMMARY_FILE).is_file():
            try:
                summary = json.loads((diff_dir / SUMMARY_FILE).read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise ExplainError(f"{diff_dir / SUMMARY_FILE}: not valid JSON") from None
        if (diff_dir / TENSORS_FILE).is_file():
            try:
                table = pq.read_table(diff_dir / TENSORS_FILE, columns=["name", "rank_frac", "dtype_tuned"])
            except (pa.ArrowInvalid, KeyError, OSError) as e:
                raise ExplainError(f"{diff_dir / TENSORS_FILE}: cannot read ({e})") from None
            listed = table.to_pylist()
            per_name = Counter(r["name"] for r in listed)
            # a stacked experts tensor has one row per expert and no rank of its whole: no observed rank for it
            rows = {r["name"]: r for r in listed if per_name[r["name"]] == 1}
            tuned_dtypes = {r["name"]: r["dtype_tuned"] for r in listed}
    return summary, rows, tuned_dtypes


def _compare_dtype(mask: Mask, summary: dict) -> str:
    name = mask.metadata.get("compare_dtype") or summary.get("options", {}).get("compare_dtype") or "base"
    if name not in COMPARE_CHOICES:
        raise ExplainError(f"{mask.source}: unknown compare_dtype {name!r} in its metadata")
    return name


def _compared_in(cmp_name: str, w: torch.dtype, tuned_label: str | None, mask: Mask) -> torch.dtype:
    """The dtype the diff compared tensor `w` in; "narrower" needs the tuned side's dtype from tensors.parquet."""
    if cmp_name != "narrower":
        return compare_dtype(cmp_name, w, w)
    if tuned_label is None:
        raise ExplainError(
            f"{mask.source}: compared in the narrower stored dtype, but no {TENSORS_FILE} beside it names the tuned "
            "side's dtype; pass the diff's output folder"
        )
    return compare_dtype(cmp_name, w, dtype_of_label(tuned_label))


def _check_against(mask: Mask, ck: Checkpoint, role: str) -> dict[str, str]:
    """Mask name -> checkpoint name (tied aliases resolved); a missing tensor or other shape is an error."""
    resolved = {}
    for n in mask.names():
        cn = ck.aliases.get(n, n)
        if cn not in ck:
            raise ExplainError(f"tensor {n!r} of {mask.source} is not in {role} {ck.path} — is it this diff's model?")
        if ck.info(cn).shape != mask.shape(n):
            raise ExplainError(
                f"tensor {n!r} has shape {mask.shape(n)} in {mask.source} but {ck.info(cn).shape} in "
                f"{role} {ck.path} — is it this diff's model?"
            )
        resolved[n] = cn
    return resolved


def _module_mean(values: list[tuple[float | None, int]]) -> float | None:
    vals = [v for v, _ in values if v is not None and not math.isnan(v)]
    return sum(vals) / len(vals) if vals else None


class _FirstPass:
    """What the first pass collects, tensor by tensor: the |w| histograms (all tensors and per module), the half-ULP
    exponent counts s* is solved from, the matched-overlap sums against `other_mask`, and one row per tensor."""

    def __init__(
        self,
        diff_rows: dict[str, dict],
        other_mask: Mask | None,
        bins_per_octave_bits: int,
        rank_null: bool,
        rank_samples: int,
        seed: int,
    ) -> None:
        self.diff_rows, self.other_mask = diff_rows, other_mask
        self.shift = 7 - bins_per_octave_bits
        self.n_cells = MAG_KEYS >> self.shift
        self.rank_null, self.rank_samples, self.seed = rank_null, rank_samples, seed
        self.hist = _Hist()
        self.by_module: dict[str, _Hist] = {}
        self.exp_total = torch.zeros(EXP_BINS, dtype=torch.int64)
        self.exp_changed = torch.zeros(EXP_BINS, dtype=torch.int64)
        self.per_exp: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.rows: list[dict] = []
        self.matched = MatchedOverlap()

    def add(self, n: str, w: torch.Tensor, m: torch.Tensor, dtype: torch.dtype) -> None:
        """Tensor `n`: its base weights `w`, its changed-mask `m`, compared in `dtype`."""
        layer, module = parse_name(n)
        key = magnitude_key(w).reshape(-1)
        flat_m = m.reshape(-1)
        tot_k = torch.bincount(key, minlength=MAG_KEYS)
        pos_k = torch.bincount(key[flat_m], minlength=MAG_KEYS)
        exact = w.dtype == torch.bfloat16
        self.hist.add(tot_k, pos_k, exact)
        self.by_module.setdefault(module, _Hist()).add(tot_k, pos_k, exact)
        if key_table_applies(w.dtype, dtype):  # half-ULP is a function of the key: no per-entry work
            table = half_ulp_index_table(dtype)
            e_tot = torch.zeros(EXP_BINS, dtype=torch.int64).index_add_(0, table, tot_k)
            e_pos = torch.zeros(EXP_BINS, dtype=torch.int64).index_add_(0, table, pos_k)
        else:
            e_idx = half_ulp_exponent_index(w, dtype).reshape(-1)
            e_tot = torch.bincount(e_idx, minlength=EXP_BINS)
            e_pos = torch.bincount(e_idx[flat_m], minlength=EXP_BINS)
            del e_idx
        self.exp_total += e_tot
        self.exp_changed += e_pos
        self.per_exp[n] = (e_tot, e_pos)
        changed = count(flat_m)
        numel = flat_m.numel()
        if exact:
            auc = auc_from_counts(pos_k.flip(0), (tot_k - pos_k).flip(0))
        else:
            auc = roc_auc(-w.float().abs(), m)
        row = {
            "name": n,
            "module": module,
            "layer": layer,
            "shape": list(m.shape),
            "numel": numel,
            "dtype": str(w.dtype).removeprefix("torch."),
            "changed": changed,
            "changed_frac": changed / numel if numel else None,
            "auc": auc,
            "changed_frac_by_decile": quantile_group_fractions(tot_k, pos_k, DECILES),
            "observed_rank_frac": self.diff_rows.get(n, {}).get("rank_frac"),
        }
        if self.other_mask is not None:
            row.update(self.matched.add(key >> self.shift, flat_m, self.other_mask.get(n).reshape(-1), self.n_cells))
        if self.rank_null and m.ndim == 2:
            null = random_sparse_rank_null(
                tuple(m.shape),
                changed / numel if numel else 0.0,
                samples=self.rank_samples,
                seed=derive_seed(self.seed, n),
            )
            row.update(null_rank_frac=null.rank_frac_mean, null_rank_frac_std=null.rank_frac_std)
        self.rows.append(row)


def _other_mask(other: str | os.PathLike | None, diff_dir: str | os.PathLike, mask: Mask) -> Mask | None:
    """The other run's mask for the matched overlap (None without one): another mask of the same model."""
    if other is None:
        return None
    other_mask = load_mask(other)
    if resolve_mask_path(other) == resolve_mask_path(Path(diff_dir)):
        raise ExplainError(f"{other}: --other is the same mask as {diff_dir}")
    check_compatible(mask, other_mask)
    return other_mask


@locks_output("explain")
def run_explain(
    diff_dir: str | os.PathLike,
    base: str | os.PathLike,
    out: str | os.PathLike,
    *,
    tuned_master: str | os.PathLike | None = None,
    other: str | os.PathLike | None = None,
    rank_null: bool = True,
    rank_samples: int = 3,
    seed: int = 0,
    bins_per_octave_bits: int = 2,
    atol: float | None = None,
    progress: bool = False,
    plot: bool = True,
) -> dict:
    """Run the three null models on DIFF_DIR's changed-mask; write OUT/explain.{json,parquet} and PNG plots.

    Returns the content of explain.json.
    """
    if not 0 <= bins_per_octave_bits <= 7:
        raise ExplainError(f"bins_per_octave_bits must lie in [0, 7], not {bins_per_octave_bits}")
    if rank_samples < 1:
        raise ExplainError(f"rank_samples must be >= 1, not {rank_samples}")
    diff_path = Path(diff_dir)
    mask = load_mask(diff_path)
    summary, diff_rows, tuned_dtypes = _diff_context(diff_path)
    cmp_name = _compare_dtype(mask, summary)

    def dtype_of(n: str, w: torch.dtype) -> torch.dtype:
        return _compared_in(cmp_name, w, tuned_dtypes.get(n), mask)

    atol = float(atol if atol is not None else summary.get("options", {}).get("atol", 1e-5))
    base_ck = open_checkpoint(base)
    base_names = _check_against(mask, base_ck, "base")
    other_mask = _other_mask(other, diff_dir, mask)
    master_ck = open_checkpoint(tuned_master) if tuned_master is not None else None
    master_names = _check_against(mask, master_ck, "tuned master") if master_ck is not None else {}

    names = mask.names()
    first = _FirstPass(diff_rows, other_mask, bins_per_octave_bits, rank_null, rank_samples, seed)
    passes = 2 if master_ck is not None else 1

    with progress_bar("explain", passes * len(names), progress) as advance:
        for n in names:
            w = base_ck.get(base_names[n])
            first.add(n, w, mask.get(n), dtype_of(n, w.dtype))
            del w
            advance(n)

        star = _rounding_prediction(first.rows, first.per_exp, first.exp_total, first.exp_changed)

        master = None
        if master_ck is not None:
            inputs = (names, mask, base_ck, base_names, master_ck, master_names, dtype_of, atol)
            master = _master_pass(*inputs, first.hist.total, first.rows, advance)

    rounding = _rounding_summary(cmp_name, first.hist, first.by_module, star, mask.numel)
    matched = None
    if other_mask is not None:
        bins = f"per tensor, |w| octave split in {1 << bins_per_octave_bits}"
        matched = first.matched.summary(str(diff_dir), str(other), bins)
    rank = _rank_summary(first.rows, rank_samples) if rank_null else None
    result = {
        "version": __version__,
        "diff_dir": str(diff_dir),
        "base": str(base),
        "tuned_master": None if tuned_master is None else str(tuned_master),
        "other": None if other is None else str(other),
        "tensors": len(names),
        "numel": mask.numel,
        "rounding": rounding,
        "master": master,
        "magnitude_matched_overlap": matched,
        "rank_null": rank,
        "seed": seed,
    }
    _write(Path(out), first, result, plot)
    return result


def _write(out: Path, first: _FirstPass, result: dict, plot: bool) -> None:
    """explain.parquet, the plots, then explain.json."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_parquet(first.rows, out / EXPLAIN_TABLE, EXPLAIN_SCHEMA)
    if plot:
        _plots(out, result, first.hist)
    atomic_write_json(out / EXPLAIN_JSON, result)


def _rank_summary(rows: list[dict], rank_samples: int) -> dict:
    """explain.json's rank_null: per module, the observed and the random-sparse rank fraction (numel-weighted)."""
    rank = {}
    for mod in sorted({r["module"] for r in rows if r.get("null_rank_frac") is not None}):
        sub = [r for r in rows if r["module"] == mod and r.get("null_rank_frac") is not None]
        rank[mod] = {
            "tensors": len(sub),
            "density": sum(r["changed"] for r in sub) / max(sum(r["numel"] for r in sub), 1),
            "observed_rank_frac": _module_mean([(r.get("observed_rank_frac"), r["numel"]) for r in sub]),
            "null_rank_frac": _module_mean([(r["null_rank_frac"], r["numel"]) for r in sub]),
            "null_samples": rank_samples,
        }
    return rank


def _rounding_summary(cmp_name: str, hist: _Hist, by_module: dict[str, _Hist], star, numel: int) -> dict:
    """explain.json's rounding: how well |w| (AUC, deciles) and the half-ULP threshold s* predict the changed set."""
    return {
        "compare_dtype": cmp_name,
        "auc": hist.auc(),
        "auc_exact": hist.exact,
        "auc_tie_bound": 0.0
        if hist.exact
        else auc_tie_bound(hist.changed.flip(0), (hist.total - hist.changed).flip(0)),
        "observed_changed_frac": star.observed / numel if numel else None,
        "s_star": star.s_star,
        "s_star_range": [star.s_lo, star.s_hi],
        "predicted_changed_frac": star.predicted / numel if numel else None,
        "precision": star.precision,
        "recall": star.recall,
        "changed_frac_by_decile": hist.deciles(),
        "decile_method": "global |w| deciles over all tensors; tied |w| split in proportion"
        + ("" if hist.exact else "; |w| binned to 8 significant bits for non-bf16 tensors"),
        "by_module": {
            mod: {
                "numel": int(h.total.sum()),
                "changed_frac": float(h.changed.sum()) / max(int(h.total.sum()), 1),
                "auc": h.auc(),
                "changed_frac_by_decile": h.deciles(),
            }
            for mod, h in sorted(by_module.items())
        },
    }


def _rounding_prediction(rows: list[dict], per_exp: dict, exp_total: torch.Tensor, exp_changed: torch.Tensor):
    """Solve the half-ULP threshold s* over all tensors and add each tensor's predicted set to its row."""
    star = solve_s_star(exp_total, exp_changed)
    best = round(math.log2(star.s_lo)) + EXP_OFFSET if star.s_lo > 0 else -1
    for row in rows:
        e_tot, e_pos = per_exp[row["name"]]
        pred = int(e_tot[: best + 1].sum())
        tp = int(e_pos[: best + 1].sum())
        row.update(
            rounding_predicted=pred,
            rounding_precision=tp / pred if pred else None,
            rounding_recall=tp / row["changed"] if row["changed"] else None,
        )
    return star


def _master_pass(
    names, mask, base_ck, base_names, master_ck, master_names, dtype_of, atol, total_hist, rows, advance
) -> dict:
    """fp32 changed fraction, what rounding to the stored dtype discarded, and |Δ| per global |w| decile."""
    decile_of_key = quantile_group_of_bins(total_hist, DECILES).to(torch.uint8)  # 1 byte per entry below
    dhist = torch.zeros(DECILES * MAG_KEYS, dtype=torch.int64)
    nz_by_dec = torch.zeros(DECILES, dtype=torch.int64)
    all_by_dec = torch.zeros(DECILES, dtype=torch.int64)
    totals = {"numel": 0, "fp32_changed": 0, "fp32_changed_atol": 0, "lost": 0, "mask_disagree": 0}
    by_name = {r["name"]: r for r in rows}
    for n in names:
        w = base_ck.get(base_names[n])
        master = master_ck.get(master_names[n])
        dtype = dtype_of(n, w.dtype)
        delta = master.to(torch.float32, copy=True)
        delta -= w.float()
        nz = (delta != 0).reshape(-1)  # NaN != 0 too: a NaN update counts as changed
        survived = changed_bitwise(w, master, dtype).reshape(-1)
        m = mask.get(n).reshape(-1)
        dec = decile_of_key[magnitude_key(w).reshape(-1).int()]
        all_by_dec += torch.bincount(dec, minlength=DECILES)
        nz_by_dec += torch.bincount(dec[nz], minlength=DECILES)
        dkey = magnitude_key(delta).reshape(-1)
        dhist += torch.bincount(dec[nz].int() * MAG_KEYS + dkey[nz], minlength=DECILES * MAG_KEYS)
        n_nz = count(nz)
        lost = count(nz & ~survived)
        totals["numel"] += nz.numel()
        totals["fp32_changed"] += n_nz
        totals["fp32_changed_atol"] += count(delta.abs() > atol)
        totals["lost"] += lost
        totals["mask_disagree"] += count(survived != m)
        r = by_name[n]
        r.update(fp32_changed=n_nz, fp32_changed_frac=n_nz / nz.numel() if nz.numel() else None, lost_to_rounding=lost)
        del w, master, delta, nz, survived, m, dec, dkey
        advance(n)
    medians = [histogram_median_key(dhist[d * MAG_KEYS : (d + 1) * MAG_KEYS]) for d in range(DECILES)]
    numel = totals["numel"]
    return {
        "fp32_changed_frac": totals["fp32_changed"] / numel if numel else None,
        "fp32_changed_atol_frac": totals["fp32_changed_atol"] / numel if numel else None,
        "atol": atol,
        "lost_to_rounding_frac": totals["lost"] / totals["fp32_changed"] if totals["fp32_changed"] else None,
        "mask_disagreement": totals["mask_disagree"],
        "fp32_changed_frac_by_decile": [
            int(c) / int(a) if int(a) else None for c, a in zip(nz_by_dec.tolist(), all_by_dec.tolist())
        ],
        "median_abs_update_by_decile": medians,
        "median_method": "median of nonzero |Δ| per global |w| decile, |Δ| binned to 8 significant bits "
        "(relative error < 2^-7); a tied |w| value is assigned whole to one decile",
    }


def _plots(out: Path, result: dict, hist: _Hist) -> None:
    # matplotlib is slow to import: only when plotting
    from rldelta.plots.explain import decile_plot, overlap_null_plot, rank_null_plot, roc_plot

    r = result["rounding"]
    atomic_write_bytes(
        out / PLOT_DECILES,
        decile_plot(r["changed_frac_by_decile"], {m: v["changed_frac_by_decile"] for m, v in r["by_module"].items()}),
    )
    fpr, tpr = roc_curve_from_counts(hist.changed.flip(0), (hist.total - hist.changed).flip(0))
    atomic_write_bytes(out / PLOT_ROC, roc_plot(fpr, tpr, r["auc"]))
    mo = result["magnitude_matched_overlap"]
    if mo is not None:
        atomic_write_bytes(
            out / PLOT_OVERLAP,
            overlap_null_plot(mo["observed"], mo["random"], mo["magnitude_matched"], (mo["a"], mo["b"])),
        )
    if result["rank_null"]:
        mods = list(result["rank_null"])
        atomic_write_bytes(
            out / PLOT_RANK,
            rank_null_plot(
                mods,
                [result["rank_null"][m]["observed_rank_frac"] for m in mods],
                [result["rank_null"][m]["null_rank_frac"] for m in mods],
            ),
        )


__all__ = ["run_explain", "ExplainError", "EXPLAIN_TABLE"]
