"""The progress display of training runs (RL runs and mixture pretraining): a TrainerCallback over optimizer steps."""

from __future__ import annotations


def progress_callback(total: int, label: str = "train", disable: bool = False):
    """A rich progress bar over optimizer steps, with the last logged reward and loss (RL runs, pretraining)."""
    # Lazy: rich and transformers load when a run starts, not when the train package is imported.
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from transformers import TrainerCallback

    class RichProgress(TrainerCallback):
        def __init__(self):
            self.progress = Progress(
                TextColumn(f"[bold]{label}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
                transient=False,
                disable=disable,
            )
            self.task_id = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.progress.start()
            self.task_id = self.progress.add_task(label, total=total, completed=state.global_step, info="")

        def on_step_end(self, args, state, control, **kwargs):
            self.progress.update(self.task_id, completed=state.global_step)

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            parts = [f"{k}={logs[k]:.3g}" for k in ("reward", "loss") if isinstance(logs.get(k), (int, float))]
            if parts:  # the end-of-training summary logs neither: keep the last values on the bar
                self.progress.update(self.task_id, info=" ".join(parts))

        def on_train_end(self, args, state, control, **kwargs):
            self.progress.stop()

    return RichProgress()
