"""The loss-plateau rule (metrics/plateau.py) on planted curves whose plateau is known in closed form."""

from __future__ import annotations

import math
import random

import pytest

from rldelta.metrics.plateau import plateau


def test_exponential_decay_plateau_in_closed_form():
    # L(s) = 1 + 2 exp(-s / 50), logged every 10 steps to 1000. Unsmoothed (window 1) the rest of the curve is best
    # at its end, so the gain left from s is (2e^{-s/50} - 2e^{-20}) / (1 + 2e^{-s/50}); it falls below 2% at
    # s* ~ 50 ln 98 = 229.2 (solved here by bisection), and the plateau is the first logged step after it.
    steps = list(range(0, 1001, 10))
    losses = [1 + 2 * math.exp(-s / 50) for s in steps]
    end = 2 * math.exp(-20)

    def gain(s):
        return (2 * math.exp(-s / 50) - end) / (1 + 2 * math.exp(-s / 50))

    lo, hi = 0.0, 1000.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if gain(mid) >= 0.02 else (lo, mid)
    expected = next(s for s in steps if s >= hi)
    assert 225 < hi < 235  # 50 ln 98 = 229.2
    p = plateau(steps, losses, window=1, tolerance=0.02)
    assert p.reached and p.step == expected == 230 and p.gain < 0.02
    assert p.text.startswith("plateau at step 230")


def test_noisy_step_down_plateaus_after_the_drop():
    # 2.0 until step 300, then 1.0, each point with +-0.01 uniform noise: smoothed over 5 points the curve is flat
    # from the fifth point after the drop (the window holds only post-drop points from there).
    rng = random.Random(0)
    steps = list(range(0, 1000, 10))
    losses = [(2.0 if s < 300 else 1.0) + rng.uniform(-0.01, 0.01) for s in steps]
    p = plateau(steps, losses, window=5, tolerance=0.05)
    assert p.reached and p.step == 340 and abs(p.loss - 1.0) < 0.01


def test_still_falling_is_no_plateau():
    steps = list(range(100))
    losses = [3.0 - 0.02 * s for s in steps]  # linear to the end: 3.0 -> 1.02
    p = plateau(steps, losses, window=5, tolerance=0.02)
    # the smoothed loss over the last 5 points falls by 5 x 0.02 from its value a window earlier
    back, last = sum(losses[-10:-5]) / 5, sum(losses[-5:]) / 5
    assert not p.reached and p.step is None and p.last_window_drop == pytest.approx((back - last) / back)
    assert p.text.startswith("no plateau")


def test_plateau_right_at_the_end_is_not_reached():
    # Falls until the last 3 points, flat there: fewer than one window after it, so not shown to be flat.
    steps = list(range(40))
    losses = [3.0 - 0.05 * min(s, 37) for s in steps]
    assert not plateau(steps, losses, window=5, tolerance=0.02).reached


@pytest.mark.parametrize(
    "steps,losses,kw,message",
    [
        ([1, 2], [1.0], {}, "differ in length"),
        ([1, 2, 3, 4], [1.0] * 4, {"window": 5}, "shorter than two windows"),
        ([1, 1, 2, 3], [1.0] * 4, {"window": 1}, "increase"),
        ([1, 2], [1.0, 1.0], {"window": 1, "tolerance": 0}, "tolerance"),
    ],
)
def test_bad_input(steps, losses, kw, message):
    with pytest.raises(ValueError, match=message):
        plateau(steps, losses, **kw)
