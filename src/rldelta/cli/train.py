"""`rldelta train`: one RL (or SFT) run of a model on a task; checkpoints for `rldelta diff`."""

from __future__ import annotations

from pathlib import Path

import typer

from rldelta.cli.app import app, console
from rldelta.train.config import TrainConfig, help_of  # light (no torch): the train options' help is read off it


@app.command("train")
def train_(
    out: Path = typer.Option(..., "-o", "--out", help=help_of(TrainConfig, "output")),
    model: Path | None = typer.Option(
        None, "--model", help=help_of(TrainConfig, "model") + " Required unless --resume."
    ),
    task: str | None = typer.Option(None, "--task", help=help_of(TrainConfig, "task")),
    algo: str | None = typer.Option(None, "--algo", help=help_of(TrainConfig, "algo")),
    seed: int | None = typer.Option(None, "--seed", help=help_of(TrainConfig, "seed")),
    data_seed: int | None = typer.Option(None, "--data-seed", help=help_of(TrainConfig, "data_seed")),
    steps: int | None = typer.Option(None, "--steps", help=help_of(TrainConfig, "steps")),
    lr: float | None = typer.Option(None, "--lr", help=help_of(TrainConfig, "lr")),
    weight_decay: float | None = typer.Option(None, "--weight-decay", help=help_of(TrainConfig, "weight_decay")),
    prompts_per_step: int | None = typer.Option(
        None, "--prompts-per-step", help=help_of(TrainConfig, "prompts_per_step")
    ),
    num_generations: int | None = typer.Option(None, "--num-generations", help=help_of(TrainConfig, "num_generations")),
    max_completion_length: int | None = typer.Option(
        None, "--max-completion-length", help=help_of(TrainConfig, "max_completion_length")
    ),
    temperature: float | None = typer.Option(None, "--temperature", help=help_of(TrainConfig, "temperature")),
    beta: float | None = typer.Option(None, "--beta", help=help_of(TrainConfig, "beta")),
    ppo_epochs: int | None = typer.Option(None, "--ppo-epochs", help=help_of(TrainConfig, "ppo_epochs")),
    value_lr: float | None = typer.Option(None, "--value-lr", help=help_of(TrainConfig, "value_lr")),
    reward_model_lr: float | None = typer.Option(
        None, "--reward-model-lr", help=help_of(TrainConfig, "reward_model_lr")
    ),
    gae_lambda: float | None = typer.Option(None, "--gae-lambda", help=help_of(TrainConfig, "gae_lambda")),
    precision: str | None = typer.Option(None, "--precision", help=help_of(TrainConfig, "precision")),
    save_steps: str | None = typer.Option(None, "--save-steps", help=help_of(TrainConfig, "save_steps")),
    mask: Path | None = typer.Option(None, "--mask", help=help_of(TrainConfig, "mask")),
    advantages: str | None = typer.Option(None, "--advantages", help=help_of(TrainConfig, "advantages")),
    rewards: str | None = typer.Option(None, "--rewards", help=help_of(TrainConfig, "rewards")),
    difficulty: int | None = typer.Option(None, "--difficulty", help=help_of(TrainConfig, "difficulty")),
    sft_style: str | None = typer.Option(None, "--sft-style", help=help_of(TrainConfig, "sft_style")),
    resume: bool = typer.Option(False, "--resume", help=help_of(TrainConfig, "resume")),
    record_steps: bool | None = typer.Option(
        None, "--record-steps/--no-record-steps", help=help_of(TrainConfig, "record_steps")
    ),
    patches: bool | None = typer.Option(None, "--patches", help=help_of(TrainConfig, "record_patches")),
) -> None:
    """Train MODEL on a task with a TRL algorithm; checkpoints under OUT/checkpoints/step-N/ for `rldelta diff`."""
    from rldelta.train.config import make_config
    from rldelta.train.trainers import train

    try:
        config = make_config(
            str(out),
            resume=resume,
            record_steps=record_steps,
            record_patches=patches,
            model=str(model) if model else None,
            task=task,
            algo=algo,
            seed=seed,
            data_seed=data_seed,
            steps=steps,
            lr=lr,
            weight_decay=weight_decay,
            prompts_per_step=prompts_per_step,
            num_generations=num_generations,
            max_completion_length=max_completion_length,
            beta=beta,
            temperature=temperature,
            ppo_epochs=ppo_epochs,
            value_lr=value_lr,
            reward_model_lr=reward_model_lr,
            gae_lambda=gae_lambda,
            precision=precision,
            save_steps=save_steps,
            mask=str(mask) if mask else None,
            advantages=advantages,
            rewards=rewards,
            difficulty=difficulty,
            sft_style=sft_style,
        )
        run_dir = train(config)
    except KeyboardInterrupt:
        console.print(f"interrupted; complete checkpoints are kept in {out}/checkpoints (continue with --resume)")
        raise typer.Exit(130) from None
    console.print(f"done: {run_dir}/checkpoints")
