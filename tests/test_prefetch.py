"""Read-ahead: `Checkpoint.prefetch` asks the OS for exactly a tensor's bytes, and the diff asks for each tensor
before a worker reads it. The byte ranges are checked against the file's own bytes, read independently."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from rldelta.checkpoint import open_checkpoint
from rldelta.diff import run_diff

pytestmark = pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="no posix_fadvise on this OS")


def _advice(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int, int]]:
    seen: list[tuple[str, int, int]] = []
    real = os.posix_fadvise

    def spy(fd: int, offset: int, length: int, advice: int) -> None:
        assert advice == os.POSIX_FADV_WILLNEED
        seen.append((os.readlink(f"/proc/self/fd/{fd}"), offset, length))
        real(fd, offset, length, advice)

    monkeypatch.setattr(os, "posix_fadvise", spy)
    return seen


def _pair(tmp_path: Path) -> tuple[Path, Path, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    base = {
        "a.weight": torch.randn(48, 32, generator=g).bfloat16(),
        "b.weight": torch.randn(16, generator=g),
        "c.weight": torch.randn(8, 64, generator=g).half(),
    }
    tuned = {k: (v.float() + 0.01).to(v.dtype) for k, v in base.items()}
    for name, tensors in (("base", base), ("tuned", tuned)):
        (tmp_path / name).mkdir()
        save_file(tensors, tmp_path / name / "model.safetensors")
    return tmp_path / "base", tmp_path / "tuned", base


def test_prefetch_asks_for_exactly_the_tensors_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base, _, tensors = _pair(tmp_path)
    seen = _advice(monkeypatch)
    ck = open_checkpoint(base)
    raw = (base / "model.safetensors").read_bytes()
    for name, t in tensors.items():
        seen.clear()
        ck.prefetch(name)
        [(file, offset, length)] = seen
        assert Path(file) == (base / "model.safetensors").resolve()
        assert raw[offset : offset + length] == t.view(torch.uint8).numpy().tobytes()


def test_pickled_weights_are_not_advised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "m").mkdir()
    torch.save({"a.weight": torch.ones(4, 4)}, tmp_path / "m" / "pytorch_model.bin")
    seen = _advice(monkeypatch)
    open_checkpoint(tmp_path / "m").prefetch("a.weight")
    assert seen == []


@pytest.mark.parametrize("workers", [1, 2])
def test_the_diff_reads_every_tensor_ahead(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int) -> None:
    base, tuned, tensors = _pair(tmp_path)
    seen = _advice(monkeypatch)
    run_diff(base, tuned, tmp_path / "out", workers=workers)
    files = {Path(f).parent.name for f, _, _ in seen}
    assert files == {"base", "tuned"}
    # one process reads each tensor ahead of the one before it (the first is read as it comes); a pool, all of them
    assert len(seen) == 2 * (len(tensors) - 1 if workers == 1 else len(tensors))
