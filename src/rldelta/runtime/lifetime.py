"""Worker processes die with their parent, however the parent dies (kill -9 included).

A pool tears its workers down on every exit path Python sees (an exception, Ctrl-C, a normal end), but a SIGKILL
of the parent runs no Python at all: its workers would go on holding hundreds of MB, the output folder's lock
(a forked worker shares the parent's flock) and their half-done work, colliding with the next run. So every worker
calls `die_with_parent()` first: on Linux the kernel then sends it SIGKILL when the parent goes
(prctl PR_SET_PDEATHSIG); elsewhere a daemon thread notices the parent's pid change and exits.

Processes this one does not start itself cannot be told so: a local Ray's raylet starts its dashboard and runtime-env
agents, which outlive a killed driver by a minute (they notice the raylet's death, then wait out a GCS timeout).
`descendants_die_with_me()` covers those: a small watcher process that notes this process's descendants while the
block runs and kills them should this process die inside it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

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


# The watcher: every second it notes the descendants of the process it watches; when the pipe from that process ends
# without the word to stop (the process died), it kills what it noted (psutil's kill checks a pid still names the
# process it noted, so a reused pid is never hit).
_WATCHER = """
import select, sys, psutil
me, watched, seen = psutil.Process(), psutil.Process(int(sys.argv[1])), {}
while True:
    try:
        seen.update((p.pid, p) for p in watched.children(recursive=True) if p.pid != me.pid)
    except psutil.NoSuchProcess:
        break
    if select.select([sys.stdin], [], [], 1.0)[0]:
        if sys.stdin.read(1) == "q":
            sys.exit(0)
        break
for p in seen.values():
    try:
        p.kill()
    except psutil.Error:
        pass
"""


@contextlib.contextmanager
def descendants_die_with_me() -> Iterator[None]:
    """For the block: should this process die inside it (kill -9 included), every process it started, and every
    process those started, is killed within about a second. A normal exit from the block leaves them alone."""
    watcher = subprocess.Popen(
        [sys.executable, "-c", _WATCHER, str(os.getpid())], stdin=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            watcher.stdin.write("q")
            watcher.stdin.close()
        watcher.wait()
