"""Probes: run models on task prompts and measure one thing about them. Each module is one probe."""

from __future__ import annotations

from pathlib import Path

from rldelta.runtime.errors import RldeltaError


class ProbeError(RldeltaError):
    """Input a probe cannot use (not a run or model folder, runs that do not match, tensors that differ), with a
    one-line reason naming the file or tensor."""


def read_run(run_dir: Path) -> dict:
    """RUN/run.json of a training run, or a ProbeError that says what is wrong with it."""
    from rldelta.train.runfiles import read_run_json

    try:
        record = read_run_json(run_dir)
    except (OSError, ValueError) as e:  # ValueError: bad JSON or bad UTF-8
        raise ProbeError(f"{run_dir}/run.json: unreadable ({e})") from None
    if record is None:
        raise ProbeError(f"{run_dir}: not a training run (no run.json)")
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        raise ProbeError(f"{run_dir}/run.json: no 'config' object")
    return record
