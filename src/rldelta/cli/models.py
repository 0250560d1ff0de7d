"""`rldelta models ...`: build the tiny test models, prepare a real one, pretrain the format-mixture model."""

from __future__ import annotations

from pathlib import Path

import typer

from rldelta.cli.app import app, console, fail

models_app = typer.Typer(no_args_is_help=True, help="Build the tiny test model or prepare a real one.")
app.add_typer(models_app, name="models")


@models_app.command("tiny")
def models_tiny(
    out: Path = typer.Option(..., "-o", "--out", help="Output model folder."),
    seed: int = typer.Option(0, help="Seed of the random initialisation."),
) -> None:
    """A random-initialised tiny Llama with a locally built tokenizer, for tests and quick runs."""
    from rldelta.train.models import build_tiny

    path = build_tiny(out, seed=seed)
    console.print(f"wrote {path}")


@models_app.command("tiny-moe")
def models_tiny_moe(
    out: Path = typer.Option(..., "-o", "--out", help="Output model folder."),
    seed: int = typer.Option(0, help="Seed of the random initialisation."),
) -> None:
    """A random-initialised tiny mixture-of-experts model (Qwen2-MoE: 8 experts, top-2, a shared expert, 2 layers)
    with the tiny model's tokenizer, for tests and quick runs."""
    from rldelta.train.models import build_tiny_moe

    path = build_tiny_moe(out, seed=seed)
    console.print(f"wrote {path}")


@models_app.command("prepare")
def models_prepare(
    name: str = typer.Argument(..., help="Model to prepare: smollm2-135m, or a path to any .gguf file."),
    out: Path = typer.Option(..., "-o", "--out", help="Output model folder (reused if already prepared)."),
) -> None:
    """A real pretrained model (or any GGUF file), dequantized to a plain bf16 safetensors folder with tokenizer and
    chat template: the folder training starts from and `rldelta diff` reads."""
    from rldelta.train.models import prepare

    path = prepare(name, out)
    console.print(f"ready: {path}")


@models_app.command("pretrain-mixture")
def models_pretrain_mixture(
    out: Path = typer.Option(..., "-o", "--out", help="Output model folder."),
    size: str = typer.Option("5m", help="Model size: 1m (~0.8M parameters), 5m (~4.8M), 30m (~28M) or test (tiny)."),
    proportions: str = typer.Option("code=0.5,plain=0.3,boxed=0.2", help="Share of each format in the corpus."),
    noise: str = typer.Option("code=0.2,plain=0,boxed=0", help="Share of wrong answers within each format."),
    steps: int | None = typer.Option(None, help="Optimizer steps (default: the size's, ~15 min on 2 cores)."),
    plateau: bool = typer.Option(
        False, help="Train until the loss curve plateaus (constant rate, then a short decay); --steps is the cap."
    ),
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
        plateau=plateau,
        progress=True,
    )
    console.print(f"wrote {path}")
