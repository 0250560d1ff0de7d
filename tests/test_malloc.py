"""keep_freed_memory: a freed 256 MB block is reused instead of faulting in fresh pages. Each case runs in a process
of its own (the setting is process-wide), and the page faults of a second allocation are counted by the kernel."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import resource, sys, torch
from rldelta.malloc import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
x = torch.ones(64 << 20)  # 256 MB, touched
del x
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
y = torch.ones(32 << 20)  # 128 MB: fits in the freed block, whatever alignment the allocator asks
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True).stdout
    applied, faults = out.split()
    return applied, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_freed_block_is_reused_instead_of_faulted_in_again() -> None:
    applied, kept = _faults("keep")
    _, default = _faults("default")
    assert applied == "True"
    assert default > 15_000  # 128 MB of fresh 4 KiB pages (fewer where the kernel hands out huge pages)
    assert kept < default / 20
