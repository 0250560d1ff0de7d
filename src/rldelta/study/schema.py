"""Type checks of config values against a dataclass's own annotations, so the dataclass is the config's one schema.

TOML has four scalar types and the checks follow them strictly: a boolean is `true`/`false` (not 0/1, not a
string), an integer is not a boolean or a float, a number (float) may be written as an integer, and a list is
checked element by element. Values are only checked, never converted: what the user wrote is what gets hashed.
"""

from __future__ import annotations

import types
import typing
from typing import Any, get_args, get_origin


def conforms(value: Any, tp: Any) -> bool:
    """Whether `value`, as TOML (or a config dict) gives it, is of type `tp`."""
    if tp is Any:
        return True
    if tp is type(None):
        return value is None
    origin = get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        return any(conforms(value, t) for t in get_args(tp))
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin is list:
        (item,) = get_args(tp) or (Any,)
        return isinstance(value, list) and all(conforms(v, item) for v in value)
    if origin is dict:
        key, item = get_args(tp) or (Any, Any)
        return isinstance(value, dict) and all(conforms(k, key) and conforms(v, item) for k, v in value.items())
    raise TypeError(f"no config check for the type {tp!r}")  # a field of a type this module does not know


def describe(tp: Any) -> str:
    """What a value of type `tp` looks like, in TOML's words: 'an integer', 'true or false', 'a list of strings'."""
    if tp is Any:
        return "any value"
    origin = get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        given = [t for t in get_args(tp) if t is not type(None)]
        text = " or ".join(describe(t) for t in given)
        return f"{text} (or left out)" if len(given) < len(get_args(tp)) else text
    if origin is list:
        (item,) = get_args(tp) or (Any,)
        return f"a list of {_plural(item)}"
    if origin is dict:
        _, item = get_args(tp) or (Any, Any)
        return "a table" if item is Any else f"a table of {_plural(item)}"
    return _SCALARS[tp]


_SCALARS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
_PLURALS = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}


def _plural(tp: Any) -> str:
    return _PLURALS.get(tp) or f"values that are {describe(tp)}"


def type_problem(key: str, value: Any, tp: Any) -> str | None:
    """`None` when `value` is of type `tp`, else the message's tail: "KEY must be EXPECTED, got VALUE"."""
    if conforms(value, tp):
        return None
    return f"{key} must be {describe(tp)}, got {value!r}"
