"""What a training run writes as it trains, besides the trainer's own state: run.json's record, and the callbacks
that save checkpoints, metrics, sampled completions, every step's change set and the progress display."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rldelta.train.callbacks import progress_callback
from rldelta.train.config import TrainConfig
from rldelta.train.masking import MaskedUpdate
from rldelta.train.saving import CheckpointSaver, CompletionRecorder, MetricsRecorder, git_revision, library_versions
from rldelta.train.step_recorder import StepRecorder
from rldelta.train.tasks import Task, trl_reward_funcs


def run_record(
    config: TrainConfig, previous: dict | None, train_examples: int, offline_stats, masked: MaskedUpdate | None
) -> dict[str, Any]:
    """run.json at the start of a run (a resumed run keeps its start time and the steps it saved)."""
    return {
        "config": config.to_dict(),
        "seed": config.seed,
        "versions": library_versions(),
        "git_revision": git_revision(),
        "started": (previous or {}).get("started", time.strftime("%Y-%m-%dT%H:%M:%S%z")),
        "status": "running",
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "threads": torch.get_num_threads(),
        "train_examples": train_examples,
        "offline_data": offline_stats,
        "mask_density": masked.density if masked is not None else None,
        "saved_steps": (previous or {}).get("saved_steps", []),
    }


@dataclass
class RunLogs:
    """What a run writes as it trains, as trainer callbacks: its checkpoints, metrics, sampled completions (online
    algorithms), every step's change set and the progress display."""

    saver: CheckpointSaver
    metrics: MetricsRecorder
    completions: CompletionRecorder | None
    recorder: StepRecorder | None
    progress: Any
    reward_funcs: list

    @classmethod
    def start(cls, config: TrainConfig, run_dir: Path, model, tokenizer, task: Task, online: bool) -> RunLogs:
        accuracy_key = f"rewards/{task.name}_correctness/mean"
        completions = CompletionRecorder(run_dir) if online else None
        # Each reward wrapped by the recorder, so every sampled completion is kept with its rewards.
        rewards = zip(trl_reward_funcs(task, config.reward_list), config.reward_list) if online else ()
        return cls(
            saver=CheckpointSaver(run_dir, config.save_step_list, config.precision, tokenizer),
            metrics=MetricsRecorder(run_dir, accuracy_key, f"rewards/{task.name}_format/mean"),
            completions=completions,
            recorder=StepRecorder(run_dir, model, patches=config.record_patches) if config.record_steps else None,
            progress=progress_callback(config.steps, f"train {run_dir.name}") if config.progress else None,
            reward_funcs=[completions.wrap(f, name) for f, name in rewards] if completions is not None else [],
        )

    def callbacks(self) -> list:
        parts = (self.saver, self.metrics, self.completions, self.recorder, self.progress)
        return [c for c in parts if c is not None]

    def saved_steps(self, record: dict) -> list[int]:
        return sorted(set(record["saved_steps"]) | set(self.saver.written))

    def close(self) -> None:
        """Whatever the outcome (a failure too): every row so far on disk, the terminal left clean."""
        for log in (self.metrics, self.completions):
            if log is not None:
                log.flush()
        if self.recorder is not None:
            self.recorder.close()
        if self.progress is not None:
            self.progress.stop()  # Ctrl-C skips on_train_end
