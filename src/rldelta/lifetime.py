"""Worker processes die with their parent, however the parent dies (kill -9 included).

A pool tears its workers down on every exit path Python sees (an exception, Ctrl-C, a normal end), but a SIGKILL
of the parent runs no Python at all: its workers would go on holding hundreds of MB, the output folder's lock
(a forked worker shares the parent's flock) and their half-done work, colliding with the next run. So every worker
calls `die_with_parent()` first: on Linux the kernel then sends it SIGKILL when the parent goes
(prctl PR_SET_PDEATHSIG); elsewhere a daemon thread notices the parent's pid change and exits.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_POLL_S = 0.5


def die_with_parent() -> None:
    """Make this process end when its parent does. Call it first thing in a worker (a pool's initializer)."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            ok = libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
        except (OSError, AttributeError):
            ok = False
        if ok:
            if os.getppid() != parent:  # the parent died before prctl took effect: the signal will never come
                os._exit(1)
            return
    threading.Thread(target=_watch, args=(parent,), name="die-with-parent", daemon=True).start()


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(_POLL_S)
    os._exit(1)
