"""The plateau budget of mixture pretraining (train/plateau_budget.py): the schedule's learning-rate factor by hand,
the decay started by a planted flat curve and not by a falling one, and a real pretraining run whose step count is
the one the rule, recomputed on its logged curve, chose."""

from __future__ import annotations

import math

import pytest

from rldelta.metrics.plateau import plateau
from rldelta.train import plateau_budget
from rldelta.train.mixture import pretrain_mixture, read_mixture
from rldelta.train.plateau_budget import DECAY_SHARE, PLATEAU_TOLERANCE, PLATEAU_WINDOW, PlateauSchedule


def _history(losses, every=10):
    return [{"step": every * (i + 1), "loss": v} for i, v in enumerate(losses)]


def test_schedule_factor_by_hand():
    s = PlateauSchedule(warmup=4, cap=1000)
    assert [s(i) for i in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert s(500) == 1.0 and not s.done(999)
    s.begin_decay(100, plateau=True)
    assert s.decay_steps == 10  # DECAY_SHARE of the 100 steps done
    assert s(99) == 1.0 and s(100) == 1.0 and s(105) == pytest.approx(0.5) and s(110) == 0.0
    assert not s.done(109) and s.done(110)


def test_a_flat_curve_starts_the_decay_and_a_falling_one_does_not():
    falling = [1.0 * 0.9**i for i in range(30)]
    s = PlateauSchedule(warmup=1, cap=10_000)
    s.observe(300, _history(falling))
    assert s.decay_start is None
    flat = [1.0 * 0.7**i for i in range(6)] + [0.17] * 12
    s.observe(180, _history(flat))
    assert s.decay_start == 180 and s.found_plateau
    assert plateau([10 * (i + 1) for i in range(18)], flat, window=PLATEAU_WINDOW, tolerance=PLATEAU_TOLERANCE).reached
    s.observe(190, _history(flat + [0.01]))  # once started, the decay does not move
    assert s.decay_start == 180


def test_the_cap_starts_the_decay_when_no_plateau_comes():
    falling = [1.0 * 0.9**i for i in range(30)]
    s = PlateauSchedule(warmup=1, cap=330)
    s.observe(290, _history(falling))
    assert s.decay_start is None  # 290 + 29 < 330
    s.observe(300, _history(falling))
    assert s.decay_start == 300 and not s.found_plateau and s.decay_steps == math.ceil(DECAY_SHARE * 300)


def test_pretraining_stops_where_the_rule_says(tmp_path, monkeypatch):
    # The test model keeps creeping down for thousands of steps; a 10% tolerance lets the rule fire within the cap.
    monkeypatch.setattr(plateau_budget, "PLATEAU_TOLERANCE", 0.1)
    out = tmp_path / "m"
    pretrain_mixture(
        out, size="test", steps=2000, batch_size=16, lr=1e-2, eval_prompts=2, eval_samples=1, plateau=True,
        difficulties=(1,), progress=False,
    )  # fmt: skip
    r = read_mixture(out)
    sch = r["schedule"]
    assert r["budget"] == "plateau" and r["steps"] == 2000
    assert sch["found_plateau"] and sch["tolerance"] == 0.1, r["plateau"]
    assert r["steps_done"] == sch["decay_start"] + sch["decay_steps"] < 2000
    # the rule on the logged curve up to the decay finds the plateau the run stopped at, independently recomputed
    curve = r["loss_curve"]
    keep = [i for i, st in enumerate(curve["steps"]) if st <= sch["decay_start"]]
    p = plateau([curve["steps"][i] for i in keep], [curve["loss"][i] for i in keep], window=5, tolerance=0.1)
    assert p.reached and r["plateau"]["step"] == p.step
    # the curve up to the log before the decay began had not plateaued yet: the decay started at the first chance
    earlier = keep[:-1]
    assert len(earlier) >= 2 * 5
    assert not plateau(
        [curve["steps"][i] for i in earlier], [curve["loss"][i] for i in earlier], window=5, tolerance=0.1
    ).reached
