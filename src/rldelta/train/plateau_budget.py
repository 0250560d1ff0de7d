"""The plateau budget of mixture pretraining: train for as many steps as the measured loss curve pays for.

A warmup-stable-decay schedule: linear warmup, then a constant learning rate while the loss still falls; at the
first log where metrics.plateau finds the curve flat (PLATEAU_WINDOW logged losses, each the mean over the logging
interval, within PLATEAU_TOLERANCE), a linear decay to zero over DECAY_SHARE of the steps done, then the end. A
cosine schedule would make the curve fall with the learning rate rather than with what is left to learn, and
stopping at a constant rate would leave the model at the rate's noise; the decay settles it. Should the curve not
flatten, the decay starts where the cap leaves room for it, and the record says that no plateau was reached.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from rldelta.metrics.plateau import plateau as find_plateau

PLATEAU_WINDOW, PLATEAU_TOLERANCE = 5, 0.02
DECAY_SHARE = 0.1


def loss_curve(log_history: list[dict]) -> tuple[list[int], list[float]]:
    """(steps, losses) of a transformers Trainer's logged training losses."""
    logged = [(int(h["step"]), float(h["loss"])) for h in log_history if "loss" in h]
    return [st for st, _ in logged], [loss for _, loss in logged]


def plateau_record(steps: list[int], losses: list[float]) -> dict[str, Any] | None:
    """The plateau rule on a loss curve (None: too short a curve to read one)."""
    if len(losses) < 2 * PLATEAU_WINDOW:
        return None
    return find_plateau(steps, losses, window=PLATEAU_WINDOW, tolerance=PLATEAU_TOLERANCE).as_dict()


@dataclass
class PlateauSchedule:
    """The learning-rate factor of each step (a LambdaLR's lambda), and when to stop. `cap`: the step limit."""

    warmup: int
    cap: int
    decay_start: int | None = None
    decay_steps: int = 0
    found_plateau: bool = False

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.decay_start is None or step < self.decay_start:
            return 1.0
        return max(0.0, 1.0 - (step - self.decay_start) / self.decay_steps)

    def begin_decay(self, step: int, *, plateau: bool) -> None:
        self.decay_start, self.found_plateau = step, plateau
        self.decay_steps = max(1, math.ceil(DECAY_SHARE * step))

    def observe(self, step: int, log_history: list[dict]) -> None:
        """At a log: start the decay at the plateau, or where the cap leaves just room for it."""
        if self.decay_start is not None:
            return
        steps, losses = loss_curve(log_history)
        if len(losses) >= 2 * PLATEAU_WINDOW and plateau_record(steps, losses)["reached"]:
            self.begin_decay(step, plateau=True)
        elif step + math.ceil(DECAY_SHARE * step) >= self.cap:
            self.begin_decay(step, plateau=False)

    def done(self, step: int) -> bool:
        return self.decay_start is not None and step >= self.decay_start + self.decay_steps

    def as_dict(self) -> dict[str, Any]:
        return {
            "schedule": "warmup, constant, linear decay from the plateau",
            "warmup": self.warmup,
            "cap": self.cap,
            "decay_start": self.decay_start,
            "decay_steps": self.decay_steps,
            "found_plateau": self.found_plateau,
            "window": PLATEAU_WINDOW,
            "tolerance": PLATEAU_TOLERANCE,
            "decay_share": DECAY_SHARE,
        }


def plateau_callback(schedule: PlateauSchedule):
    """The TrainerCallback that drives `schedule`: watches the logged losses, stops once the decay is over."""
    from transformers import TrainerCallback  # lazy: transformers loads when pretraining starts

    class PlateauStop(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            schedule.observe(state.global_step, state.log_history)

        def on_step_end(self, args, state, control, **kwargs):
            if schedule.done(state.global_step):
                control.should_training_stop = True

    return PlateauStop()


def scheduled_trainer_class(schedule: PlateauSchedule | None):
    """transformers' Trainer, or with `schedule` one whose learning rate follows it (a LambdaLR)."""
    from transformers import Trainer

    if schedule is None:
        return Trainer

    class PlateauTrainer(Trainer):
        def create_scheduler(self, num_training_steps: int, optimizer=None):
            from torch.optim.lr_scheduler import LambdaLR

            if self.lr_scheduler is None:
                self.lr_scheduler = LambdaLR(optimizer or self.optimizer, schedule)
            return self.lr_scheduler

    return PlateauTrainer
