"""The one error type rldelta raises for input a user can fix; the CLI turns it into a one-line message."""

from __future__ import annotations


class RldeltaError(ValueError):
    """Bad input or an unusable file: the message names the file, tensor or key, and says what was expected.

    Every module's own error (CheckpointError, DiffError, ...) derives from this one, so a caller catches one type.
    A ValueError, because that is what these are: an argument or a file's content has the wrong value.
    """
