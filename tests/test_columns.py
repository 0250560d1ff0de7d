"""The column vocabulary: every engine column has a unit, each unit shows a value as written here by hand, and the
unit travels with the column through a Parquet file."""

from __future__ import annotations

import math

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rldelta.columns import (
    COLUMNS,
    MISSING,
    UNITS,
    fmt,
    kind_of,
    show,
    unit_field,
    unit_of,
    unit_of_field,
    unit_schema,
)
from rldelta.diff import TENSORS_SCHEMA
from rldelta.explain import EXPLAIN_SCHEMA
from rldelta.overlap import OVERLAP_SCHEMA
from rldelta.probes.activations import ACTIVATIONS_SCHEMA, NEURONS_SCHEMA
from rldelta.probes.formats import _SCHEMA as FORMATS_SCHEMA
from rldelta.reproduce import BY_MODULE_SCHEMA, REPRODUCE_SCHEMA
from rldelta.runtime.atomic import atomic_write_parquet
from rldelta.train.step_files import STEPS_SCHEMA

ENGINE_SCHEMAS = {
    "diff": TENSORS_SCHEMA,
    "explain": EXPLAIN_SCHEMA,
    "overlap": OVERLAP_SCHEMA,
    "activations": ACTIVATIONS_SCHEMA,
    "neurons": NEURONS_SCHEMA,
    "formats": FORMATS_SCHEMA,
    "steps": STEPS_SCHEMA,
    "reproduce": REPRODUCE_SCHEMA,
    "reproduce_by_module": BY_MODULE_SCHEMA,
}


@pytest.mark.parametrize("table", sorted(ENGINE_SCHEMAS))
def test_every_engine_column_carries_its_unit(table):
    for f in ENGINE_SCHEMAS[table]:
        assert f.name in COLUMNS, f"{table}.{f.name} has no unit"
        assert f.metadata == {b"unit": COLUMNS[f.name].name.encode()}
        assert unit_of_field(f) is COLUMNS[f.name]


# One value per unit, and the text it must be shown as (written by hand, not computed).
SHOWN = {
    "fraction": ("changed_frac", 0.123456, "12.35%"),
    "rank_fraction": ("rank_frac", 0.98765, "0.988"),
    "accuracy": ("accuracy", 0.5, "0.500"),
    "nats": ("logp_correct", -12.34567, "-12.346"),
    "nats_per_step": ("amplification_rate", 0.01234, "0.012"),
    "number": ("delta_cosine", 0.70710678, "0.707"),
    "count": ("numel", 1234567, "1,234,567"),
    "index": ("step", 1000, "1,000"),
    "label": ("run", "grpo-s0-fp32", "grpo-s0-fp32"),
    "flag": ("beyond_training", True, "True"),
    "shape": ("shape", [3, 4], "[3, 4]"),
    "fractions": ("changed_frac_by_decile", [0.5, 0.25], "[0.5, 0.25]"),
    "bytes": ("bytes_dense", 268435456, "268,435,456"),
}


def test_each_unit_shows_a_value_as_written():
    assert set(SHOWN) == {u.name for u in UNITS}
    for unit, (col, value, want) in SHOWN.items():
        assert unit_of(col).name == unit
        assert show(col, value) == want, (unit, col)


def test_missing_values_and_names_outside_the_vocabulary():
    assert MISSING == "—"
    assert show("changed_frac", None) == MISSING and show("numel", None) == MISSING and show("run", None) == MISSING
    assert fmt(None, "acc") == MISSING
    # pass@k follows a pattern; a name outside the vocabulary shows an int as an int and anything else as text
    assert kind_of("pass@8", 0.5) == "num" and show("pass@8", 0.25) == "0.250"
    assert kind_of("value", 3) == "int" and show("value", 12345) == "12,345" and show("value", 0.5) == "0.5"
    # an integer column widened to float (a NaN made pandas do it) is shown as it is, as is a bool
    assert kind_of("layer", 3.0) == "text" and show("layer", 3.0) == "3.0" and kind_of("count", True) == "text"
    assert fmt(0.5, "acc") == "0.500" and fmt(7, "text") == "7"


def test_unit_field_refuses_a_name_without_a_unit():
    with pytest.raises(KeyError, match="no unit"):
        unit_field("colour", pa.string())


def test_units_round_trip_through_parquet(tmp_path):
    schema = unit_schema([("run", pa.string()), ("numel", pa.int64()), ("changed_frac", pa.float64())])
    rows = [{"run": "a", "numel": 10, "changed_frac": 0.5}, {"run": "b", "numel": 4, "changed_frac": math.nan}]
    atomic_write_parquet(rows, tmp_path / "t.parquet", schema)
    back = pq.read_schema(tmp_path / "t.parquet")
    assert {f.name: unit_of_field(f).name for f in back} == {
        "run": "label",
        "numel": "count",
        "changed_frac": "fraction",
    }
    # a DataFrame written with the schema keeps the units too
    atomic_write_parquet(pd.DataFrame(rows), tmp_path / "d.parquet", schema)
    assert unit_of_field(pq.read_schema(tmp_path / "d.parquet").field("changed_frac")).name == "fraction"
    # a field written without metadata falls back to its name
    assert unit_of_field(pa.field("jaccard", pa.float64())).name == "fraction"
