"""The progress display of training runs (RL runs and mixture pretraining): a TrainerCallback over optimizer steps.

On a terminal it is a rich bar; when stderr is not a terminal (CI, cluster logs) it is a plain line every tenth of
the run and at its last step, which a log file keeps readable where a redrawn bar would not.
"""

from __future__ import annotations

import sys
import time


def _log_values(logs: dict | None) -> dict[str, float]:
    # The end-of-training summary logs neither reward nor loss: the last values are kept.
    return {k: logs[k] for k in ("reward", "loss") if isinstance((logs or {}).get(k), (int, float))}


def progress_callback(total: int, label: str = "train", disable: bool = False):  # noqa: C901
    """A progress display over optimizer steps, with the last logged reward and loss (RL runs, pretraining).

    `stop()` ends it; train() calls that too, since Ctrl-C skips on_train_end.
    """
    # Lazy: transformers (and rich) load when a run starts, not when the train package is imported.
    from transformers import TrainerCallback

    class PlainProgress(TrainerCallback):
        """`<label>: step 20/30, reward 0.41, loss 0.012, 5.6 s/step, ~56 s left` on stderr, flushed, every
        max(1, total // 10) steps and at the last one. A step's line waits for that step's log (the Trainer logs
        after on_step_end), or for the next step when that step logs nothing."""

        def __init__(self):
            self.every = max(1, total // 10)
            self.values: dict[str, float] = {}
            self.pending: int | None = None
            self.t0 = 0.0
            self.first_step = 0

        def on_train_begin(self, args, state, control, **kwargs):
            self.t0 = time.perf_counter()
            self.first_step = state.global_step  # a resumed run times only the steps it does

        def on_step_end(self, args, state, control, **kwargs):
            self._flush()
            step = state.global_step
            if step % self.every == 0 or step >= total:
                self.pending = step

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.values.update(_log_values(logs))
            self._flush()

        def on_train_end(self, args, state, control, **kwargs):
            self._flush()

        def stop(self) -> None:
            self._flush()

        def _flush(self) -> None:
            if self.pending is None:
                return
            step, self.pending = self.pending, None
            if disable:
                return
            parts = [f"step {step}/{total}"] + [f"{k} {v:.3g}" for k, v in self.values.items()]
            done = step - self.first_step
            if done > 0:
                per_step = (time.perf_counter() - self.t0) / done
                parts += [f"{per_step:.3g} s/step", f"~{per_step * max(total - step, 0):.0f} s left"]
            print(f"{label}: {', '.join(parts)}", file=sys.stderr, flush=True)

    if not sys.stderr.isatty():
        return PlainProgress()

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

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
            values = _log_values(logs)
            if values:  # keep the last values on the bar
                self.progress.update(self.task_id, info=" ".join(f"{k}={v:.3g}" for k, v in values.items()))

        def on_train_end(self, args, state, control, **kwargs):
            self.progress.stop()

        def stop(self) -> None:
            self.progress.stop()

    return RichProgress()
