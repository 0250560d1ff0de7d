"""Measuring one command as its own process tree: wall time, peak RSS of the tree, CPU time; a cold page cache.

Peak RSS is the largest sum of RSS over the tree (parent plus workers), sampled every 20 ms; CPU time is user +
system of the tree, from `os.wait4` (the kernel adds every descendant the command itself waited for, as a process
pool's workers are). Each command runs in its own session, so a timeout or a Ctrl-C ends exactly that tree.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

# `rldelta` as this interpreter runs it (PYTHONPATH included): rldelta.cli is a package without a __main__.
RLDELTA = [sys.executable, "-c", "import sys; sys.argv[0] = 'rldelta'; from rldelta.cli import main; main()"]

RAW_READ = r"""
import sys, glob
n = 0
for d in sys.argv[1:]:
    for f in sorted(glob.glob(d + "/*.safetensors")):
        with open(f, "rb", buffering=0) as fh:
            while chunk := fh.read(1 << 24):
                n += len(chunk)
print(n)
"""

# Before a measured command, after the page cache was dropped: the interpreter and torch come back into memory
# (as for a user whose Python ran a moment ago), so only the checkpoint's bytes are read from the disk.
WARM_CODE = [sys.executable, "-c", "import rldelta.cli"]
DROP_CACHES = Path("/proc/sys/vm/drop_caches")


@dataclass
class Measured:
    wall: float  # seconds
    peak_rss: int  # bytes, summed over the tree
    cpu: float  # user + system seconds of the tree
    returncode: int
    stderr: str  # its last 4000 characters
    timed_out: bool = False

    def check(self, what: str) -> Measured:
        if self.timed_out:
            raise SystemExit(f"{what}: still running after {self.wall:.0f} s, stopped")
        if self.returncode != 0:
            raise SystemExit(f"{what} failed (exit {self.returncode}):\n{self.stderr}")
        return self


def measure(cmd: list[str], env: dict[str, str] | None = None, timeout: float | None = None) -> Measured:
    """Run `cmd` to its end (or `timeout` seconds), sampling the RSS of its process tree."""
    with tempfile.TemporaryFile() as err:  # a file, not a pipe: a long progress log cannot fill it and stall
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env, start_new_session=True)
        root = psutil.Process(proc.pid)
        peak, timed_out = 0, False
        try:
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                try:
                    procs = [root, *root.children(recursive=True)]
                    peak = max(peak, sum(p.memory_info().rss for p in procs if p.is_running()))
                except psutil.Error:
                    pass
                if timeout is not None and time.perf_counter() - t0 > timeout:
                    timed_out = True
                    os.killpg(proc.pid, signal.SIGKILL)
                    pid, status, usage = os.wait4(proc.pid, 0)
                    break
                time.sleep(0.02)
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4 above; Popen must not wait again
        err.seek(0)
        tail = err.read().decode(errors="replace")[-4000:]
    return Measured(wall, peak, usage.ru_utime + usage.ru_stime, proc.returncode, tail, timed_out)


def cold_cache(dirs: list[Path]) -> str:
    """Evict the files under `dirs` from the page cache; returns how (the benchmark prints it).

    posix_fadvise(DONTNEED) works unprivileged but only on clean pages, hence the sync first; as root the whole
    cache is dropped as well, and the interpreter's own files are read back in before the measured command.
    """
    os.sync()
    for d in dirs:
        for f in sorted(p for p in Path(d).rglob("*") if p.is_file()):
            fd = os.open(f, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
    if os.geteuid() != 0:
        return "posix_fadvise(DONTNEED) on every file of both sides (not root: no drop_caches)"
    try:
        DROP_CACHES.write_text("3\n")
    except OSError as e:
        return f"posix_fadvise(DONTNEED) on every file of both sides (drop_caches refused: {e.strerror})"
    subprocess.run(WARM_CODE, check=True)
    return "posix_fadvise(DONTNEED) on every file of both sides + drop_caches (then Python and torch re-read)"


def conditions() -> dict:
    """The machine as a measurement found it."""
    return {
        "cpu_count": os.cpu_count(),
        "affinity": sorted(os.sched_getaffinity(0)),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "python": sys.version.split()[0],
    }


def free_bytes(path: Path) -> int:
    p = Path(path)
    while not p.exists():
        p = p.parent
    return shutil.disk_usage(p).free


def gb(nbytes: float) -> float:
    return nbytes / 1e9


def mib(nbytes: float) -> float:
    return nbytes / 2**20
