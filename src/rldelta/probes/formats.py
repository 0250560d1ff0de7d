"""`rldelta probe formats RUN`: which output format an RL run amplified, when, and whether it was the most frequent
or the most accurate one before RL.

Reads RUN/run.json (its "config" is the TrainConfig) and RUN/completions.parquet (one row per sampled completion:
step, prompt, answer, completion, and the reward columns "correctness" / "format" when they were used). Every
completion is classified with train.mixture.classify_format. When the base model folder holds the mixture record
(train/mixture.py), its corpus shares and its per-format accuracy after pretraining are the "before" side.

Writes OUT (default RUN/probes/formats/): formats.parquet (step, format, count, share, accuracy), formats.json
(the summary, with a one-line verdict) and formats.png.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from rldelta.columns import unit_schema
from rldelta.metrics.formats import (
    accuracy_at,
    argmax,
    dominance_step,
    end_shares,
    epoch_fraction,
    format_table,
    shares_by_step,
    winner,
)
from rldelta.probes import ProbeError, read_run
from rldelta.runtime.atomic import atomic_write_bytes, atomic_write_json, atomic_write_parquet
from rldelta.runtime.files import COMPLETIONS_FILE, FORMATS_JSON, FORMATS_TABLE
from rldelta.train.answer_formats import FORMAT_NAMES, OTHER, classify_format
from rldelta.train.corpus import MixtureError
from rldelta.train.mixture import read_mixture

OUT_DIR = Path("probes") / "formats"  # under RUN, unless the caller names another folder
PLOT_FILE = "formats.png"
END_WINDOW = 0.1  # the winner is decided on the mean share over the last 10% of the recorded steps
_SCHEMA = unit_schema(
    [
        ("step", pa.int64()),
        ("format", pa.string()),
        ("count", pa.int64()),
        ("share", pa.float64()),
        ("accuracy", pa.float64()),
    ]
)


def _read_run(run_dir: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    config = read_run(run_dir)["config"]
    table = run_dir / COMPLETIONS_FILE
    if not table.is_file():
        raise ProbeError(f"{table}: missing (did {run_dir} train with an online algorithm that samples?)")
    try:
        df = pd.read_parquet(table)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise ProbeError(f"{table}: unreadable ({str(e).splitlines()[0]})") from None
    missing = [c for c in ("step", "completion") if c not in df.columns]
    if missing:
        raise ProbeError(f"{table}: missing column(s) {', '.join(missing)}")
    if df.empty:
        raise ProbeError(f"{table}: no completions")
    return config, df


def _correct(config: dict[str, Any], df: pd.DataFrame, table: Path) -> list[float]:
    """The recorded correctness reward; where it is absent, the task's correctness recomputed from the answer."""
    recorded = df["correctness"] if "correctness" in df.columns else pd.Series([None] * len(df), index=df.index)
    if recorded.notna().all():
        return [float(v) for v in recorded]
    if "answer" not in df.columns:
        raise ProbeError(f"{table}: no correctness column and no answer column to score against")
    from rldelta.train.tasks import TaskError, get_task

    try:
        task = get_task(config.get("task", "mixarith"))
        return [
            float(v) if pd.notna(v) else task.correctness_reward(str(c), str(a))
            for v, c, a in zip(recorded, df["completion"], df["answer"])
        ]
    except TaskError as e:
        raise ProbeError(f"{table}: cannot score completions ({e})") from None


def _pretraining(model: str | None) -> dict[str, Any] | None:
    """Corpus shares and post-pretraining per-format behaviour from the base model's mixture record, if any."""
    if not model:
        return None
    try:
        record = read_mixture(model)
    except MixtureError:
        return None
    if record is None:
        return None
    formats = record.get("eval", {}).get("formats", {})
    return {
        "size": record.get("size"),
        "parameters": record.get("parameters"),
        "corpus_shares": record.get("corpus", {}).get("shares", {}),
        "noise": record.get("noise"),
        "sample_shares": {k: v.get("share") for k, v in formats.items()},
        "accuracy": {k: v.get("accuracy") for k, v in formats.items()},
        "greedy_accuracy": record.get("eval", {}).get("greedy_accuracy"),
    }


def _only_formats(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if k in FORMAT_NAMES}


def _is(name: str | None, other: str | None) -> bool | None:
    return None if name is None or other is None else name == other


def _verdict(s: dict[str, Any]) -> str:
    pre = s["pretraining"] or {}
    win, thr = s["winner"], s["threshold"]
    name = "no trained format (other)" if win == OTHER else win
    span = f"at step {s['last_step']}" if s["end_window_steps"] == 1 else f"over the last {s['end_window_steps']} steps"
    text = f"{name} wins ({s['winner_share_end']:.2f} of the completions {span})"
    if s["dominance_step"] is not None:
        text += f", holding >= {thr:.2f} from step {s['dominance_step']} ({s['epoch_fraction']:.1%} of the first epoch)"
    else:
        text += f", never holding >= {thr:.2f} to the end"
    if s["most_frequent_pretraining"] is not None:
        mf = s["most_frequent_pretraining"]
        text += (
            f"; it was {'' if s['winner_is_most_frequent'] else 'not '}the most frequent format in pretraining "
            f"({mf} {pre['corpus_shares'][mf]:.2f})"
        )
    ma = s["most_accurate_pretraining"]
    if ma is not None:
        text += (
            f"; {'' if s['winner_is_most_accurate_pretraining'] else 'not '}the most accurate after pretraining "
            f"({ma} {pre['accuracy'][ma]:.2f})"
        )
    ma1 = s["most_accurate_step1"]
    if ma1 is not None:
        text += (
            f"; {'' if s['winner_is_most_accurate_step1'] else 'not '}the most accurate at RL step "
            f"{s['first_step']} ({ma1} {s['accuracy_first_step'][ma1]:.2f})"
        )
    return text + "."


def summarize(
    rows: Sequence[dict[str, Any]],
    config: dict[str, Any],
    pretraining: dict[str, Any] | None,
    *,
    threshold: float = 0.9,
) -> dict[str, Any]:
    """The formats.json summary from `format_table` rows, the run config and the pretraining record (or None)."""
    n_steps = len({r["step"] for r in rows})
    window = max(1, math.ceil(END_WINDOW * n_steps))
    win = winner(rows, window)
    first, last = min(r["step"] for r in rows), max(r["step"] for r in rows)
    dom = dominance_step(rows, win, threshold)
    pps, train_size = int(config.get("prompts_per_step", 1)), int(config.get("train_size", 1))
    acc1 = accuracy_at(rows, first)
    pre = pretraining or {}
    most_frequent = argmax(_only_formats(pre.get("corpus_shares", {})))
    most_accurate = argmax(_only_formats(pre.get("accuracy", {})))
    most_accurate_1 = argmax(_only_formats(acc1))
    s = {
        "model": config.get("model"),
        "size": pre.get("size"),
        "task": config.get("task"),
        "algo": config.get("algo"),
        "seed": config.get("seed"),
        "prompts_per_step": pps,
        "num_generations": config.get("num_generations"),
        "train_size": train_size,
        "completions": sum(r["count"] for r in rows),
        "first_step": first,
        "last_step": last,
        "threshold": threshold,
        "winner": win,
        "end_window_steps": window,
        "winner_share_end": end_shares(rows, set(sorted({r["step"] for r in rows})[-window:]))[win],
        "dominance_step": dom,
        "epoch_fraction": epoch_fraction(dom, pps, train_size),
        "shares_first_step": {r["format"]: r["share"] for r in rows if r["step"] == first},
        "shares_last_step": {r["format"]: r["share"] for r in rows if r["step"] == last},
        "accuracy_first_step": acc1,
        "counts_first_step": {r["format"]: r["count"] for r in rows if r["step"] == first},
        "pretraining": pretraining,
        "most_frequent_pretraining": most_frequent,
        "most_accurate_pretraining": most_accurate,
        "most_accurate_step1": most_accurate_1,
        "winner_is_most_frequent": _is(win, most_frequent),
        "winner_is_most_accurate_pretraining": _is(win, most_accurate),
        "winner_is_most_accurate_step1": _is(win, most_accurate_1),
    }
    s["verdict"] = _verdict(s)
    return s


def run_formats(
    run_dir: str | os.PathLike, out: str | os.PathLike | None = None, *, threshold: float = 0.9
) -> dict[str, Any]:
    """Classify every completion of RUN, write formats.parquet/json/png to OUT, return the summary."""
    from rldelta.plots.formats import format_shares_plot  # matplotlib is slow to import: only when plotting

    if not 0.0 < threshold <= 1.0:
        raise ProbeError(f"threshold must lie in (0, 1], got {threshold}")
    run_dir = Path(run_dir)
    config, df = _read_run(run_dir)
    formats = [classify_format(str(c)) for c in df["completion"]]
    correct = _correct(config, df, run_dir / COMPLETIONS_FILE)
    rows = format_table(df["step"].astype(int).tolist(), formats, correct, names=(*FORMAT_NAMES, OTHER))
    summary = summarize(rows, config, _pretraining(config.get("model")), threshold=threshold)
    summary["run"] = str(run_dir)

    out = Path(out) if out is not None else run_dir / OUT_DIR
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_parquet(rows, out / FORMATS_TABLE, schema=_SCHEMA)
    steps = sorted({r["step"] for r in rows})
    pre = summary["pretraining"] or {}
    png = format_shares_plot(
        steps,
        shares_by_step(rows),
        threshold=threshold,
        dominance_step=summary["dominance_step"],
        pretrain_shares=pre.get("corpus_shares"),
        title=f"format shares: {run_dir.name}" + (f" ({pre['size']})" if pre.get("size") else ""),
    )
    atomic_write_bytes(out / PLOT_FILE, png)
    atomic_write_json(out / FORMATS_JSON, summary)
    return summary


def compare_sizes(summaries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Whether the winning format differs between runs from different base models (sizes).

    Runs are grouped by base model; a group's winner is the most common winner among its runs (ties: the first
    seen). `winner_differs` is None when fewer than two base models are given.
    """
    groups: dict[str, dict[str, Any]] = {}
    for s in summaries:
        key = str(s.get("model"))
        g = groups.setdefault(key, {"model": s.get("model"), "size": s.get("size"), "runs": [], "winners": []})
        g["runs"].append(s.get("run"))
        g["winners"].append(s.get("winner"))
    for g in groups.values():
        g["winner"] = Counter(g["winners"]).most_common(1)[0][0]
        g["unanimous"] = len(set(g["winners"])) == 1
    distinct = {g["winner"] for g in groups.values()}
    differs = None if len(groups) < 2 else len(distinct) > 1
    label = ", ".join(f"{g['size'] or g['model']}: {g['winner']}" for g in groups.values())
    if differs is None:
        verdict = f"one base model only ({label}); nothing to compare"
    else:
        verdict = f"the winner {'differs' if differs else 'is the same'} between base models ({label})"
    return {"groups": list(groups.values()), "winner_differs": differs, "verdict": verdict}
