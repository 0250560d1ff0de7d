"""One writer per output folder: an advisory lock file beside OUT that names its holder (pid, host, command, start).

Why `fcntl.flock` and not `os.open(O_CREAT | O_EXCL)` plus a pid check: the kernel drops a flock the moment its
holder dies, however it dies (kill -9, OOM killer, a lost node), so a dead holder can never keep the lock and no pid
has to be trusted. A pid check would be wrong twice over: pids are reused (a new, unrelated process with the old
pid would keep a dead run's lock forever), and the pid of a holder on another host of a shared file system cannot be
checked at all (Linux carries flock over NFS as a byte-range lock, which the server arbitrates).

The file lives beside OUT (`.OUT.lock` in OUT's parent), not inside it, because some writers (surgery) swap a
whole new folder into OUT's place. Its content is only for the messages: who holds the lock, and, when a new
holder finds the content of an earlier one (which a clean release removes), whose lock it took over.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import inspect
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from rldelta.runtime.errors import RldeltaError, resolved

# Folders this process holds, with how many nested holders: a writer that calls another writer on the same OUT
# (the study's stages) must not lock itself out.
_HELD: dict[Path, int] = {}


class LockError(RldeltaError):
    """Another process is writing into the same output folder."""


def lock_path(out: str | os.PathLike) -> Path:
    """Where the lock of output folder OUT lives."""
    out = resolved(out)
    return out.with_name(f".{out.name}.lock")


def _describe(holder: dict) -> str:
    if not holder:
        return "a process that is still starting"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return f"pid {holder.get('pid')} on {holder.get('host')}, `{holder.get('command')}`, since {started}"


def _read(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 65536)
    try:
        holder = json.loads(raw) if raw.strip() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {"pid": "?", "host": "?", "command": raw[:80].decode(errors="replace"), "started": 0}
    return holder if isinstance(holder, dict) else {}


def _acquire(out: Path, command: str) -> int:
    path = lock_path(out)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):  # the OS names only the file in the way, and says "File exists"
        blocker = next(p for p in path.parents if p.exists() and not p.is_dir())
        raise RldeltaError(f"{out}: {blocker} is a file, not a folder; choose another output folder") from None
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise LockError(
                f"{out}: another rldelta is writing here ({_describe(holder)}); wait for it, or choose another "
                f"output folder (lock: {path})"
            ) from None
        # The previous holder unlinks the file before it lets go; if that happened between our open and our flock,
        # we hold a lock on a file nobody else will ever open again: open the path afresh.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    previous = _read(fd)
    if previous:
        print(
            f"rldelta: {out}: took over the lock of {_describe(previous)}, which is gone (its run was interrupted)",
            file=sys.stderr,
        )
    me = {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "started": time.time()}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(me).encode())
    return fd


@contextlib.contextmanager
def output_lock(out: str | os.PathLike, command: str) -> Iterator[None]:
    """Hold OUT's lock for the block; raise LockError (one line naming the holder) if another process holds it."""
    key = resolved(out)
    if _HELD.get(key):
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    fd = _acquire(key, command)
    _HELD[key] = 1
    try:
        yield
    finally:
        del _HELD[key]
        with contextlib.suppress(OSError):
            os.unlink(lock_path(key))  # while still holding it: see the inode check in _acquire
        os.close(fd)


def locks_output(command: str, out: Callable[[dict], str | os.PathLike] | str = "out") -> Callable:
    """Decorator: the function writes into the folder named by its argument `out` (or `out(arguments)`), and holds
    that folder's lock while it runs."""

    def decorate(fn: Callable) -> Callable:
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            folder = bound.arguments[out] if isinstance(out, str) else out(bound.arguments)
            argv = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:200] if sys.argv else ""
            with output_lock(folder, f"{command} ({argv})" if argv else command):
                return fn(*args, **kwargs)

        return wrapper

    return decorate
