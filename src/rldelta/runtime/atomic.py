"""Outputs appear whole or not at all: files through a temp file and a rename, folders through a scratch
folder that is swapped into place. A reader (or a resumed run) never finds half an output."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write a file so that readers see either the old or the complete new content."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk must not leave half a file behind either
        raise


def json_safe(x):
    """NaN/inf become null so that every JSON reader accepts the file."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    """JSON (non-finite floats as null, other objects through str) with a trailing newline."""
    atomic_write_bytes(path, (json.dumps(json_safe(obj), indent=2, default=str) + "\n").encode())


def atomic_write_parquet(rows, path: str | os.PathLike, schema: pa.Schema | None = None) -> None:
    """`rows`: a list of dicts, a pyarrow Table or a pandas DataFrame (its index is not written)."""
    if isinstance(rows, pa.Table):
        table = rows
    elif isinstance(rows, list):
        table = pa.Table.from_pylist(rows, schema=schema)
    else:
        table = pa.Table.from_pandas(rows, schema=schema, preserve_index=False)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    atomic_write_bytes(path, buf.getvalue())


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike) -> Iterator[Path]:
    """A scratch folder beside OUT, swapped onto OUT when the block succeeds and removed when it fails.

    Whether an existing OUT may be replaced is the caller's decision, checked before entering.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        _default_permissions(tmp)
        if out.exists():  # swap, so that OUT is never missing while the new one moves in
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_scratch(out: str | os.PathLike) -> None:
    """Remove the scratch folders an interrupted `atomic_dir(out)` left beside OUT (a kill -9 runs no cleanup).

    Only for a caller that holds OUT's lock (rldelta.runtime.lock): another writer's scratch folder would look the same.
    """
    out = Path(out)
    for pattern in (f".{out.name}.tmp-*", f".{out.name}.old-*"):
        for stale in out.parent.glob(pattern):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)


def atomic_dir_over(out: str | os.PathLike, marker: str, error: type[Exception], kind: str):
    """`atomic_dir(out)`, after checking that an existing OUT is empty or holds `marker` (an earlier output of this
    `kind`), so a mistyped path (a model's own folder, say) is never wiped; `error` is raised otherwise."""
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise error(f"{out}: exists and is not a directory")
        if any(out.iterdir()) and not (out / marker).is_file():
            raise error(f"{out}: directory is not empty and is not {kind}; choose another output folder")
    return atomic_dir(out)


def _default_permissions(folder: Path) -> None:
    """mkdtemp makes a 0700 folder; give it (and its files) the modes a plain mkdir/open would have."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for f in folder.iterdir():
        if f.is_file():
            f.chmod(0o666 & ~umask)
