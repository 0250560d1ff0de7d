"""The Echo Chamber verdicts (metrics/selection.py) of RL runs from mixture models: per run, (a) whether one format
passed 90% and held it within the first epoch and (b) whether the winner was the most frequent or the most
accurate pretraining format; over the runs of each algorithm, (c) whether the winner changes with size.

A run's input is its format table (`rldelta probe formats`: probes/formats/formats.parquet, made here when it is
missing), its config (prompts per step, train size: what an epoch is) and its base model's mixture record (corpus
shares, per-format accuracy after pretraining). `claims` is the pure core; `run_claims` reads the run folders and
writes OUT/claims.json.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rldelta.metrics.selection import UNDECIDED, dominance
from rldelta.metrics.selection_winner import WinnerOrigin, end_winner, size_change, winner_origin_from_record
from rldelta.probes import ProbeError, read_run
from rldelta.runtime.atomic import atomic_write_json

CLAIMS_FILE = "claims.json"
END_WINDOW = 0.1  # the winner is read over the last 10% of the recorded steps, as `probe formats` reads it


@dataclass(frozen=True)
class RunTable:
    """One RL run as the claims read it."""

    label: str
    size: str
    rows: Sequence[Mapping[str, Any]]  # format_table rows
    prompts_per_step: int
    train_size: int
    record: Mapping[str, Any] | None  # the base model's mixture record; None: claim (b) cannot be read
    algo: str = ""  # claim (c) compares sizes within one algorithm: two algorithms are not two seeds


def claims(runs: Sequence[RunTable], *, threshold: float = 0.9) -> dict[str, Any]:
    """Claims (a) and (b) per run and (c) over each algorithm's runs; every verdict as its record (outcome,
    evidence, text)."""
    out = []
    winners = []
    for r in runs:
        n_steps = len({int(x["step"]) for x in r.rows})
        dom = dominance(r.rows, prompts_per_step=r.prompts_per_step, train_size=r.train_size, threshold=threshold)
        end = end_winner(r.rows, max(1, math.ceil(END_WINDOW * n_steps)))
        decided = end.format if end.decided else None
        if r.record is None:
            origin = WinnerOrigin(UNDECIDED, decided, None, None, {}, {}, {}, "undecided: no mixture record")
        else:
            origin = winner_origin_from_record(decided, r.record)
        winners.append((r.algo, r.size, decided))
        out.append(
            {
                "run": r.label,
                "size": r.size,
                "dominance": dom.as_dict(),
                "end_winner": end.as_dict(),
                "origin": origin.as_dict(),
            }
        )
    sizes = []
    for algo in dict.fromkeys(a for a, _, _ in winners):
        change = size_change([(size, win) for a, size, win in winners if a == algo])
        sizes.append({"algo": algo, **change.as_dict()})
    named = len(sizes) > 1 or any(s["algo"] for s in sizes)
    return {
        "threshold": threshold,
        "runs": out,
        "sizes": sizes,
        "verdicts": [f"{r['run']}: {r['dominance']['text']}; {r['origin']['text']}" for r in out]
        + [f"{s['algo']}: {s['text']}" if named else s["text"] for s in sizes],
    }


def _run_table(run_dir: Path, threshold: float) -> RunTable:
    import pandas as pd

    from rldelta.probes.formats import OUT_DIR, run_formats
    from rldelta.runtime.files import FORMATS_TABLE
    from rldelta.train.corpus import MixtureError
    from rldelta.train.mixture import read_mixture

    config = read_run(run_dir)["config"]
    table = run_dir / OUT_DIR / FORMATS_TABLE
    if not table.is_file():
        run_formats(run_dir, threshold=threshold)
    rows = pd.read_parquet(table).to_dict("records")
    try:
        record = read_mixture(config["model"]) if config.get("model") else None
    except MixtureError:
        record = None
    try:
        pps, train_size = int(config["prompts_per_step"]), int(config["train_size"])
    except (KeyError, TypeError, ValueError):
        raise ProbeError(f"{run_dir}/run.json: config lacks prompts_per_step or train_size") from None
    size = str(record.get("size")) if record else str(config.get("model"))
    return RunTable(run_dir.name, size, rows, pps, train_size, record, str(config.get("algo", "")))


def run_claims(
    run_dirs: Sequence[str | os.PathLike], out: str | os.PathLike, *, threshold: float = 0.9
) -> dict[str, Any]:
    """`claims` of RL run folders (each probed with `probe formats` first when it has not been); writes
    OUT/claims.json and returns it."""
    if not 0.0 < threshold <= 1.0:
        raise ProbeError(f"threshold must lie in (0, 1], got {threshold}")
    result = claims([_run_table(Path(d), threshold) for d in run_dirs], threshold=threshold)
    result["inputs"] = [str(d) for d in run_dirs]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / CLAIMS_FILE, result)
    return result
