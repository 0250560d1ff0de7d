"""The typer app every command module registers on, and the one way a command fails: a one-line error.

Every command is wrapped once (`one_line_errors`), so no command catches errors itself: an RldeltaError (input the
user can fix) ends as its one-line message, and an OSError (OUT exists as a file, a read-only file system, a full
disk, a missing permission: the machine's answer, not a bug) as one line naming the path; both exit 2, whichever
command and whichever library call raised them.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable

import typer
from rich.console import Console
from rich.markup import escape

from rldelta.runtime.errors import RldeltaError

app = typer.Typer(add_completion=False, no_args_is_help=True)
console = Console(stderr=True)


@app.callback()
def _root() -> None:
    """Measure and explain what RL fine-tuning changes in a language model's weights."""
    if not sys.stderr.isatty():
        # transformers' own bars ("Loading weights", "Writing model shards") redraw with carriage returns, noise in
        # a log; its progress switch starts from huggingface_hub's variable when it is imported, here as in every
        # worker process (they inherit it), and transformers is not imported yet at this point
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        # plain tqdm bars (transformers' GGUF conversion of `models prepare`) read their default from here
        os.environ.setdefault("TQDM_DISABLE", "1")


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print a one-line error and leave with a non-zero code (never a traceback for bad input)."""
    # escape: a message may hold brackets ("rldelta[ray]", a tensor's shape) that rich would read as markup
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)  # one line at any width
    raise typer.Exit(code)


def os_error_line(e: OSError, fallback: object = None) -> str:
    """`PATH: reason` for an OSError; the command's output folder stands in where the OS named no file (a write to
    a full disk reports only ENOSPC)."""
    reason = e.strerror or str(e) or e.__class__.__name__
    if e.filename is not None:
        where = f"{e.filename} -> {e.filename2}" if e.filename2 is not None else str(e.filename)
    elif fallback is not None:
        where = str(fallback)
    else:
        return reason
    return f"{where}: {reason}"


def _catching_errors(fn: Callable) -> Callable:
    @functools.wraps(fn)  # typer reads the parameters through __wrapped__
    def command(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RldeltaError as e:
            fail(str(e))
        except OSError as e:
            fail(os_error_line(e, kwargs.get("out") or kwargs.get("output")))

    return command


def one_line_errors(typer_app: typer.Typer) -> None:
    """Wrap every command registered on `typer_app` and its sub-apps (call once, after they are all registered)."""
    for info in typer_app.registered_commands:
        if info.callback is not None and not getattr(info.callback, "_errors_caught", False):
            info.callback = _catching_errors(info.callback)
            info.callback._errors_caught = True
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            one_line_errors(group.typer_instance)
