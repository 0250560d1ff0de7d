"""The `rldelta` command line: parse, call one library function, print. No computation lives here.

One module per group of commands; each registers its commands on the one typer `app` (cli/app.py) when imported,
so importing them here is what puts them on the command line.
"""

from __future__ import annotations

import importlib
import sys

from rldelta.cli.app import app, one_line_os_errors

# The order of `rldelta --help`: the weights' commands, the published pairs, masks, training and its steps,
# surgery, probes, the study.
COMMAND_MODULES = ("weights", "reproduce", "predict", "masks", "training", "steps", "surgery", "probes", "study")
for _module in COMMAND_MODULES:
    importlib.import_module(f"rldelta.cli.{_module}")
one_line_os_errors(app)  # after every command is registered

__all__ = ["app", "main"]


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
