"""The `rldelta` command line: parse, call one library function, print. No computation lives here.

One module per command (or command group), named after it; each registers on the one typer `app` (cli/app.py) when
imported, so importing them here is what puts them on the command line.
"""

from __future__ import annotations

import importlib
import sys

from rldelta.cli.app import app, one_line_errors

# The order of `rldelta --help`: the weights' commands, the published pairs, masks, training and its steps,
# surgery, probes, the study.
COMMAND_MODULES = (
    "diff",
    "selfcheck",
    "overlap",
    "explain",
    "reproduce",
    "predict",
    "mask",
    "models",
    "eval",
    "train",
    "steps",
    "surgery",
    "probe",
    "study",
)
for _module in COMMAND_MODULES:
    importlib.import_module(f"rldelta.cli.{_module}")
one_line_errors(app)  # after every command is registered

__all__ = ["app", "main"]


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
