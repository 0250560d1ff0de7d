"""Mixture pretraining budgets: steps are the only budget (same call, same bytes), and max_minutes is a safety stop
that fails the run, naming the step it reached, and leaves what was there before untouched."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from rldelta.train.corpus import MixtureError
from rldelta.train.mixture import MIXTURE_FILE, pretrain_mixture

TINY = dict(size="test", steps=3, batch_size=8, eval_prompts=2, eval_samples=1, progress=False)


def digests(folder: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.iterdir()) if f.is_file()}


def test_same_call_same_weights_and_a_time_limit_fails_cleanly(tmp_path):
    out = pretrain_mixture(tmp_path / "m", **TINY)
    first = digests(out)
    record = json.loads((out / MIXTURE_FILE).read_text())
    assert record["steps_done"] == 3 and record["max_minutes"] is None
    # The same call again, over the model it wrote (an existing model folder may be replaced): the same weights.
    again = digests(pretrain_mixture(out, **TINY))
    assert again["model.safetensors"] == first["model.safetensors"]
    assert again["tokenizer.json"] == first["tokenizer.json"]
    # A limit of (almost) no time ends training after its first step: an error naming that step, nothing written.
    with pytest.raises(MixtureError, match=r"reached only step 1 of 3 within max_minutes=1e-09"):
        pretrain_mixture(out, **TINY, max_minutes=1e-9)
    assert digests(out) == again
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary folder left beside it


def test_max_minutes_must_be_positive(tmp_path):
    with pytest.raises(MixtureError, match="max_minutes"):
        pretrain_mixture(tmp_path / "m", **TINY, max_minutes=0)
