"""keep_freed_memory: a freed 256 MB block is reused instead of faulting in fresh pages. Each case runs in a process
of its own (the setting is process-wide), and the page faults of a second allocation are counted by the kernel.

The count depends on the machine: with transparent huge pages a fresh 128 MB block faults in as ~64 huge pages
instead of 32,768 small ones, too few to tell reuse from fresh memory. So the measuring process turns them off for
itself (prctl PR_SET_THP_DISABLE, Linux 3.15+); where it cannot and the kernel hands huge pages to every allocation
(/sys/kernel/mm/transparent_hugepage/enabled says [always]) the test is skipped with that reason. The expected
count of fresh faults follows from the machine's page size.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import ctypes, resource, sys, torch
thp_off = ctypes.CDLL(None, use_errno=True).prctl(41, 1, 0, 0, 0) == 0  # PR_SET_THP_DISABLE: small pages only
from rldelta.runtime.malloc import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
x = torch.ones(64 << 20)  # 256 MB, touched
del x
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
y = torch.ones(32 << 20)  # 128 MB: fits in the freed block, whatever alignment the allocator asks
print(applied, thp_off, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def _faults(mode: str) -> tuple[str, bool, int]:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True).stdout
    applied, thp_off, faults = out.split()
    return applied, thp_off == "True", int(faults)


def _huge_pages_always() -> bool:
    try:
        return "[always]" in THP.read_text()
    except OSError:  # no THP in this kernel
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_freed_block_is_reused_instead_of_faulted_in_again() -> None:
    applied, thp_off, kept = _faults("keep")
    _, _, default = _faults("default")
    if not thp_off and _huge_pages_always():
        pytest.skip(f"{THP} says [always] and PR_SET_THP_DISABLE failed: 128 MB faults in as a few dozen huge pages")
    fresh = (128 << 20) // os.sysconf("SC_PAGE_SIZE")  # one fault per fresh page
    assert applied == "True"
    assert default > fresh // 2
    assert kept < default / 20
