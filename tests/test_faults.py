"""Issue 17's fault corpus as tests: nothing silently wrong, nothing left running, every OS error in one line.

Five groups, each test able to fail on the code before the fix: (1) one writer per output folder, (2) a resume that
checks its inputs, (3) the typed study config (tests/test_study_config.py), (4) workers that die with their parent
and scratch folders cleaned, (5) OS errors, dtypes, NaN and output folders. `benchmarks/fault_corpus.py` runs the
same cases and more through the command line and counts the outcomes. Over 400 lines: one file for the
issue's corpus, so that its five groups can be read (and re-run) together.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import rldelta.diff as diff_mod
from conftest import write_checkpoint
from rldelta.cli import app
from rldelta.diff import DiffError, run_diff
from rldelta.diff_journal import ResumeError
from rldelta.runtime.lock import LockError, lock_path, output_lock

runner = CliRunner()
PROGRESS = re.compile(r"^\S+: \d+/\d+ done")  # the plain progress lines a command prints before it fails
SRC = str(Path(__file__).resolve().parents[1] / "src")
ENV = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _pair(tmp_path: Path, moved: float = 0.25, seed: int = 0) -> tuple[Path, Path]:
    g = torch.Generator().manual_seed(seed)
    base = {f"model.layers.{i}.mlp.up_proj.weight": torch.randn(32, 16, generator=g) for i in range(4)}
    tuned = {}
    for n, w in base.items():
        t = w.clone()
        pick = torch.rand(w.shape, generator=g) < moved
        t[pick] += 0.5
        tuned[n] = t
    return write_checkpoint(tmp_path / f"b{seed}", base), write_checkpoint(tmp_path / f"t{seed}", tuned)


def _one_line_error(r) -> str:
    """The CLI's failure: exit 2, no traceback, the message on one line."""
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    assert "Traceback" not in r.output and not isinstance(r.exception, (OSError, ValueError, TypeError))
    lines = [line for line in r.output.splitlines() if line.strip() and not PROGRESS.match(line)]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.output
    return lines[0]


def _holder(out: Path) -> subprocess.Popen:
    """Another process holding OUT's lock (until it is killed)."""
    code = (
        "import sys, time; from rldelta.runtime.lock import output_lock\n"
        f"with output_lock({str(out)!r}, 'holder'):\n    print('held', flush=True); time.sleep(60)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=ENV, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


# ---- 1. one writer per output folder ---------------------------------------------------------------------------


def test_second_writer_is_refused_naming_the_holder(tmp_path):
    b, t = _pair(tmp_path)
    out = tmp_path / "out"
    holder = _holder(out)
    try:
        with pytest.raises(LockError, match=f"pid {holder.pid} on .*`holder`"):
            run_diff(b, t, out)
        line = _one_line_error(runner.invoke(app, ["diff", str(b), str(t), "-o", str(out)]))
        assert f"pid {holder.pid}" in line and "another rldelta is writing here" in line
        assert not out.exists() or not any(out.iterdir())  # the refused run wrote nothing
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("writer", ["overlap", "surgery", "mask threshold", "mask combine", "mask file"])
def test_every_writer_takes_the_lock(tmp_path, writer):
    b, t = _pair(tmp_path)
    d1, d2 = tmp_path / "d1", tmp_path / "d2"
    run_diff(b, t, d1, save_mask=True)
    run_diff(b, t, d2, save_mask=True)
    out = tmp_path / "w"
    holder = _holder(out)  # a diff --save-mask into OUT, say
    args = {
        "overlap": ["overlap", str(d1), str(d2), "-o", str(out)],
        "surgery": ["surgery", "patch", str(b), str(t), "-m", str(d1), "-o", str(out)],
        "mask threshold": ["mask", "threshold", str(b), str(t), "-o", str(out)],
        "mask combine": ["mask", "combine", str(d1), str(d2), "--op", "and", "-o", str(out)],
        # OUT/mask.safetensors is the diff folder's mask: locked as that folder
        "mask file": ["mask", "random", str(d1), "-o", str(out / "mask.safetensors")],
    }[writer]
    try:
        assert f"pid {holder.pid}" in _one_line_error(runner.invoke(app, args))
        assert not (out / "mask.safetensors").exists()
    finally:
        holder.kill()
        holder.wait()


def test_explain_train_and_study_take_the_lock_before_anything_else(tmp_path):
    from types import SimpleNamespace

    from rldelta.explain import run_explain
    from rldelta.study import run_study
    from rldelta.train.trainers import train

    out = tmp_path / "w"
    holder = _holder(out)
    try:  # the inputs do not exist: a writer that looked at them before the lock would fail differently
        for call in (
            lambda: run_explain(tmp_path / "no-diff", tmp_path / "no-base", out),
            lambda: run_study(tmp_path / "no.toml", out),
            lambda: train(SimpleNamespace(output=str(out))),
        ):
            with pytest.raises(LockError, match=f"pid {holder.pid}"):
                call()
    finally:
        holder.kill()
        holder.wait()


def test_lock_of_a_killed_holder_is_taken_over(tmp_path, capsys):
    b, t = _pair(tmp_path)
    out = tmp_path / "out"
    holder = _holder(out)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert lock_path(out).is_file()  # kill -9 ran no cleanup
    summary = run_diff(b, t, out)
    assert summary["totals"]["tensors"] == 4
    assert f"took over the lock of pid {holder.pid}" in capsys.readouterr().err
    assert not lock_path(out).exists()  # released on return


def test_lock_is_reentrant_in_one_process(tmp_path):
    with output_lock(tmp_path / "x", "outer"), output_lock(tmp_path / "x", "inner"):
        assert lock_path(tmp_path / "x").is_file()
    assert not lock_path(tmp_path / "x").exists()


# ---- 2. resume checks its inputs -------------------------------------------------------------------------------


def _interrupted(b: Path, t: Path, out: Path) -> None:
    def stop(done, total, name):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_diff(b, t, out, save_mask=True, progress=stop)


def test_resume_across_a_replaced_input_is_refused(tmp_path):
    b, t = _pair(tmp_path)
    out = tmp_path / "out"
    _interrupted(b, t, out)
    # the tuned checkpoint replaced at the same path by one equal to the base: the truth is 0 changed entries
    (t / "model.safetensors").write_bytes((b / "model.safetensors").read_bytes())
    with pytest.raises(ResumeError, match=r"model\.safetensors changed since the interrupted run.*without --resume"):
        run_diff(b, t, out, save_mask=True, resume=True)
    line = _one_line_error(runner.invoke(app, ["diff", str(b), str(t), "-o", str(out), "--save-mask", "--resume"]))
    assert "without --resume" in line
    assert run_diff(b, t, out, save_mask=True)["totals"]["changed"] == 0  # starting over gives the truth


def test_resume_across_a_retrained_input_with_its_mtime_put_back_is_refused(tmp_path):
    b, t = _pair(tmp_path)
    out = tmp_path / "out"
    _interrupted(b, t, out)
    f = t / "model.safetensors"
    st = f.stat()
    # the same shapes (so the same header and size), other values, and the old mtime (as `touch -r` leaves it)
    _, other = _pair(tmp_path / "other", seed=1)
    f.write_bytes((other / "model.safetensors").read_bytes())
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert f.stat().st_size == st.st_size and f.stat().st_mtime_ns == st.st_mtime_ns
    with pytest.raises(ResumeError, match=r"model\.safetensors changed since the interrupted run"):
        run_diff(b, t, out, save_mask=True, resume=True)


def test_resume_of_an_unchanged_input_continues(tmp_path, monkeypatch):
    b, t = _pair(tmp_path)
    out = tmp_path / "out"
    _interrupted(b, t, out)
    computed = []
    real = diff_mod.diff_tensor
    monkeypatch.setattr(diff_mod, "diff_tensor", lambda *a: computed.append(a[2]) or real(*a))
    run_diff(b, t, out, save_mask=True, resume=True)
    assert len(computed) == 2


@pytest.mark.parametrize("damage", ["identity", "rows"])
def test_corrupt_journal_is_one_line_or_recomputed(tmp_path, damage):
    b, t = _pair(tmp_path)
    out = tmp_path / "out"
    _interrupted(b, t, out)
    if damage == "identity":
        (out / ".partial" / "identity.json").write_bytes(b"\x00garbage{")
        line = _one_line_error(runner.invoke(app, ["diff", str(b), str(t), "-o", str(out), "--save-mask", "--resume"]))
        assert "identity.json: corrupt resume journal" in line
    else:
        (out / ".partial" / "rows.jsonl").write_text('{"name": 1}\n[1, 2]\n')
        run_diff(b, t, out, save_mask=True, resume=True)
        fresh = run_diff(b, t, tmp_path / "fresh", save_mask=True)
        assert json.loads((out / "summary.json").read_text())["totals"] == json.loads(json.dumps(fresh["totals"]))


# ---- 3. the typed study config: tests/test_study_config.py covers every case of the issue ----------------------


def test_study_config_cases_of_the_issue_are_covered():
    import test_study_config

    cases = {text for text, *_ in test_study_config.BAD}
    for want in ('retrain = "no"', 'atol = "x"', "eval_n = 1.5", "model = 5", "save_steps = 10", 'steps = "2"'):
        assert any(c.startswith(want) for c in cases), want
    assert any('temperature = "hot"' in c for c in cases)


# ---- 4. workers die with their parent; scratch folders are cleaned ----------------------------------------------


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")  # a zombie is dead; a container's pid 1 may never reap it


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def _started(code: str) -> subprocess.Popen:
    """A Python process running `code`, once it has printed "running"."""
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=ENV, text=True)
    assert p.stdout.readline().strip() == "running"
    return p


def _kill9(p: subprocess.Popen) -> None:
    p.send_signal(signal.SIGKILL)
    p.wait()


# The wait ends as soon as the workers are gone (a fraction of a second on a quiet machine); the deadline only bounds
# a failing run, so it is generous rather than fitted to one machine: under load the kernel's SIGKILL and the exit of a
# worker that holds hundreds of MB can take seconds.
WORKERS_GONE_S = 60


def _left_after_parent_death(workers: list[int], within: float = WORKERS_GONE_S) -> list[int]:
    """The workers still alive `within` seconds of their parent's death (killed here, so that none outlives the test)."""
    deadline = time.monotonic() + within
    while any(map(_alive, workers)) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [w for w in workers if _alive(w)]
    for w in left:
        os.kill(w, signal.SIGKILL)
    return left


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_diff_workers_die_with_a_killed_parent(tmp_path):
    b, t = _pair(tmp_path)
    code = (
        "import time; from rldelta.diff import run_diff\n"
        f"run_diff({str(b)!r}, {str(t)!r}, {str(tmp_path / 'out')!r}, workers=2,"
        " progress=lambda d, n, s: (print('running', flush=True), time.sleep(60)))\n"
    )
    parent = _started(code)
    workers = [w for w in _children(parent.pid) if "resource_tracker" not in Path(f"/proc/{w}/cmdline").read_text()]
    assert workers
    _kill9(parent)
    left = _left_after_parent_death(workers)
    assert not left, f"workers {left} outlived their parent"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_study_pool_workers_die_with_a_killed_parent():
    # The study's pools (study/runs.py) start spawn workers with die_with_parent as their initializer.
    code = (
        "import time, multiprocessing as mp; from rldelta.runtime.lifetime import die_with_parent\n"
        "if __name__ == '__main__':\n"
        "    pool = mp.get_context('spawn').Pool(1, initializer=die_with_parent)\n"
        "    pool.apply(time.sleep, (0,)); print('running', flush=True); time.sleep(60)\n"
    )
    parent = _started(code)
    workers = [w for w in _children(parent.pid) if "resource_tracker" not in Path(f"/proc/{w}/cmdline").read_text()]
    _kill9(parent)
    left = _left_after_parent_death(workers)
    assert workers and not left


def _descendants(pid: int) -> list[int]:
    import psutil

    return [c.pid for c in psutil.Process(pid).children(recursive=True)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_processes_started_by_what_a_killed_parent_started_die_too(tmp_path):
    """descendants_die_with_me: a child without the parent-death signal and the child it started (as a raylet starts
    Ray's agents) are killed once their ancestor is, instead of living on under init."""
    code = (
        "import subprocess, sys, time; from rldelta.runtime.lifetime import descendants_die_with_me\n"
        "with descendants_die_with_me():\n"
        # both outlive the test's wait by far unless something kills them
        '    subprocess.Popen([sys.executable, \'-c\', \'import subprocess, time; subprocess.Popen(["sleep", "600"]); '
        "time.sleep(600)'])\n"
        "    time.sleep(2); print('running', flush=True); time.sleep(60)\n"
    )
    parent = _started(code)
    started = _descendants(parent.pid)  # the child, its sleep (and the watcher)
    names = [Path(f"/proc/{w}/cmdline").read_text() for w in started]
    assert any(n.startswith("sleep") for n in names) and len(started) >= 2, names
    _kill9(parent)
    assert not _left_after_parent_death(started)


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs ray")
def test_a_local_ray_dies_with_a_killed_diff(tmp_path):
    """Ray's dashboard and runtime-env agents outlived a kill -9 of `diff --backend ray` by about a minute."""
    b, t = _pair(tmp_path)
    code = (
        "import time; from rldelta.diff import run_diff\n"
        f"run_diff({str(b)!r}, {str(t)!r}, {str(tmp_path / 'out')!r}, backend='ray', workers=2,"
        " progress=lambda d, n, s: (print('running', flush=True), time.sleep(60)))\n"
    )
    parent = _started(code)
    ray = _descendants(parent.pid)
    _kill9(parent)
    # By themselves the agents leave after a 60 s wait for the dead GCS; killed, within a second or two. Half of the
    # 60 s tells the two apart on any machine load.
    assert not _left_after_parent_death(ray, within=30)


def test_study_pools_use_the_parent_death_initializer():
    import inspect

    import rldelta.study.runs as runs

    src = inspect.getsource(runs)
    assert src.count("initializer=die_with_parent") == 2


def test_surgery_removes_a_killed_runs_scratch_folder(tmp_path):
    b, t = _pair(tmp_path)
    run_diff(b, t, tmp_path / "d", save_mask=True)
    out = tmp_path / "patched"
    stale = tmp_path / ".patched.tmp-killed"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"x" * 1000)
    r = runner.invoke(app, ["surgery", "patch", str(b), str(t), "-m", str(tmp_path / "d"), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert not stale.exists() and (out / "model.safetensors").is_file()


# ---- 5. OS errors, dtypes, NaN, output folders -------------------------------------------------------------------


def test_out_that_is_a_file_is_one_line(tmp_path):
    b, t = _pair(tmp_path)
    out = tmp_path / "out"
    out.write_text("not a folder")
    assert f"{out}: exists and is not a directory" in _one_line_error(
        runner.invoke(app, ["diff", str(b), str(t), "-o", str(out)])
    )
    line = _one_line_error(runner.invoke(app, ["overlap", str(b), str(t), "-o", str(out)]))
    assert str(b) in line or str(out) in line


def test_paths_that_cannot_be_used_are_named_for_what_they_are(tmp_path):
    b, t = _pair(tmp_path)
    (tmp_path / "file").write_text("x")
    loop = tmp_path / "loop"
    loop.symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(loop)
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")

    def line(*args):
        return _one_line_error(runner.invoke(app, [str(a) for a in args]))

    # OUT under a file: the OS says only "File exists", of the file
    for out in (tmp_path / "file" / "out", tmp_path / "file" / "a" / "b"):
        assert (
            line("diff", b, t, "-o", out)
            == f"error: {out}: {tmp_path / 'file'} is a file, not a folder; choose another output folder"
        )
    # a symbolic link loop: as an input it read "no such file or directory", as OUT it was a traceback
    assert (
        line("diff", loop, t, "-o", tmp_path / "o")
        == f"error: {loop}: a symbolic link loop (Too many levels of symbolic links)"
    )
    assert line("mask", "info", loop) == f"error: {loop}: a symbolic link loop (Too many levels of symbolic links)"
    for out in (loop, loop / "sub"):
        assert line("diff", b, t, "-o", out) == f"error: {out}: a symbolic link loop; choose another path"
    assert line("diff", tmp_path / "dangling", t, "-o", tmp_path / "o") == (
        f"error: {tmp_path / 'dangling'}: a symbolic link to {tmp_path / 'gone'}, which does not exist"
    )
    assert line("diff", tmp_path / "nothing", t, "-o", tmp_path / "o").endswith("nothing: no such file or directory")


@pytest.mark.parametrize(
    ("code", "failing", "file"),
    [
        (errno.EROFS, "atomic_write_parquet", "tensors.parquet"),
        (errno.ENOSPC, "atomic_write_parquet", "tensors.parquet"),
        (errno.EACCES, "atomic_write_parquet", "tensors.parquet"),
        (errno.ENOSPC, "atomic_write_json", "summary.json"),  # tensors.parquet already written: removed again
    ],
)
def test_os_errors_while_writing_are_one_line_naming_the_path(tmp_path, monkeypatch, code, failing, file):
    b, t = _pair(tmp_path)
    out = tmp_path / "out"

    def refuse(*args):
        path = args[0] if failing == "atomic_write_json" else args[1]  # (path, obj) vs (rows, path, schema)
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(diff_mod, failing, refuse)
    line = _one_line_error(runner.invoke(app, ["diff", str(b), str(t), "-o", str(out), "--save-mask"]))
    assert line == f"error: {out / file}: {os.strerror(code)}"
    assert sorted(p.name for p in out.iterdir()) == [".partial"]  # the documented journal, nothing else


def test_a_full_disk_is_one_line_and_leaves_no_partial_file(tmp_path):
    # A real OS error: the file size limit (EFBIG, which Python gets instead of SIGXFSZ) stops the mask's writes.
    b, t = _pair(tmp_path)
    out = tmp_path / "out"
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))

    r = subprocess.run(
        [sys.executable, "-c", "from rldelta.cli import app; app()", "diff", str(b), str(t), "-o", str(out)]
        + ["--save-mask", "--no-rank"],
        capture_output=True,
        text=True,
        env=ENV,
        preexec_fn=limit,
        timeout=120,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and str(out) in r.stderr and "File too large" in r.stderr
    leftovers = [p for p in out.rglob("*") if p.is_file() and ".partial" not in p.relative_to(out).parts]
    assert not leftovers and not list(out.glob("*.tmp"))


def test_out_inside_an_input_checkpoint_is_refused(tmp_path):
    b, t = _pair(tmp_path)
    for out in (t, t / "diff", b / "x" / "y"):
        line = _one_line_error(runner.invoke(app, ["diff", str(b), str(t), "-o", str(out), "--save-mask"]))
        assert "is inside the input checkpoint folder" in line
    assert sorted(p.name for p in t.iterdir()) == ["model.safetensors"]  # no mask written into the model
    other = write_checkpoint(tmp_path / "other", {"w": torch.zeros(2)})
    assert "holds model weights" in _one_line_error(runner.invoke(app, ["diff", str(b), str(t), "-o", str(other)]))


def test_integer_and_bool_tensors_are_compared_bitwise_without_float_metrics(tmp_path):
    g = np.random.default_rng(0)
    codes = g.integers(-128, 128, size=(16, 8), dtype=np.int8)
    codes2 = codes.copy()
    codes2[g.random(codes.shape) < 0.3] ^= 1
    flags = g.random(40) < 0.5
    flags2 = flags.copy()
    flags2[:7] = ~flags2[:7]
    b = write_checkpoint(tmp_path / "b", {"q.codes": torch.from_numpy(codes), "flags": torch.from_numpy(flags)})
    t = write_checkpoint(tmp_path / "t", {"q.codes": torch.from_numpy(codes2), "flags": torch.from_numpy(flags2)})
    run_diff(b, t, tmp_path / "out", save_mask=True)
    df = pd.read_parquet(tmp_path / "out" / "tensors.parquet").set_index("name")
    assert df.loc["q.codes", "changed"] == int((codes != codes2).sum())
    assert df.loc["flags", "changed"] == 7
    assert df.loc["q.codes", "row_coverage"] == (codes != codes2).any(axis=1).mean()
    for col in ("delta_fro", "base_fro", "rel_norm", "rank", "effective_rank"):
        assert df[col].isna().all(), col


def test_float_against_int_of_the_same_name_is_a_dtype_mismatch(tmp_path):
    b = write_checkpoint(tmp_path / "b", {"w": torch.ones(4, 4), "step": torch.zeros(3)})
    t = write_checkpoint(tmp_path / "t", {"w": torch.ones(4, 4), "step": torch.zeros(3, dtype=torch.int64)})
    s = run_diff(b, t, tmp_path / "out")
    assert s["dtype_mismatch"] == [{"name": "step", "base_dtype": "float32", "tuned_dtype": "int64"}]
    assert s["totals"]["tensors"] == 1 and s["totals"]["changed"] == 0
    with pytest.raises(DiffError, match="float vs integer, e.g. 'step'"):
        run_diff(b, t, tmp_path / "strict", strict=True)


def test_nan_only_in_the_base_is_nan_in_every_norm_column(tmp_path):
    w = torch.ones(4, 4)
    nan_base = w.clone()
    nan_base[1, 2] = float("nan")
    b = write_checkpoint(tmp_path / "b", {"w": nan_base})
    t = write_checkpoint(tmp_path / "t", {"w": w})
    run_diff(b, t, tmp_path / "out")
    row = pd.read_parquet(tmp_path / "out" / "tensors.parquet").iloc[0]
    assert row["changed"] == 1  # independent: NaN -> 1.0 differs in exactly one entry
    assert np.isnan(row["delta_fro"]) and np.isnan(row["base_fro"]) and np.isnan(row["rel_norm"])


def _evil_model(tmp_path: Path) -> tuple[Path, Path]:
    """A real tiny model folder whose weights are a pickle that would create MARKER if it were ever unpickled."""
    from rldelta.train.models import build_tiny

    model = build_tiny(tmp_path / "evil")
    (model / "model.safetensors").unlink()
    marker = tmp_path / "PAYLOAD_RAN"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (model / "pytorch_model.bin").write_bytes(pickle.dumps(Evil()))
    return model, marker


def test_pickled_weights_are_refused_unread_by_eval_and_diff(tmp_path):
    model, marker = _evil_model(tmp_path)
    line = _one_line_error(runner.invoke(app, ["eval", str(model), "--task", "arith", "--n", "2"]))
    assert str(model) in line and "model.safetensors" in line
    line = _one_line_error(runner.invoke(app, ["diff", str(model), str(model), "-o", str(tmp_path / "o")]))
    assert "pickled" in line
    assert not marker.exists()


def test_a_folder_without_tokenizer_is_named_for_what_it_lacks(tmp_path):
    model, marker = _evil_model(tmp_path)
    for f in model.glob("tokenizer*"):
        f.unlink()
    # pickled weights and no tokenizer: refused for the weights (transformers used to fail on the tokenizer first)
    run = tmp_path / "run"
    for args in (["eval", str(model), "--task", "arith", "--n", "2"], ["train", "--model", str(model), "-o", str(run)]):
        line = _one_line_error(runner.invoke(app, args))
        assert str(model) in line and "model.safetensors" in line
    assert not marker.exists() and not run.exists()  # the refused run made no folder
    from rldelta.train.models import build_tiny

    plain = build_tiny(tmp_path / "plain")
    for f in plain.glob("tokenizer*"):
        f.unlink()
    line = _one_line_error(runner.invoke(app, ["eval", str(plain), "--task", "arith", "--n", "2"]))
    assert (
        line
        == f"error: {plain}: no tokenizer (tokenizer.json, tokenizer.model, vocab.json, vocab.txt, ...) beside the weights"
    )


def test_union_at_a_step_the_run_did_not_record_is_refused(tmp_path):
    from conftest import TRAIN_ONE_STEP
    from rldelta.train.config import TrainConfig
    from rldelta.train.models import build_tiny
    from rldelta.train.trainers import train

    run = train(TrainConfig(model=str(build_tiny(tmp_path / "tiny")), output=str(tmp_path / "run"), **TRAIN_ONE_STEP))
    for step in ("99", "-3", "0"):  # 99 printed the step-1 union as "up to step 99"; -3 was accepted
        out = tmp_path / f"u{step}"
        line = _one_line_error(runner.invoke(app, ["steps", str(run), "--union-at", step, "-o", str(out)]))
        assert line == f"error: --union-at {step}: {run} recorded steps 1 to 1; choose one of them"
        assert not out.exists()
    r = runner.invoke(app, ["steps", str(run), "--union-at", "1", "-o", str(tmp_path / "u1")])
    assert r.exit_code == 0 and (tmp_path / "u1" / "mask.safetensors").is_file(), r.output
