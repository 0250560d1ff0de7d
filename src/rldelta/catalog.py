"""The catalog of `rldelta reproduce`: published pairs with their figures, each with its table, read and checked.

A catalog is TOML (the shipped one, `rldelta/catalogs/arxiv-2505.11711.toml`, documents the keys in its header).
Every problem is one line naming the file and the key; a figure the catalog does not have is NaN, never a guess.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from rldelta.runtime.errors import RldeltaError

CATALOG_DIR = Path(__file__).with_name("catalogs")
DEFAULT_CATALOG = CATALOG_DIR / "arxiv-2505.11711.toml"
_NAME = re.compile(r"^[\w.-]+$")


class ReproduceError(RldeltaError):
    """A catalog that cannot be read, or options that do not fit it; the message names the file and key."""


NAN = math.nan


@dataclass(frozen=True)
class PublishedPair:
    """One published pair; every figure a fraction (NaN where the catalog has none), each with its table."""

    name: str
    base: str
    tuned: str
    algorithm: str
    sparsity: float  # |Δ| <= 1e-5
    rank: float  # mean rank fraction
    published_in: str
    sparsity_source: str = ""
    sparsity_alt: float = NAN  # a second |Δ| <= 1e-5 figure from another table (shown, not decided between)
    sparsity_alt_source: str = ""
    sparsity_1e8: float = NAN  # the closest published figure to bitwise
    sparsity_1e7: float = NAN
    sparsity_1e6: float = NAN
    tolerance_source: str = ""
    sparsity_range: tuple[float, float] = (NAN, NAN)  # a published range only
    range_source: str = ""
    rank_source: str = ""
    lr: float | None = None  # only where a model card or paper states it (hyper_source), never guessed
    steps: int | None = None
    hyper_source: str = ""
    note: str = ""


@dataclass(frozen=True)
class Gap:
    """A published figure with no pair to diff: the paper does not name its checkpoints."""

    name: str
    table: str
    figures: str
    reason: str


@dataclass(frozen=True)
class Catalog:
    path: Path
    title: str
    source: str
    match_points: float
    pairs: list[PublishedPair]
    rank_range_pct: list[float] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    hyperparameters: str = ""


def _pct(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ReproduceError(f"{where} must be a number (nan for none), not {value!r}")
    if not (math.isnan(value) or 0 <= value <= 100):
        raise ReproduceError(f"{where} must be a percentage in [0, 100] or nan, not {value}")
    return float(value) / 100


def load_catalog(path: str | os.PathLike | None = None) -> Catalog:
    """Read and check a catalog (the shipped one by default); every problem is one line naming file and key."""
    path = Path(path) if path is not None else DEFAULT_CATALOG
    try:
        data = tomllib.loads(path.read_text())
    except OSError as e:
        raise ReproduceError(f"{path}: cannot read the catalog ({e.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ReproduceError(f"{path}: not valid TOML ({e})") from None
    pairs, seen = [], set()
    raw_pairs = data.get("pair")
    if not isinstance(raw_pairs, list) or not raw_pairs:
        raise ReproduceError(f"{path}: no [[pair]] entries")
    for i, p in enumerate(raw_pairs):
        pair = _pair(p, f"{path}: pair {i + 1}", str(data.get("source", "")))
        if pair.name in seen:
            raise ReproduceError(f"{path}: pair {i + 1}: name {pair.name!r} must be unique")
        seen.add(pair.name)
        pairs.append(pair)
    points = data.get("match_points", 1.0)
    if isinstance(points, bool) or not isinstance(points, int | float) or not points >= 0:
        raise ReproduceError(f"{path}: match_points must be a number >= 0, not {points!r}")
    return Catalog(
        path=path,
        title=str(data.get("title", path.stem)),
        source=str(data.get("source", "")),
        match_points=float(points),
        pairs=pairs,
        rank_range_pct=list(data.get("rank_range_pct", [])),
        gaps=[_gap(g, f"{path}: gap {i + 1}") for i, g in enumerate(data.get("gap", []))],
        hyperparameters=str(data.get("hyperparameters", "")),
    )


_TEXT_KEYS = ("algorithm", "published_in", "sparsity_source", "sparsity_alt_source", "tolerance_source")
_TEXT_KEYS += ("range_source", "rank_source", "hyper_source", "note")
_PCT_KEYS = ("sparsity_pct", "sparsity_alt_pct", "sparsity_1e8_pct", "sparsity_1e7_pct", "sparsity_1e6_pct", "rank_pct")
_PAIR_KEYS = {"name", "base", "tuned", "sparsity_range_pct", "lr", "steps", *_TEXT_KEYS, *_PCT_KEYS}


def _pair(p: dict, where: str, source: str) -> PublishedPair:
    """One [[pair]] table checked: required keys, known keys only, percentages, hyperparameters with a source."""
    missing = [k for k in ("name", "base", "tuned") if not isinstance(p.get(k), str) or not p.get(k)]
    if missing:
        raise ReproduceError(f"{where}: missing key {missing[0]!r} (a non-empty string)")
    name = p["name"]
    if not _NAME.match(name):
        raise ReproduceError(f"{where}: name {name!r} must be unique and only letters, digits, '.', '_', '-'")
    where = f"{where} ({name})"
    unknown = set(p) - _PAIR_KEYS
    if unknown:
        raise ReproduceError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    pct = {k: _pct(p.get(k, NAN), f"{where}: {k}") for k in _PCT_KEYS}
    rng = p.get("sparsity_range_pct", [NAN, NAN])
    if not isinstance(rng, list) or len(rng) != 2:
        raise ReproduceError(f"{where}: sparsity_range_pct must be [lo, hi], not {rng!r}")
    lo, hi = (_pct(v, f"{where}: sparsity_range_pct") for v in rng)
    lr, steps = p.get("lr"), p.get("steps")
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, int | float) or not lr > 0):
        raise ReproduceError(f"{where}: lr must be a number > 0, not {lr!r}")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ReproduceError(f"{where}: steps must be an integer >= 1, not {steps!r}")
    if (lr is not None or steps is not None) and not p.get("hyper_source"):
        raise ReproduceError(f"{where}: lr/steps need hyper_source (the model card or paper that states them)")
    text = {k: str(p.get(k, "")) for k in _TEXT_KEYS}
    return PublishedPair(
        name=name,
        base=p["base"],
        tuned=p["tuned"],
        algorithm=text["algorithm"],
        sparsity=pct["sparsity_pct"],
        rank=pct["rank_pct"],
        published_in=text["published_in"] or source,
        sparsity_source=text["sparsity_source"],
        sparsity_alt=pct["sparsity_alt_pct"],
        sparsity_alt_source=text["sparsity_alt_source"],
        sparsity_1e8=pct["sparsity_1e8_pct"],
        sparsity_1e7=pct["sparsity_1e7_pct"],
        sparsity_1e6=pct["sparsity_1e6_pct"],
        tolerance_source=text["tolerance_source"],
        sparsity_range=(lo, hi),
        range_source=text["range_source"],
        rank_source=text["rank_source"],
        lr=None if lr is None else float(lr),
        steps=steps,
        hyper_source=text["hyper_source"],
        note=text["note"],
    )


def _gap(g: dict, where: str) -> Gap:
    missing = [k for k in ("name", "table", "figures", "reason") if not isinstance(g.get(k), str) or not g.get(k)]
    if missing:
        raise ReproduceError(f"{where}: missing key {missing[0]!r} (a non-empty string)")
    return Gap(g["name"], g["table"], g["figures"], g["reason"])


def published_figures(pair: PublishedPair) -> str:
    """The pair's published figures with their tables, one line: what `--dry-run` and the page list."""

    def pct(v: float) -> str:
        return f"{100 * v:.4g}%"

    parts = []
    if not math.isnan(pair.sparsity):
        parts.append(f"|Δ|≤1e-5 {pct(pair.sparsity)} ({pair.sparsity_source or pair.published_in})")
    if not math.isnan(pair.sparsity_alt):
        parts.append(f"|Δ|≤1e-5 {pct(pair.sparsity_alt)} ({pair.sparsity_alt_source or pair.published_in})")
    for tol, v in (("1e-8", pair.sparsity_1e8), ("1e-7", pair.sparsity_1e7), ("1e-6", pair.sparsity_1e6)):
        if not math.isnan(v):
            parts.append(f"|Δ|≤{tol} {pct(v)} ({pair.tolerance_source or pair.published_in})")
    lo, hi = pair.sparsity_range
    if not math.isnan(lo):
        parts.append(f"range {pct(lo)}–{pct(hi)} ({pair.range_source or pair.published_in})")
    if not math.isnan(pair.rank):
        parts.append(f"rank {pct(pair.rank)} ({pair.rank_source or pair.published_in})")
    return "; ".join(parts) or "no published figure in this catalog"


__all__ = ["DEFAULT_CATALOG", "Catalog", "Gap", "PublishedPair", "ReproduceError", "load_catalog", "published_figures"]
