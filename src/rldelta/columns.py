"""The column vocabulary: every column name rldelta writes, the unit it is in, and how a value of it is shown.

One table (`COLUMNS`) maps a column name to its `Unit`. The engines build their pyarrow schemas with
`unit_schema()`, so each Parquet field carries its unit in its metadata (`{"unit": ...}`) and the formatting follows
the column into any file. The HTML report and the terminal tables show a value in its column's unit (`show`),
looking the unit up by name (`unit_of`), or in a field's metadata (`unit_of_field`) when they hold a schema.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyarrow as pa

MISSING = "—"  # how a missing value (None) is shown, in the terminal and in the HTML report alike


def is_missing(value) -> bool:
    """A number that was not measured: None, or NaN (what pandas and Parquet turn a None into)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


# How a value is shown (the `data-fmt` of a number in the HTML report): pct (percent, 2 decimals), num and acc
# (3 decimals), int (thousands separators), text (str()).
KINDS = ("pct", "num", "acc", "int", "text")
UNIT_KEY = "unit"  # the key of a Parquet field's metadata that names its unit


def fmt(value, kind: str) -> str:
    """The text a value is shown as, in one of `KINDS`; None is `MISSING`."""
    if value is None:
        return MISSING
    if kind == "pct":
        return f"{100 * float(value):.2f}%"
    if kind in ("num", "acc"):
        return f"{float(value):.3f}"
    if kind == "int":
        return f"{int(value):,}"
    return str(value)


@dataclass(frozen=True)
class Unit:
    """What a column's values measure (`name`, stored in Parquet metadata) and how they are shown (`kind`)."""

    name: str
    kind: str
    doc: str

    def kind_for(self, value) -> str:
        """The kind `value` is shown as: pct and num units always; otherwise an int as int, anything else as text."""
        if self.kind in ("pct", "num"):
            return self.kind
        # an integer column holding a float (a NaN made pandas widen it) or a bool is shown as it is, not as an int
        return "int" if isinstance(value, int) and not isinstance(value, bool) else "text"

    def show(self, value) -> str:
        return fmt(value, self.kind_for(value))


FRACTION = Unit("fraction", "pct", "a share of a whole, 0 to 1, shown as a percentage")
RANK_FRACTION = Unit("rank_fraction", "num", "numerical rank / min(rows, cols), 0 to 1")
ACCURACY = Unit("accuracy", "num", "share of problems solved, 0 to 1, shown as a decimal like published accuracies")
NATS = Unit("nats", "num", "a log-probability, or a difference or entropy of them, in nats")
NATS_PER_STEP = Unit("nats_per_step", "num", "a change of a log-probability per training step, in nats")
NUMBER = Unit("number", "num", "a dimensionless real number: AUC, precision, cosine, ratio, Hoyer, reward, norm")
COUNT = Unit("count", "int", "a number of entries, tensors, tokens or problems")
INDEX = Unit("index", "int", "a position: layer, step, seed, level, decile, neuron")
LABEL = Unit("label", "text", "a name: run, tensor, module, model, format, verdict text")
FLAG = Unit("flag", "text", "true or false")
SHAPE = Unit("shape", "text", "a tensor's shape, a list of sizes")
FRACTIONS = Unit("fractions", "text", "a list of fractions, one per bin")
BYTES = Unit("bytes", "int", "a size in bytes")
UNITS = (FRACTION, RANK_FRACTION, ACCURACY, NATS, NATS_PER_STEP, NUMBER, COUNT, INDEX, LABEL, FLAG, SHAPE)
UNITS += (FRACTIONS, BYTES)
_BY_NAME = {u.name: u for u in UNITS}

_NAMES: dict[Unit, tuple[str, ...]] = {
    FRACTION: (
        "law_frac",  # the update-sparsity law's prediction of a changed fraction (study/law.py)
        "law_lo",
        "law_hi",
        "law_abs_err",
        "law_base_frac",
        "law_step_frac",
        "step_median_rel_err",
        "step_share_within_25pct",
        # steering toward a format (probes/steering_sweep.py)
        "share_low",
        "share_high",
        "baseline_share",
        "share_of_rl_flops",
        "epoch_fraction",  # the Echo Chamber claims (study/selection.py)
        "epoch_covered",
        "changed_frac",
        "changed_atol_frac",
        "fp32_changed_frac",
        "fp32_changed_atol_frac",
        "lost_to_rounding_frac",
        "row_coverage",
        "col_coverage",
        "seed_overlap",
        "seed_overlap_random",
        "seed_overlap_magnitude_matched",
        "overlap",
        "random_overlap",
        "matched_overlap",
        "magnitude_matched_overlap",
        "jaccard",
        "masked_frac",
        "full_covered_by_retrain",
        "retrain_inside_full",
        "still_changed_at_end",
        "share_of_final_set",
        "format_rate",
        "overlap_with_other_seed",
        "overlap_with_all",
        "inside_all",
        "correct_share",
        "share",
        "fixed_at_frac_of_training",
        "near_zero_frac",
        "top1_mass_share",
        "activation_freq",
        "changed_step_frac",
        "changed_base_frac",
        "overlap_prev_step",
        "overlap_union",
        "union_frac",
        "mean_changed_step_frac",
        "mean_overlap_prev_step",
        "published_sparsity",
        "published_sparsity_alt",
        "published_sparsity_1e8",
        "published_sparsity_1e7",
        "published_sparsity_1e6",
        "published_range_lo",
        "published_range_hi",
        "predicted_sparsity",
        "predicted_lo",
        "predicted_hi",
        "sparsity_bitwise",
        "sparsity_atol",
        "lowest_decile_share",
        "random_lo",
        "random_hi",
        "matched_lo",
        "matched_hi",
        "share_lo",
        "share_hi",
        "expert_changed_frac_min",
        "expert_changed_frac_median",
        "expert_changed_frac_max",
        "top10_share",
        "router_changed_frac",
        "shared_expert_changed_frac",
    ),
    RANK_FRACTION: (
        "router_mean_rank_frac",
        "rank_frac",
        "mean_rank_frac",
        "weighted_mean_rank_frac",
        "fp32_mean_rank_frac",
        "observed_rank_frac",
        "null_rank_frac",
        "null_rank_frac_std",
        "published_rank",
    ),
    ACCURACY: (
        "baseline_accuracy",
        "accuracy",
        "base_accuracy",
        "tuned_accuracy",
        "accuracy_full",
        "accuracy_retrain",
        "train_accuracy",
        "sampled_accuracy",
        "accuracy_lo",
        "accuracy_hi",
    ),
    NATS: (
        "final_loss",  # a mixture model's last logged pretraining loss
        "logp_correct",
        "logp_wrong",
        "token_logp_correct",
        "token_logp_wrong",
        "amplification",
        "suppression",
        "token_amplification",
        "token_suppression",
        "probe_entropy",
        "train_entropy",
    ),
    NATS_PER_STEP: ("amplification_rate", "suppression_rate"),
    NUMBER: (
        "train_minutes",
        "flops",
        "wall_seconds",
        "auc",
        "auc_small_weights",
        "rounding_precision",
        "rounding_recall",
        "effective_rank",
        "delta_fro",
        "base_fro",
        "rel_norm",
        "recovery",
        "delta_cosine",
        "delta_norm_ratio",
        "reward_mean",
        "mass_correct",
        "mass_wrong",
        "hoyer",
        "learning_rate",
        "lr",
        "lr_spearman",
        "mean_abs_w",
        "beta",
        "p_value",
        # a headline number's 95% interval: the report shows it in the row's own format
        "lo",
        "hi",
    ),
    COUNT: (
        "parameters",
        "step_cap",
        "forward_tokens",
        "backward_tokens",
        "completions",
        "numel",
        "changed",
        "changed_atol",
        "nonfinite",
        "added",
        "cast_changed",
        "tensors",
        "changed_experts",
        "top_experts",
        "rank",
        "max_rank",
        "rounding_predicted",
        "other_changed",
        "fp32_changed",
        "lost_to_rounding",
        "size_a",
        "size_b",
        "intersection",
        "changed_full",
        "changed_retrain",
        "tokens",
        "count",
        "n",
        "steps",
        "changed_step",
        "changed_base",
        "new_in_union",
        "final_set",
        "experts",
    ),
    INDEX: (
        "layer",
        "step",
        "seed",
        "level",
        "decile",
        "neuron",
        "from_step",
        "to_step",
        "fixed_step",
        "final_step",
        "saturation_step",
        "expert",
    ),
    LABEL: (
        "method",
        "name",
        "rank_method",
        "tensor",
        "module",
        "dtype",
        "dtype_base",
        "dtype_tuned",
        "a",
        "b",
        "model",
        "site",
        "format",
        "run",
        "kind",
        "algo",
        "precision",
        "run_dir",
        "other_seed",
        "target",
        "mask_of",
        "control",
        "full",
        "retrain",
        "dominant",
        "probe",
        "verdict",
        "claim",
        "published",
        "pair",
        "base",
        "tuned",
        "status",
        "algorithm",
        "published_in",
        "sparsity_verdict",
        "rank_verdict",
        "sparsity_alt_verdict",
        "sparsity_1e8_verdict",
        "range_verdict",
        "published_sparsity_source",
        "published_sparsity_alt_source",
        "published_tolerance_source",
        "published_range_source",
        "published_rank_source",
        "predicted_note",
        "hyper_source",
        "note",
        "key",
        "text",
        "setting",
        "label",
        "interval",
        "comparison",
        "null",
        "more_data",
        "explanation",
        "effect",
        "evidence_for",
        "evidence_against",
        "arm",
        "sft_style",
        "role",
        "expert_set",
    ),
    FLAG: ("beyond_training", "held_out", "law_within_target", "rl_winner"),
    SHAPE: ("shape",),
    FRACTIONS: ("changed_frac_by_decile",),
    BYTES: ("bytes_index", "bytes_bitmask", "bytes_dense"),
}
COLUMNS: dict[str, Unit] = {name: unit for unit, names in _NAMES.items() for name in names}
# Columns named by a pattern: pass@k for every k the probe sampled; <format>_corpus, <format>_sampled and
# <format>_accuracy of the mixture models (study/selection.py).
PREFIXES: dict[str, Unit] = {"pass@": ACCURACY}
SUFFIXES: dict[str, Unit] = {"_corpus": FRACTION, "_sampled": FRACTION, "_accuracy": ACCURACY}


def unit_of(name: str) -> Unit:
    """The unit of the column `name`; a column outside the vocabulary (the headline's `value`, whose format is
    given row by row) is a `LABEL`, shown as an int when it holds one and as text otherwise."""
    unit = COLUMNS.get(name)
    if unit is not None:
        return unit
    by_suffix = (u for p, u in SUFFIXES.items() if name.endswith(p))
    return next((u for p, u in PREFIXES.items() if name.startswith(p)), next(by_suffix, LABEL))


def kind_of(name: str, value) -> str:
    """How `value`, a value of column `name`, is shown (one of `KINDS`)."""
    return unit_of(name).kind_for(value)


def show(name: str, value) -> str:
    """`value`, a value of column `name`, as text in its column's unit."""
    return unit_of(name).show(value)


def unit_field(name: str, type_: pa.DataType) -> pa.Field:
    """A pyarrow field whose metadata names the column's unit; a name outside the vocabulary is an error."""
    if name not in COLUMNS:
        raise KeyError(f"column {name!r} has no unit in rldelta.columns.COLUMNS")
    return pa.field(name, type_, metadata={UNIT_KEY: COLUMNS[name].name})


def unit_schema(columns: list[tuple[str, pa.DataType]]) -> pa.Schema:
    """A pyarrow schema of (name, type) pairs, each field carrying its unit (see `unit_field`)."""
    return pa.schema([unit_field(n, t) for n, t in columns])


def unit_of_field(f: pa.Field) -> Unit:
    """The unit a Parquet field carries in its metadata; by its name when it carries none."""
    meta = f.metadata or {}
    unit = meta.get(UNIT_KEY.encode())
    return _BY_NAME[unit.decode()] if unit is not None else unit_of(f.name)


__all__ = [
    "MISSING",
    "is_missing",
    "KINDS",
    "Unit",
    "UNITS",
    "COLUMNS",
    "fmt",
    "unit_of",
    "kind_of",
    "show",
    "unit_field",
    "unit_schema",
    "unit_of_field",
]
