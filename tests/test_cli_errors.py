"""The one place the CLI turns errors into a line: an RldeltaError (a user's mistake) and an OSError (the
machine's answer) end as one `error:` line and exit 2, from any command; a programming error is not hidden."""

from __future__ import annotations

import errno

import pytest
import typer
from typer.testing import CliRunner

from rldelta.cli.app import one_line_errors
from rldelta.runtime.errors import RldeltaError


def _app(error: BaseException) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    def boom(out: str = typer.Option("OUT", "-o")) -> None:
        raise error

    @app.command()
    def other() -> None:  # a second command, so that typer keeps the command names
        pass

    one_line_errors(app)
    return app


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (
            RldeltaError("x.safetensors: tensor w: shape (2,) vs (3,)"),
            "error: x.safetensors: tensor w: shape (2,) vs (3,)",
        ),
        (OSError(errno.ENOSPC, "No space left on device"), "error: OUT: No space left on device"),
        (PermissionError(errno.EACCES, "Permission denied", "/ro/out"), "error: /ro/out: Permission denied"),
    ],
)
def test_user_and_machine_errors_are_one_line(error, line) -> None:
    r = CliRunner().invoke(_app(error), ["boom"])
    assert r.exit_code == 2 and r.output.strip() == line


def test_a_programming_error_is_not_turned_into_a_line() -> None:
    r = CliRunner().invoke(_app(ValueError("a bug")), ["boom"])
    assert r.exit_code == 1 and isinstance(r.exception, ValueError)


def test_rldelta_error_is_not_a_value_error() -> None:
    assert not issubclass(RldeltaError, ValueError)
