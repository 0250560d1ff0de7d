"""Hub ids (`org/name`, `org/name@revision`) resolved to a local snapshot folder through `huggingface_hub`.

The local cache is looked at first (no network); only when the id is not cached, and `HF_HUB_OFFLINE` is not set,
is the hub asked, and then only for the weight files and `config.json` (safetensors when the repo has them,
pickled weights otherwise). `HF_HUB_CACHE` / `HF_HOME` / `HF_HUB_OFFLINE` are read at each call, not when
huggingface_hub was imported, so a caller (or a test) may set them late.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from rldelta.checkpoint.info import CheckpointError
from rldelta.runtime.errors import missing

HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@(?P<rev>[\w./-]+))?$")
WEIGHT_PATTERNS = [
    "config.json",
    "*.safetensors",
    "*.safetensors.index.json",
    "*.bin",
    "*.bin.index.json",
    "*.pt",
    "*.pth",
]
_NOT_WEIGHTS = re.compile(r"(^|/)(training_args|optimizer|scheduler|scaler|rng_state[^/]*)\.(bin|pt|pth)$")


def parse_hub_id(spec: str) -> tuple[str, str | None] | None:
    """(repo, revision) of `org/name[@rev]`, or None when `spec` is not spelled like a hub id."""
    m = HUB_ID.match(spec)
    return (m.group("repo"), m.group("rev")) if m else None


def cache_dir() -> Path:
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):  # the second is huggingface_hub's older spelling
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def choose_weight_files(files: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """Of a repo's (file, size) list, the ones a diff reads: config.json and the safetensors weights, or the
    pickled ones where the repo has no safetensors (never both: that would fetch the model twice)."""
    top = [(f, s) for f, s in files if "/" not in f]  # sub-folders hold other variants (onnx/, original/, ...)
    st = [(f, s) for f, s in top if f.endswith((".safetensors", ".safetensors.index.json"))]
    pk = [
        (f, s) for f, s in top if f.endswith((".bin", ".pt", ".pth", ".bin.index.json")) and not _NOT_WEIGHTS.search(f)
    ]
    return [(f, s) for f, s in top if f == "config.json"] + (st or pk)


def cached_snapshot(repo: str, revision: str | None) -> Path | None:
    """The cached snapshot folder of `repo` at `revision` (default: main), without any network; None if absent."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = snapshot_download(
            repo, revision=revision, allow_patterns=WEIGHT_PATTERNS, cache_dir=cache_dir(), local_files_only=True
        )
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError):
        return None
    return Path(path)


@dataclass
class FetchPlan:
    """What resolving one checkpoint spelling needs: nothing (local or cached), a download, or it cannot."""

    spec: str
    status: str  # "local", "cached", "fetch" or "not available"
    path: Path | None = None
    files: list[tuple[str, int]] = field(default_factory=list)
    reason: str = ""

    @property
    def bytes(self) -> int:
        return sum(s for _, s in self.files)


def plan(spec: str) -> FetchPlan:
    """How `spec` would be resolved, asking the hub (for the file list and sizes) only when it is not cached."""
    if Path(spec).exists():
        return FetchPlan(spec, "local", path=Path(spec))
    parsed = parse_hub_id(spec)
    if parsed is None:
        return FetchPlan(spec, "not available", reason=missing(spec))
    repo, rev = parsed
    snap = cached_snapshot(repo, rev)
    if snap is not None:
        return FetchPlan(spec, "cached", path=snap)
    where = f"not a local path, and not in the hub cache {cache_dir()}"
    if offline():
        return FetchPlan(spec, "not available", reason=f"{spec}: {where} (HF_HUB_OFFLINE=1)")
    try:
        from huggingface_hub import HfApi

        info = HfApi().model_info(repo, revision=rev, files_metadata=True)
        files = choose_weight_files([(s.rfilename, s.size or 0) for s in info.siblings or []])
    except Exception as e:  # noqa: BLE001 - any failure to reach or read the hub means "not reachable", in one line
        reason = (str(e).splitlines() or [e.__class__.__name__])[0][:200]
        return FetchPlan(spec, "not available", reason=f"{spec}: {where}, and the hub is not reachable ({reason})")
    if not any(f != "config.json" for f, _ in files):
        return FetchPlan(spec, "not available", reason=f"{spec}: the hub repo holds no safetensors or pickled weights")
    return FetchPlan(spec, "fetch", files=files)


def human_size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # unreachable


def resolve_checkpoint(spec: str | os.PathLike) -> Path:
    """A local path as it is (a local path always wins over a hub id of the same spelling); a hub id as its
    cached snapshot, downloading the weights first if needed (the total size is printed before the progress bars).
    """
    p = plan(str(spec))
    if p.status in ("local", "cached"):
        return p.path
    if p.status == "not available":
        raise CheckpointError(p.reason)
    from huggingface_hub import snapshot_download

    repo, rev = parse_hub_id(str(spec))
    print(f"{spec}: fetching {len(p.files)} files, {human_size(p.bytes)}", file=sys.stderr)
    try:
        path = snapshot_download(
            repo, revision=rev, allow_patterns=[f for f, _ in p.files], cache_dir=cache_dir(), local_files_only=False
        )
    except Exception as e:  # noqa: BLE001 - a failed download of any kind is one line naming the id
        raise CheckpointError(f"{spec}: download failed ({(str(e).splitlines() or [''])[0][:200]})") from None
    return Path(path)
