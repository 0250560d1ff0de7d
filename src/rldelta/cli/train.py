"""`rldelta train`: one RL (or SFT) run of a model on a task; checkpoints for `rldelta diff`.

Its options are generated from `TrainConfig`'s fields (their type, and the help written once on each field), the way
TRL's argument parser and mergekit's option decorator read theirs off a config class: every field is an option, and
`--config FILE.toml` and `--set key=value` give any of them from a file or as text. An option given on the command
line wins over --set, which wins over the file; a setting given nowhere takes the field's default, or on --resume
the run's own.
"""

from __future__ import annotations

import inspect
import tomllib
import types
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any, Optional

import typer

from rldelta.cli.app import app, console
from rldelta.train.config import ConfigError, TrainConfig, help_of  # light (no torch): the options are read off it

# Option names that differ from the field's (--field-name): the names the command line has always had.
FLAGS = {"output": ("-o", "--out"), "record_patches": ("--patches",)}
# Help added to a field's own where the command line says more.
MORE_HELP = {"model": " Required unless --resume."}
_HELP_DICT = "KEY=VALUE (repeatable): {}"


def _annotation(tp: Any) -> Any:
    """The option's type: the field's, optional (None = not given); a dict field is a list of KEY=VALUE texts."""
    union = typing.get_origin(tp) in (typing.Union, types.UnionType)
    base = next(a for a in typing.get_args(tp) if a is not type(None)) if union else tp
    if typing.get_origin(base) is dict or base is dict:
        return Optional[list[str]]  # noqa: UP045 (typer reads typing.Optional of a runtime type)
    return Optional[base]  # noqa: UP045


def _option(f, tp: Any) -> typer.models.OptionInfo:
    name = f.name.replace("_", "-")
    help_text = help_of(TrainConfig, f.name) + MORE_HELP.get(f.name, "")
    if typing.get_origin(tp) is dict or tp is dict:
        return typer.Option(None, f"--{name}", help=_HELP_DICT.format(help_text))
    if tp is bool and f.name not in FLAGS:
        return typer.Option(None, f"--{name}/--no-{name}", help=help_text)
    return typer.Option(None, *FLAGS.get(f.name, (f"--{name}",)), help=help_text)


def train_options() -> list[inspect.Parameter]:
    """One keyword parameter per TrainConfig field, as typer reads a command's signature."""
    hints = typing.get_type_hints(TrainConfig)
    return [
        inspect.Parameter(
            f.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=_option(f, hints[f.name]),
            annotation=_annotation(hints[f.name]),
        )
        for f in fields(TrainConfig)
    ]


def _value(text: str) -> Any:
    """A --set value as TOML reads it (3e-6, true, "a,b", [1, 2]); anything else as the text itself."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _pairs(items: list[str], what: str) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{what} {item!r}: expected KEY=VALUE")
        out[key.strip()] = _value(text.strip())
    return out


def settings(config: Path | None, sets: list[str] | None, given: dict[str, Any]) -> dict[str, Any]:
    """The run's settings from the file, then --set, then the options given (None = not given)."""
    merged: dict[str, Any] = {}
    if config is not None:
        try:
            merged.update(tomllib.loads(config.read_text()))
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{config}: not valid TOML ({e})") from None
    merged.update(_pairs(sets or [], "--set"))
    for name, value in given.items():
        if value is None:
            continue
        merged[name] = _pairs(value, "--extra") if isinstance(value, list) else value
    return {k: str(v) if isinstance(v, Path) else v for k, v in merged.items()}


def train_(
    config: Path | None = typer.Option(None, "--config", help="A TOML file of TrainConfig settings (field = value)."),
    set_: list[str] | None = typer.Option(None, "--set", help="FIELD=VALUE (repeatable): any TrainConfig setting."),
    **given: Any,
) -> None:
    """Train MODEL on a task with a TRL algorithm; checkpoints under OUT/checkpoints/step-N/ for `rldelta diff`."""
    from rldelta.train.config import make_config
    from rldelta.train.trainers import train

    chosen = settings(config, set_, given)
    output = chosen.pop("output", None)
    if output is None:
        raise ConfigError("-o/--out (the run directory) is required")
    resume = bool(chosen.pop("resume", False))
    try:
        run_dir = train(make_config(output, resume=resume, **chosen))
    except KeyboardInterrupt:
        console.print(f"interrupted; complete checkpoints are kept in {output}/checkpoints (continue with --resume)")
        raise typer.Exit(130) from None
    console.print(f"done: {run_dir}/checkpoints")


train_.__signature__ = inspect.Signature(
    [p for p in inspect.signature(train_).parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    + train_options()
)
app.command("train")(train_)

__all__ = ["FLAGS", "settings", "train_options"]
