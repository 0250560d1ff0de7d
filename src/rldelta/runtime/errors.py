"""The one error type rldelta raises for input a user can fix (the CLI turns it into a one-line message), and the
wording of the commonest one: a path that cannot be opened."""

from __future__ import annotations

import errno
import os
from pathlib import Path


class RldeltaError(Exception):
    """Bad input or an unusable file: the message names the file, tensor or key, and says what was expected.

    Every module's own error (CheckpointError, DiffError, ...) derives from this one, so a caller catches one type.
    Not a ValueError: a ValueError is left to programming errors (a function called with arguments no input can
    produce), so the CLI turns only a user's mistake into a one-line message and a bug still shows its traceback.
    """


def missing(path: str | os.PathLike) -> str:
    """The one-line reason a path named as input cannot be opened: `PATH: no such file or directory`, or what it is
    instead when that is the trouble (a symbolic link loop, a link to nothing)."""
    try:
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return f"{path}: a symbolic link loop ({e.strerror})"
        if os.path.islink(path):
            return f"{path}: a symbolic link to {os.readlink(path)}, which does not exist"
    return f"{path}: no such file or directory"


def resolved(path: str | os.PathLike) -> Path:
    """`Path(path).resolve()`, with a symbolic link loop as a one-line RldeltaError instead of a traceback."""
    try:
        return Path(path).resolve()
    except (RuntimeError, OSError):  # a loop: RuntimeError up to Python 3.12, OSError (ELOOP) from 3.13
        raise RldeltaError(f"{path}: a symbolic link loop; choose another path") from None
