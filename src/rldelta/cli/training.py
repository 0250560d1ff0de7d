"""`rldelta models ...`, `train`, `eval`: the models, the RL runs and their accuracy."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from rldelta.cli.app import app, console, fail
from rldelta.errors import RldeltaError
from rldelta.train.config import TrainConfig, help_of  # light (no torch): the train options' help is read off it

# ---- models, train, eval (issue 5) ---------------------------------------------------------------------------

models_app = typer.Typer(no_args_is_help=True, help="Build the tiny test model or prepare a real one.")
app.add_typer(models_app, name="models")


@models_app.command("tiny")
def models_tiny(
    out: Path = typer.Option(..., "-o", "--out", help="Output model folder."),
    seed: int = typer.Option(0, help="Seed of the random initialisation."),
) -> None:
    """A random-initialised tiny Llama with a locally built tokenizer, for tests and quick runs."""
    from rldelta.train.models import build_tiny

    try:
        path = build_tiny(out, seed=seed)
    except RldeltaError as e:
        fail(str(e))
    console.print(f"wrote {path}")


@models_app.command("tiny-moe")
def models_tiny_moe(
    out: Path = typer.Option(..., "-o", "--out", help="Output model folder."),
    seed: int = typer.Option(0, help="Seed of the random initialisation."),
) -> None:
    """A random-initialised tiny mixture-of-experts model (Qwen2-MoE: 8 experts, top-2, a shared expert, 2 layers)
    with the tiny model's tokenizer, for tests and quick runs."""
    from rldelta.train.models import build_tiny_moe

    try:
        path = build_tiny_moe(out, seed=seed)
    except RldeltaError as e:
        fail(str(e))
    console.print(f"wrote {path}")


@models_app.command("prepare")
def models_prepare(
    name: str = typer.Argument(..., help="Model to prepare: smollm2-135m, or a path to any .gguf file."),
    out: Path = typer.Option(..., "-o", "--out", help="Output model folder (reused if already prepared)."),
) -> None:
    """A real pretrained model (or any GGUF file), dequantized to a plain bf16 safetensors folder with tokenizer and
    chat template: the folder training starts from and `rldelta diff` reads."""
    from rldelta.train.models import prepare

    try:
        path = prepare(name, out)
    except RldeltaError as e:
        fail(str(e))
    console.print(f"ready: {path}")


@models_app.command("pretrain-mixture")
def models_pretrain_mixture(
    out: Path = typer.Option(..., "-o", "--out", help="Output model folder."),
    size: str = typer.Option("5m", help="Model size: 5m (~4.8M parameters), 30m (~28M) or test (tiny)."),
    proportions: str = typer.Option("code=0.5,plain=0.3,boxed=0.2", help="Share of each format in the corpus."),
    noise: str = typer.Option("code=0.2,plain=0,boxed=0", help="Share of wrong answers within each format."),
    steps: int | None = typer.Option(None, help="Optimizer steps (default: the size's, ~15 min on 2 cores)."),
    batch_size: int = typer.Option(32, help="Documents per step; the corpus is steps x batch_size documents."),
    lr: float | None = typer.Option(None, help="Peak learning rate (default: the size's)."),
    max_minutes: float | None = typer.Option(
        None, help="Safety stop: fail, writing nothing, if training is not done in this many minutes (default: none)."
    ),
    difficulties: str = typer.Option("1,2", help="Arith levels of the corpus problems."),
    seed: int = typer.Option(0, help="Seed of the corpus and the initialisation."),
    threads: int = typer.Option(1, help="torch threads (1 is fastest on a busy 2-core machine)."),
) -> None:
    """Pretrain a small Llama from scratch on arithmetic solved in three formats (code, plain, boxed)."""
    from rldelta.train.corpus import parse_spec
    from rldelta.train.mixture import pretrain_mixture

    try:
        levels = [int(x) for x in difficulties.split(",") if x.strip()]
    except ValueError:
        fail(f"--difficulties must be comma-separated integers, not {difficulties!r}")
    try:
        path = pretrain_mixture(
            out,
            size=size,
            proportions=parse_spec(proportions),
            noise=parse_spec(noise),
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            max_minutes=max_minutes,
            difficulties=levels,
            seed=seed,
            threads=threads,
            progress=True,
        )
    except RldeltaError as e:
        fail(str(e))
    console.print(f"wrote {path}")


@app.command("eval")
def eval_(
    model: Path = typer.Argument(..., help="Model folder."),
    task: str = typer.Option(..., "--task", help="Task: arith or countdown."),
    n: int = typer.Option(200, "--n", help="Number of test problems."),
    seed: int = typer.Option(0, help="Seed of the test problems."),
    difficulty: int | None = typer.Option(None, help="Only this difficulty level (default: all, mixed)."),
    batch_size: int = typer.Option(16, help="Prompts per generation batch."),
    max_new_tokens: int = typer.Option(64, help="Generation length limit."),
    out: Path | None = typer.Option(None, "-o", "--out", help="Write the result as JSON here."),
) -> None:
    """Greedy accuracy and format rate of MODEL on a task's test split, overall and per difficulty."""
    from rldelta.report.terminal import eval_table
    from rldelta.train.evaluate import evaluate

    try:
        result = evaluate(
            model,
            task,
            n,
            seed=seed,
            difficulty=difficulty,
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
            out=out,
        )
    except RldeltaError as e:
        fail(str(e))
    Console().print(eval_table(result, str(model)))
    if out is not None:
        console.print(f"wrote {out}")


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
    except RldeltaError as e:
        fail(str(e))
    except KeyboardInterrupt:
        console.print(f"interrupted; complete checkpoints are kept in {out}/checkpoints (continue with --resume)")
        raise typer.Exit(130) from None
    console.print(f"done: {run_dir}/checkpoints")
