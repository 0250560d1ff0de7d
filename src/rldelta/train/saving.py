"""What a training run leaves on disk, and the TrainerCallbacks that write it (file names and run.json: runfiles.py).

    RUN/run.json                      full config, seed, library versions, git revision, status
    RUN/metrics.parquet               one row per optimizer step (reward, accuracy, KL, loss, entropy, length, seconds)
    RUN/completions.parquet           every completion the online algorithms sampled, with its rewards (step, prompt, ...)
    RUN/checkpoints/step-<N>/         bf16 weights + config + tokenizer: the form a hub publishes
    RUN/checkpoints/step-<N>-fp32/    fp32 master weights (only with --precision fp32)
    RUN/trainer/checkpoint-<N>/       the HF Trainer's own checkpoint (optimizer, RNG, state) that --resume uses

Every model folder is written into a hidden temporary folder and renamed into place, and metrics/run.json are
replaced atomically, so Ctrl-C at any moment leaves only complete checkpoints behind.
"""

from __future__ import annotations

import copy
import math
import os
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from rldelta.runtime.atomic import atomic_dir, atomic_write_parquet
from rldelta.runtime.files import COMPLETIONS_FILE, METRICS_FILE
from rldelta.train.runfiles import step_dir
from rldelta.train.tasks import completion_text

# Trainer log keys -> metrics.parquet columns. Keys that are absent for an algorithm stay missing (NaN).
_COLUMNS = {
    "reward": "reward_mean",
    "reward_std": "reward_std",
    "kl": "kl",
    "loss": "loss",
    "entropy": "entropy",
    "completions/mean_length": "completion_length",
    "grad_norm": "grad_norm",
    "learning_rate": "learning_rate",
}


def write_model_dir(model, tokenizer, dest: Path, dtype: torch.dtype | None = None) -> Path:
    """Save `model` (cast to `dtype` if given; the training copy is untouched) and `tokenizer` at `dest`, atomically."""
    with atomic_dir(dest) as tmp:  # the same step saved again after a resume is swapped, never left with a gap
        if dtype is not None and next(model.parameters()).dtype != dtype:
            # A cast copy, so config.json states the saved dtype and tied weights are stored once.
            model = copy.deepcopy(model).to(dtype)
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return dest


def save_step(run_dir: str | os.PathLike, step: int, model, tokenizer, precision: str) -> list[Path]:
    """The published bf16 checkpoint of `step`, and with fp32 training also the fp32 master."""
    out = []
    if precision == "fp32":
        out.append(write_model_dir(model, tokenizer, step_dir(run_dir, step, fp32=True), torch.float32))
    out.append(write_model_dir(model, tokenizer, step_dir(run_dir, step), torch.bfloat16))
    return out


class CheckpointSaver(TrainerCallback):
    """At each chosen step: make the Trainer save its resumable checkpoint, then write the published ones.

    The published folders are written in `on_save`, i.e. after the Trainer checkpoint of the same step is complete,
    so every step-<N>/ has a resume point.
    """

    def __init__(self, run_dir: str | os.PathLike, steps: list[int], precision: str, tokenizer):
        self.run_dir = Path(run_dir)
        self.steps = set(steps)
        self.precision = precision
        self.tokenizer = tokenizer
        self.written: list[int] = []

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step in self.steps:
            control.should_save = True
        return control

    def on_save(self, args, state, control, model=None, **kwargs):
        if state.global_step in self.steps and model is not None:
            save_step(self.run_dir, state.global_step, model, self.tokenizer, self.precision)
            self.written.append(state.global_step)
        return control


class MetricsRecorder(TrainerCallback):
    """One row per logged step into RUN/metrics.parquet, rewritten atomically after every log."""

    def __init__(self, run_dir: str | os.PathLike, accuracy_key: str | None, format_key: str | None = None):
        self.path = Path(run_dir) / METRICS_FILE
        self.accuracy_key = accuracy_key
        self.format_key = format_key
        self.rows: list[dict[str, Any]] = []
        self._t_step: float | None = None
        self._seconds: dict[int, float] = {}

    def on_train_begin(self, args, state, control, **kwargs):
        # After a resume, keep what was logged up to the resume point and drop steps that will be redone.
        if self.path.is_file() and not self.rows:
            import pandas as pd

            old = pd.read_parquet(self.path)
            self.rows = [r for r in old.to_dict("records") if r["step"] <= state.global_step]

    def on_step_begin(self, args, state, control, **kwargs):
        self._t_step = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._t_step is not None:
            self._seconds[state.global_step] = time.perf_counter() - self._t_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "train_runtime" in logs:  # the end-of-training summary, not a step
            return
        row: dict[str, Any] = {"step": int(state.global_step)}
        for key, col in _COLUMNS.items():
            if key in logs:
                row[col] = float(logs[key])
        if self.accuracy_key and self.accuracy_key in logs:
            row["accuracy"] = float(logs[self.accuracy_key])
        if self.format_key and self.format_key in logs:
            row["format_rate"] = float(logs[self.format_key])
        row["seconds"] = self._seconds.get(state.global_step, float("nan"))
        for key, value in logs.items():  # everything else the trainer logged, under its own name
            if isinstance(value, (int, float)) and key not in _COLUMNS:
                row.setdefault(key.replace("/", "."), float(value))
        self.rows = [r for r in self.rows if r["step"] != row["step"]] + [row]
        self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        import pandas as pd

        df = pd.DataFrame(self.rows).sort_values("step")
        first = [
            c
            for c in [
                "step",
                "reward_mean",
                "reward_std",
                "accuracy",
                "format_rate",
                "kl",
                "loss",
                "entropy",
                "completion_length",
                "seconds",
            ]
            if c in df.columns
        ]
        atomic_write_parquet(df[first + [c for c in df.columns if c not in first]], self.path)


class CompletionRecorder(TrainerCallback):
    """Every sampled completion with its rewards, one row each, into RUN/completions.parquet.

    TRL calls each reward function once per generation batch with the same prompts and completions; `wrap` puts a
    recorder around each, so the rows carry every reward's value without a second scoring pass. Columns: step (the
    optimizer step the completion was sampled for, 1-based), prompt (the last user message), answer, completion,
    and one column per reward name (e.g. correctness, format).
    """

    # Each write rewrites the whole file, so writing after every step costs the square of the run's length (a long
    # GPU run logs tens of thousands of rows). Between checkpoints the file is rewritten at most this often.
    FLUSH_EVERY_S = 30.0

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / COMPLETIONS_FILE
        self.rows: list[dict[str, Any]] = []
        self._batch: dict[tuple, list[dict[str, Any]]] = {}
        self._flushed_at = -math.inf

    def wrap(self, fn, column: str):
        def recorded(prompts=None, completions=(), answer=(), trainer_state=None, **kwargs):
            values = fn(prompts=prompts, completions=completions, answer=answer, trainer_state=trainer_state, **kwargs)
            step = (trainer_state.global_step if trainer_state is not None else 0) + 1
            texts = [completion_text(c) for c in completions]
            key = (step, tuple(texts))
            rows = self._batch.get(key)
            if rows is None:  # the first reward of a new batch: the previous batch is complete
                self._batch = {}
                rows = self._batch[key] = []
                for i, text in enumerate(texts):
                    p = prompts[i] if prompts is not None else ""
                    if isinstance(p, (list, tuple)):
                        p = next((m.get("content", "") for m in reversed(p) if m.get("role") == "user"), "")
                    rows.append(
                        {
                            "step": step,
                            "prompt": str(p),
                            "answer": str(answer[i]) if len(answer) else "",
                            "completion": text,
                        }
                    )
                self.rows.extend(rows)
            for row, v in zip(rows, values):
                row[column] = None if v is None else float(v)
            return values

        recorded.__name__ = recorded.__qualname__ = fn.__name__  # TRL logs each reward under its function's name
        return recorded

    def on_train_begin(self, args, state, control, **kwargs):
        # After a resume, keep the rows of the steps before the resume point; later ones will be sampled again.
        if self.path.is_file() and not self.rows:
            import pandas as pd

            old = pd.read_parquet(self.path)
            self.rows = [r for r in old.to_dict("records") if r["step"] <= state.global_step]

    def on_step_end(self, args, state, control, **kwargs):
        if time.monotonic() - self._flushed_at >= self.FLUSH_EVERY_S:
            self.flush()

    def on_save(self, args, state, control, **kwargs):
        self.flush()  # a resume point has its completions on disk: a resumed run keeps the rows up to it

    def flush(self) -> None:
        if not self.rows:
            return
        import pandas as pd

        atomic_write_parquet(pd.DataFrame(self.rows), self.path)
        self._flushed_at = time.monotonic()


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("rldelta", "torch", "transformers", "trl", "accelerate", "datasets", "safetensors", "tokenizers"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def git_revision() -> str | None:
    """The commit of the rldelta source tree (with '+dirty' if it has local changes), or None outside git."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None
