"""Where a loss curve stops paying for more steps: the pretraining step budget of the mixture models read off a
measured loss curve instead of a wall-clock budget.

The rule: smooth the logged losses with a trailing mean over `window` points (one logged loss is one batch); the
plateau is the first logged step from which the rest of the curve never gets more than `tolerance` (relative)
below the smoothed loss there. It is reached when at least one more window of the curve follows it, so that a
flat stretch, not the curve's end, shows it; a curve still falling at its end has not reached one and says by how
much it fell over its last window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Plateau:
    """`step`: the plateau's step (None: not reached); `loss`: the smoothed loss there; `gain`: the relative
    improvement the rest of the curve still made after it; `last_window_drop`: the relative drop of the smoothed
    loss over the curve's last window."""

    reached: bool
    step: int | None
    loss: float | None
    gain: float | None
    last_window_drop: float
    window: int
    tolerance: float
    text: str

    as_dict = asdict


def _smooth(values: Sequence[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plateau(steps: Sequence[int], losses: Sequence[float], *, window: int = 5, tolerance: float = 0.02) -> Plateau:
    """The plateau of a loss curve logged at `steps` (increasing). See the module docstring for the rule."""
    if len(steps) != len(losses):
        raise ValueError(f"steps and losses differ in length: {len(steps)}, {len(losses)}")
    if window < 1 or not 0.0 < tolerance < 1.0:
        raise ValueError(f"need window >= 1 and 0 < tolerance < 1, got {window}, {tolerance}")
    if any(b <= a for a, b in zip(steps, steps[1:])):
        raise ValueError("steps must increase")
    if len(losses) < 2 * window:
        raise ValueError(f"a curve of {len(losses)} points is shorter than two windows of {window}")
    smooth = _smooth(list(losses), window)
    # The best smoothed loss from each point on, from the end backwards.
    best_after = smooth[:]
    for i in range(len(smooth) - 2, -1, -1):
        best_after[i] = min(smooth[i], best_after[i + 1])
    last = len(smooth) - 1
    back = smooth[last - window]
    drop = (back - smooth[last]) / back if back else 0.0
    # Smoothed values are meaningful from the first full window on.
    for i in range(window - 1, len(smooth)):
        gain = (smooth[i] - best_after[i]) / smooth[i] if smooth[i] else 0.0
        if gain < tolerance:
            break
    reached = i <= last - window
    if not reached:
        return Plateau(
            False,
            None,
            None,
            None,
            drop,
            window,
            tolerance,
            f"no plateau: the smoothed loss fell {drop:.1%} over the last {window} logged points (to step "
            f"{steps[last]}); more steps would still pay",
        )
    return Plateau(
        True,
        int(steps[i]),
        smooth[i],
        gain,
        drop,
        window,
        tolerance,
        f"plateau at step {steps[i]}: smoothed loss {smooth[i]:.4g}, the remaining {steps[last] - steps[i]} steps "
        f"gain {gain:.1%} (< {tolerance:.0%})",
    )
