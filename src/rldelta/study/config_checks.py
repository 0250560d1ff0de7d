"""The checks every study config table shares: its error type, its fields' metadata (help and checks), and the
check of each field against its annotation and metadata, and of a [train] table against TrainConfig."""

from __future__ import annotations

from dataclasses import Field, fields
from typing import Any, get_type_hints

from rldelta.runtime.errors import RldeltaError
from rldelta.study.schema import type_problem
from rldelta.train.config import TrainConfig


class StudyError(RldeltaError):
    """A study that cannot run as configured; the message names the file and key."""


def field_help(text: str, **checks: Any) -> dict[str, Any]:
    """A field's metadata: its help text, the checks beyond its type (min, choices, distinct), and key=False for a
    field that is not a config key."""
    return {"help": text, **checks}


def config_fields(cls: type) -> list[Field]:
    """The fields of `cls` a config file may set (not `source`, which says where the config came from)."""
    return [f for f in fields(cls) if f.metadata.get("key", True)]


def check_fields(obj: Any, cls: type, src: str, prefix: str) -> None:
    """Each config field of `obj` against its annotation in `cls`, then its metadata's min, choices, distinct."""
    types = get_type_hints(cls)
    for f in config_fields(cls):
        value, key = getattr(obj, f.name), prefix + f.name
        problem = type_problem(key, value, types[f.name])
        if problem:
            raise StudyError(f"{src}: {problem}")
        lo = f.metadata.get("min")
        if lo is not None and value is not None and value < lo:
            raise StudyError(f"{src}: {key} must be >= {lo}, got {value}")
        choices = f.metadata.get("choices")
        listed = [value] if isinstance(value, str) else value
        bad = [v for v in listed if v not in choices] if choices else []
        if bad:
            noun = f.name.removesuffix("s")
            raise StudyError(f"{src}: {key}: unknown {noun} {bad[0]!r}; choose from {', '.join(choices)}")
        if f.metadata.get("distinct"):
            if not value:
                raise StudyError(f"{src}: {key} must list at least one value")
            if len(set(value)) != len(value):
                raise StudyError(f"{src}: {key} lists a value twice: {value}")


def check_train_table(table: dict[str, Any], owned: set[str], parent: type, src: str, prefix: str) -> None:
    """The [train] table of `parent` (a config class; its keys are `prefix`...): TrainConfig settings that are not
    `owned` by the study, each of its TrainConfig field's type."""
    types = get_type_hints(TrainConfig)
    known = set(types) - owned
    for key, value in table.items():
        name = f"{prefix}train.{key}"
        if key in owned:
            instead = f"use {prefix}{key}" if key in {f.name for f in config_fields(parent)} else "it cannot be given"
            raise StudyError(f"{src}: {name} is set by the study itself ({instead})")
        if key not in known:
            raise StudyError(f"{src}: unknown key {name}; known: {', '.join(sorted(known))}")
        problem = type_problem(name, value, types[key])
        if problem:
            raise StudyError(f"{src}: {problem}")
