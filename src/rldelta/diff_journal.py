"""The diff's resume journal: the rows finished so far, and what they were computed from.

`OUT/.partial/identity.json` records the options, the tensor names and, per input file, its size, mtime, the
SHA-256 of its safetensors header and of a sample of its data; `OUT/.partial/rows.jsonl` holds one finished stored tensor per line: the JSON list of its rows
(one, or one per expert of a stacked experts tensor). A resume continues
only from a journal of the same identity: changed options start over, a changed input file is refused with one line
(a stale journal would report the old file's numbers as the new one's).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from rldelta.checkpoint import Checkpoint
from rldelta.runtime.atomic import atomic_write_bytes
from rldelta.runtime.errors import RldeltaError


class ResumeError(RldeltaError):
    """A journal that cannot be resumed from: corrupt, or computed from other input files."""


def input_fingerprint(ck: Checkpoint) -> dict[str, dict]:
    """What a diff is computed from, per file of `ck`: size, mtime, the SHA-256 of the safetensors header and the
    SHA-256 of a sample of the data.

    The header hash alone would miss a retrained checkpoint of the same shapes (its header is byte-identical);
    size and mtime catch that, unless the mtime was put back (`touch -r`, a copy that keeps times): the data sample
    catches a retrained file then, since training moves entries everywhere. The hash catches a file rewritten within
    the mtime's resolution.
    """
    out = {}
    for file in sorted({i.file for i in ck.infos.values()}):
        st = file.stat()
        out[str(file.resolve())] = {
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "header_sha256": _digest(file),
            "sample_sha256": _sample_digest(file, st.st_size),
        }
    return out


_SAMPLES, _SAMPLE_BYTES = 16, 4096  # 64 KiB read at fixed offsets, whatever the file's size


def _sample_digest(file: Path, size: int) -> str:
    """SHA-256 of _SAMPLES blocks of _SAMPLE_BYTES spread evenly over the file (the whole file if it is smaller)."""
    h = hashlib.sha256()
    with open(file, "rb") as f:
        if size <= _SAMPLES * _SAMPLE_BYTES:
            h.update(f.read())
            return h.hexdigest()
        step = (size - _SAMPLE_BYTES) // (_SAMPLES - 1)
        for i in range(_SAMPLES):
            f.seek(i * step)
            h.update(f.read(_SAMPLE_BYTES))
    return h.hexdigest()


_EDGE = 1 << 20  # a pickled file has no header: its first and last MiB stand in for one


def _digest(file: Path) -> str:
    """SHA-256 of a safetensors file's header; of the first and last MiB of any other file (pickled .bin)."""
    size = file.stat().st_size
    h = hashlib.sha256()
    with open(file, "rb") as f:
        first = f.read(8)
        n = int.from_bytes(first, "little") if len(first) == 8 else -1
        if file.suffix == ".safetensors" and 0 < n <= size - 8:
            h.update(f.read(n))
            return h.hexdigest()
        f.seek(0)
        h.update(f.read(_EDGE))
        if size > 2 * _EDGE:
            f.seek(size - _EDGE)
        h.update(f.read(_EDGE))
    return h.hexdigest()


class Journal:
    """Rows finished so far, one JSON line each, and the options and input files they were computed with."""

    def __init__(self, partial: Path, identity: dict, resume: bool, columns: list[str]):
        self.dir = partial
        self.rows_file = partial / "rows.jsonl"
        ident_file = partial / "identity.json"
        self.rows: dict[str, dict] = {}
        old = _read_identity(ident_file) if resume else None
        if old is not None and old.get("inputs") != identity["inputs"]:
            raise ResumeError(_changed_input(old.get("inputs"), identity["inputs"]))
        if old == identity:
            self.rows = _read_rows(self.rows_file, set(columns))
        else:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            atomic_write_bytes(ident_file, json.dumps(identity).encode())
            self.rows_file.touch()
        self._f = open(self.rows_file, "a")

    def forget(self) -> None:
        self.rows = {}
        self.rows_file.write_text("")

    def add(self, rows: list[dict]) -> None:
        """The rows of one stored tensor (one per expert of a stacked experts tensor), as one line."""
        self._f.write(json.dumps(rows) + "\n")
        self._f.flush()
        self.rows[rows[0]["name"]] = rows

    def close(self) -> None:
        self._f.close()


def _read_identity(path: Path) -> dict | None:
    """The journal's record of what it was computed from; None where there is none to resume."""
    if not path.is_file():
        return None
    try:
        ident = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        ident = None
    if not isinstance(ident, dict):
        raise ResumeError(f"{path}: corrupt resume journal; run again without --resume to start over")
    return ident


def _changed_input(old: dict | None, new: dict) -> str:
    if not old:
        return "--resume: the journal does not record its input files (an older rldelta); run again without --resume"
    for side in ("base", "tuned"):
        before, now = old.get(side) or {}, new[side]
        for file in sorted(set(before) | set(now)):
            if before.get(file) != now.get(file):
                what = "is new" if file not in before else "is gone" if file not in now else "changed"
                return (
                    f"--resume: {file} {what} since the interrupted run (size, mtime, header or data differ); "
                    f"run again without --resume to start over"
                )
    return "--resume: the inputs changed since the interrupted run; run again without --resume to start over"


def _read_rows(path: Path, columns: set[str]) -> dict[str, list[dict]]:
    rows = {}
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            try:
                group = json.loads(line)
            except json.JSONDecodeError:
                break  # the line being written when the run was interrupted
            if not _is_group(group, columns):
                break  # not a line this code wrote: recompute from here on
            rows[group[0]["name"]] = group
    return rows


def _is_group(group, columns: set[str]) -> bool:
    """One stored tensor's rows: a non-empty list of rows of the right columns, all of one name."""
    if not isinstance(group, list) or not group:
        return False
    if not all(isinstance(r, dict) and set(r) == columns for r in group):
        return False
    return len({r["name"] for r in group}) == 1
