"""progress_bar: silent, a callable, and the plain lines it prints where stderr is not a terminal."""

from __future__ import annotations

import re

import torch

import rldelta.runtime.progress as progress_mod
from conftest import write_checkpoint
from rldelta.diff import run_diff
from rldelta.runtime.progress import progress_bar


def _clock(monkeypatch, times: list[float]) -> None:
    """time.monotonic returns TIMES in turn (the first is the stage's start)."""
    it = iter(times)
    monkeypatch.setattr(progress_mod.time, "monotonic", lambda: next(it))


def test_silent_and_callable(capsys):
    seen = []
    with progress_bar("x", 3, lambda d, n, s: seen.append((d, n, s)), done=1) as advance:
        advance("a")
        advance("b")
    with progress_bar("x", 3, False) as advance:
        advance("a")
    assert seen == [(2, 3, "a"), (3, 3, "b")]
    assert capsys.readouterr().err == ""


def test_plain_lines_when_stderr_is_not_a_tty(capsys, monkeypatch):
    # start, then 5 units: at 0.5 s (first: printed), 0.9 s and 1.4 s (under a second since the last line:
    # skipped), 1.6 s (printed), 1.7 s (the last: always printed)
    _clock(monkeypatch, [0.0, 0.5, 0.9, 1.4, 1.6, 1.7])
    with progress_bar("diff", 5, True) as advance:
        for name in "abcde":
            advance(name)
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "diff: 1/5 done (a), 0.5 s elapsed, ~2.0 s left",
        "diff: 4/5 done (d), 1.6 s elapsed, ~0.4 s left",
        "diff: 5/5 done (e), 1.7 s elapsed, ~0.0 s left",
    ]


def test_plain_lines_every_slow_unit_and_resume(capsys, monkeypatch):
    # a resumed stage (2 of 5 done before) with slow units: one line each; time left from this run's pace only
    _clock(monkeypatch, [10.0, 13.0, 16.0, 19.0])
    with progress_bar("explain", 5, True, done=2) as advance:
        for name in ("c", "d", "e"):
            advance(name)
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "explain: 3/5 done (c), 3.0 s elapsed, ~6.0 s left",
        "explain: 4/5 done (d), 6.0 s elapsed, ~3.0 s left",
        "explain: 5/5 done (e), 9.0 s elapsed, ~0.0 s left",
    ]
    assert all(re.fullmatch(r"explain: \d+/5 done \(\w\), [\d.]+ s elapsed, ~[\d.]+ s left", x) for x in lines)


def test_diff_in_a_log_prints_plain_lines(tmp_path, capsys):
    # capsys's stderr is not a terminal, as in CI or a cluster job's log: no rich bar, plain lines ending in n/n
    g = torch.Generator().manual_seed(0)
    tensors = {f"model.layers.{i}.mlp.up_proj.weight": torch.randn(4, 4, generator=g) for i in range(3)}
    b = write_checkpoint(tmp_path / "b", tensors)
    t = write_checkpoint(tmp_path / "t", {n: x + 1 for n, x in tensors.items()})
    run_diff(b, t, tmp_path / "o", progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert lines and all(x.startswith("diff: ") for x in lines)
    assert re.fullmatch(
        r"diff: 3/3 done \(model\.layers\.\d\.mlp\.up_proj\.weight\), [\d.]+ s elapsed, ~0\.0 s left", lines[-1]
    )


def test_transformers_bars_stay_out_of_a_log(tmp_path):
    """A command whose stderr is a file or a pipe (a job's log) loads a model without transformers' "Loading weights"
    bar, which wrote carriage-return redraws into it."""
    import os
    import subprocess
    import sys

    from rldelta.train.models import build_tiny

    model = build_tiny(tmp_path / "tiny")
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"}
    r = subprocess.run(
        [sys.executable, "-m", "rldelta.cli", "eval", str(model), "--task", "digits", "--n", "2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stderr and "Loading weights" not in r.stderr, r.stderr
