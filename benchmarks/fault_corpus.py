"""The fault corpus: bad inputs, OS errors, kill -9, concurrency and resumes, run against the command line as a new
user and a careless cluster job would. Prints each case's outcome and the counts: cases tried, clean one-line errors,
tracebacks, silent wrong results, vague messages (goal: 0, 0 and 0).

    PYTHONPATH=src python benchmarks/fault_corpus.py [-k SUBSTRING] [-v]

Outcomes: `ok` (exit 0 and the result checked against an independent computation), `clean` (exit 2, one line
naming what is wrong, nothing half-written), `traceback` (any other failure), `wrong` (exit 0 but a wrong result,
bad input accepted, workers left running, a scratch folder left behind), `vague` (one line, but not naming what is
wrong: the file or key, the thing in the way). Most cases run in process through typer's CliRunner (fast); the
kill -9, concurrency, Ray and file-size-limit cases run the CLI in subprocesses. The full-disk and read-only cases
mount a small tmpfs, which needs root; without it they are reported as skipped.

About 1000 lines: the corpus is a flat list of ~80 cases, one small function each, which reads best in one file.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import pickle
import re
import resource
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from rldelta.cli import app
from rldelta.diff import run_diff

SRC = str(Path(__file__).resolve().parents[1] / "src")
ENV = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
CLI = [sys.executable, "-c", "from rldelta.cli import app; app()"]
runner = CliRunner()
PROGRESS = re.compile(r"^\S+: \d+/\d+ done")  # the plain progress lines a command prints before it fails
CASES: list[tuple[str, Callable[[Path], tuple[str, str]]]] = []


class Skip(Exception):
    pass


class LeftOpen(Exception):
    pass


def case(fn):
    CASES.append((fn.__name__, fn))
    return fn


# ---- helpers ------------------------------------------------------------------------------------------------------


def ckpt(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path / "model.safetensors"))
    return path


def pair(tmp: Path, moved: float = 0.25, seed: int = 0, tag: str = "") -> tuple[Path, Path, int]:
    """A base and a tuned checkpoint, and the number of changed entries counted in numpy."""
    g = np.random.default_rng(seed)
    base = {f"model.layers.{i}.mlp.up_proj.weight": g.standard_normal((32, 16)).astype(np.float32) for i in range(4)}
    tuned = {n: w + (g.random(w.shape) < moved) * np.float32(0.5) for n, w in base.items()}
    changed = sum(int((base[n].view(np.uint32) != tuned[n].view(np.uint32)).sum()) for n in base)
    b = ckpt(tmp / f"base{tag}", {n: torch.from_numpy(w) for n, w in base.items()})
    t = ckpt(tmp / f"tuned{tag}", {n: torch.from_numpy(np.ascontiguousarray(w)) for n, w in tuned.items()})
    return b, t, changed


def cli(*args) -> tuple[str, str]:
    """Run one command in process and classify how it failed (the caller checks a success)."""
    r = runner.invoke(app, [str(a) for a in args])
    text = r.output
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        return "traceback", "".join(traceback.format_exception_only(r.exception)).strip()
    if r.exit_code == 0:
        return "exit0", text.strip().splitlines()[-1] if text.strip() else ""
    return classify_error(r.exit_code, text)


def classify_error(code: int, text: str) -> tuple[str, str]:
    lines = [line for line in text.splitlines() if line.strip() and not PROGRESS.match(line)]
    if "Traceback" in text or code != 2 or len(lines) != 1 or not lines[0].startswith("error:"):
        return "traceback", text.strip()[-300:]
    return "clean", lines[0]


def subprocess_cli(*args, limit_bytes: int | None = None, timeout: float = 120) -> tuple[str, str, int]:
    def pre():
        if limit_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    r = subprocess.run(
        CLI + [str(a) for a in args], capture_output=True, text=True, env=ENV, preexec_fn=pre, timeout=timeout
    )
    if r.returncode == 0:
        return "exit0", r.stdout[-200:], 0
    kind, line = classify_error(r.returncode, r.stderr)
    return kind, line, r.returncode


def expect_error(*args) -> tuple[str, str]:
    kind, line = cli(*args)
    return ("wrong", f"bad input accepted: {line}") if kind == "exit0" else (kind, line)


def expect_naming(words: list[str], *args) -> tuple[str, str]:
    """A one-line error that says each of `words` (the file, the key, what is in the way), or `vague`."""
    kind, line = expect_error(*args)
    if kind == "clean" and not all(w in line for w in words):
        return "vague", f"{line}  (does not say: {', '.join(w for w in words if w not in line)})"
    return kind, line


TRAIN_SMALL = dict(
    task="digits", prompts_per_step=2, num_generations=2, max_completion_length=8, lr=1e-3, progress=False
)


def tiny_run(tmp: Path, steps: int = 2) -> Path:
    """A tiny model trained `steps` GRPO steps in process, with the step recorder on (RUN/steps.parquet)."""
    from rldelta.train.config import TrainConfig
    from rldelta.train.models import build_tiny
    from rldelta.train.trainers import train

    model = build_tiny(tmp / "tiny")
    return train(TrainConfig(model=str(model), output=str(tmp / "run"), steps=steps, train_size=16, **TRAIN_SMALL))


def descendants(pid: int) -> list:
    import psutil

    return psutil.Process(pid).children(recursive=True)


def _running(p) -> bool:
    import psutil

    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def left_alive(procs: list, within: float) -> list[str]:
    """The names of those of `procs` (psutil processes) still running `within` seconds from now (then killed)."""
    import psutil

    deadline = time.monotonic() + within
    while time.monotonic() < deadline and any(map(_running, procs)):
        time.sleep(0.2)
    left = []
    for p in filter(_running, procs):
        with contextlib.suppress(psutil.Error):
            left.append(p.name())
            p.kill()
    return left


def no_partial(out: Path) -> bool:
    """Nothing half-written in OUT beyond the documented journal (.partial/) and no stray temp files."""
    if not out.exists():
        return True
    if out.is_file():
        return True
    return not [p for p in out.rglob("*") if p.is_file() and ".partial" not in p.relative_to(out).parts]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def tmpfs(path: Path, size: str, ro: bool = False) -> None:
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if ro else "")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True).returncode:
        raise Skip("mounting a tmpfs needs root")


def umount(path: Path) -> None:
    # lazy: a file the command under test left open must not leave the mount behind (it is reported as wrong)
    busy = subprocess.run(["umount", str(path)], capture_output=True).returncode
    if busy:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)
        raise LeftOpen(f"{path}: busy after the command (a file left open)")


# ---- bad checkpoints -----------------------------------------------------------------------------------------------


def _broken(tmp: Path, raw: bytes) -> tuple[str, str]:
    b, _, _ = pair(tmp)
    bad = tmp / "bad"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes(raw)
    return expect_error("diff", b, bad, "-o", tmp / "out")


@case
def missing_path(tmp):
    b, _, _ = pair(tmp)
    return expect_error("diff", b, tmp / "nope", "-o", tmp / "out")


@case
def header_garbage(tmp):
    return _broken(tmp, os.urandom(200))


@case
def header_length_too_large(tmp):
    return _broken(tmp, struct.pack("<Q", 10**9) + b"{}")


@case
def header_not_an_object(tmp):
    return _broken(tmp, struct.pack("<Q", 2) + b"[]")


@case
def header_unknown_dtype(tmp):
    h = json.dumps({"w": {"dtype": "Q7", "shape": [2], "data_offsets": [0, 2]}}).encode()
    return _broken(tmp, struct.pack("<Q", len(h)) + h + b"\0\0")


@case
def data_truncated(tmp):
    b, _, _ = pair(tmp)
    return _broken(tmp, (b / "model.safetensors").read_bytes()[:-100])


@case
def shard_missing(tmp):
    b, _, _ = pair(tmp)
    d = tmp / "sharded"
    d.mkdir()
    (d / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"w": "model-00001-of-00002.safetensors"}})
    )
    return expect_error("diff", b, d, "-o", tmp / "out")


@case
def index_corrupt(tmp):
    b, _, _ = pair(tmp)
    d = tmp / "sharded"
    d.mkdir()
    (d / "model.safetensors.index.json").write_text("{not json")
    return expect_error("diff", b, d, "-o", tmp / "out")


@case
def empty_folder(tmp):
    b, _, _ = pair(tmp)
    (tmp / "empty").mkdir()
    return expect_error("diff", b, tmp / "empty", "-o", tmp / "out")


@case
def gguf_file(tmp):
    b, _, _ = pair(tmp)
    (tmp / "m.gguf").write_bytes(b"GGUF" + bytes(100))
    return expect_error("diff", b, tmp / "m.gguf", "-o", tmp / "out")


def _evil_model(tmp: Path) -> tuple[Path, Path]:
    from rldelta.train.models import build_tiny

    model = build_tiny(tmp / "evil")
    (model / "model.safetensors").unlink()
    marker = tmp / "PAYLOAD_RAN"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (model / "pytorch_model.bin").write_bytes(pickle.dumps(Evil()))
    return model, marker


def _pickle_case(tmp: Path, args_of: Callable[[Path], list]) -> tuple[str, str]:
    model, marker = _evil_model(tmp)
    kind, line = expect_error(*args_of(model))
    if marker.exists():
        return "wrong", "the pickle's payload ran"
    return kind, line


@case
def pickle_diff(tmp):
    return _pickle_case(tmp, lambda m: ["diff", m, m, "-o", tmp / "out"])


@case
def pickle_eval(tmp):
    return _pickle_case(tmp, lambda m: ["eval", m, "--task", "arith", "--n", "2"])


@case
def pickle_train(tmp):
    return _pickle_case(tmp, lambda m: ["train", "-o", tmp / "run", "--model", m, "--task", "arith", "--steps", "1"])


@case
def pickle_probe_activations(tmp):
    return _pickle_case(tmp, lambda m: ["probe", "activations", m, "-o", tmp / "out"])


# ---- options and output folders ------------------------------------------------------------------------------------


@case
def negative_atol(tmp):
    b, t, _ = pair(tmp)
    return expect_error("diff", b, t, "-o", tmp / "out", "--atol", "-1")


@case
def unknown_compare_dtype(tmp):
    b, t, _ = pair(tmp)
    return expect_error("diff", b, t, "-o", tmp / "out", "--compare-dtype", "fp8")


@case
def zero_workers(tmp):
    b, t, _ = pair(tmp)
    return expect_error("diff", b, t, "-o", tmp / "out", "--workers", "0")


@case
def strict_missing_tensor(tmp):
    b, _, _ = pair(tmp)
    t = ckpt(tmp / "t1", {"model.layers.0.mlp.up_proj.weight": torch.zeros(32, 16)})
    return expect_error("diff", b, t, "-o", tmp / "out", "--strict")


@case
def out_is_a_file(tmp):
    b, t, _ = pair(tmp)
    (tmp / "out").write_text("x")
    return expect_error("diff", b, t, "-o", tmp / "out")


@case
def out_under_a_file(tmp):
    b, t, _ = pair(tmp)
    (tmp / "f").write_text("x")
    return expect_naming([f"{tmp / 'f'} is a file"], "diff", b, t, "-o", tmp / "f" / "out")


def _loop(tmp: Path) -> Path:
    (tmp / "loop").symlink_to(tmp / "loop2")
    (tmp / "loop2").symlink_to(tmp / "loop")
    return tmp / "loop"


@case
def input_symlink_loop(tmp):
    _, t, _ = pair(tmp)
    return expect_naming(["symbolic link loop"], "diff", _loop(tmp), t, "-o", tmp / "out")


@case
def out_symlink_loop(tmp):
    b, t, _ = pair(tmp)
    return expect_naming(["symbolic link loop"], "diff", b, t, "-o", _loop(tmp) / "out")


@case
def input_dangling_symlink(tmp):
    _, t, _ = pair(tmp)
    (tmp / "link").symlink_to(tmp / "gone")
    return expect_naming([str(tmp / "gone")], "diff", tmp / "link", t, "-o", tmp / "out")


@case
def out_name_too_long(tmp):
    b, t, _ = pair(tmp)
    return expect_error("diff", b, t, "-o", tmp / ("x" * 300))


@case
def out_is_the_tuned_model(tmp):
    b, t, _ = pair(tmp)
    kind, line = expect_error("diff", b, t, "-o", t, "--save-mask")
    return ("wrong", "mask written into the model") if (t / "mask.safetensors").exists() else (kind, line)


@case
def out_inside_the_base_model(tmp):
    b, t, _ = pair(tmp)
    return expect_error("diff", b, t, "-o", b / "diff")


@case
def out_is_another_model(tmp):
    b, t, _ = pair(tmp)
    other = ckpt(tmp / "other", {"w": torch.zeros(3)})
    return expect_error("diff", b, t, "-o", other)


@case
def overlap_out_is_a_file(tmp):
    b, t, _ = pair(tmp)
    run_diff(b, t, tmp / "d1", save_mask=True)
    run_diff(b, t, tmp / "d2", save_mask=True)
    (tmp / "out").write_text("x")
    return expect_error("overlap", tmp / "d1", tmp / "d2", "-o", tmp / "out")


@case
def overlap_one_input(tmp):
    b, t, _ = pair(tmp)
    run_diff(b, t, tmp / "d1", save_mask=True)
    return expect_error("overlap", tmp / "d1", "-o", tmp / "out")


@case
def explain_not_a_diff(tmp):
    b, t, _ = pair(tmp)
    return expect_error("explain", t, "--base", b, "-o", tmp / "out")


@case
def surgery_float_vs_int(tmp):
    b = ckpt(tmp / "b", {"w": torch.ones(4, 4)})
    t = ckpt(tmp / "t", {"w": torch.ones(4, 4, dtype=torch.int32)})
    m = tmp / "m.safetensors"
    save_file({"w": torch.ones(4, 4, dtype=torch.bool)}, str(m))
    return expect_error("surgery", "patch", b, t, "-m", m, "-o", tmp / "out")


# ---- dtypes and NaN: exit 0, checked against numpy ----------------------------------------------------------------


@case
def int8_and_bool_tensors(tmp):
    g = np.random.default_rng(1)
    q = g.integers(-128, 128, (16, 8), dtype=np.int8)
    q2 = q ^ (g.random(q.shape) < 0.3).astype(np.int8)
    f = g.random(50) < 0.5
    f2 = f.copy()
    f2[:9] = ~f2[:9]
    b = ckpt(tmp / "b", {"q": torch.from_numpy(q), "f": torch.from_numpy(f)})
    t = ckpt(tmp / "t", {"q": torch.from_numpy(q2), "f": torch.from_numpy(f2)})
    kind, line = cli("diff", b, t, "-o", tmp / "out")
    if kind != "exit0":
        return kind, line
    df = pd.read_parquet(tmp / "out" / "tensors.parquet").set_index("name")
    ok = df.loc["q", "changed"] == int((q != q2).sum()) and df.loc["f", "changed"] == 9 and df["rel_norm"].isna().all()
    return ("ok", "bitwise counts match numpy; float columns null") if ok else ("wrong", df.to_string())


@case
def float_vs_int_same_name(tmp):
    b = ckpt(tmp / "b", {"w": torch.ones(4, 4), "n": torch.zeros(5)})
    t = ckpt(tmp / "t", {"w": torch.ones(4, 4), "n": torch.zeros(5, dtype=torch.int64)})
    kind, line = cli("diff", b, t, "-o", tmp / "out")
    if kind != "exit0":
        return kind, line
    s = json.loads((tmp / "out" / "summary.json").read_text())
    ok = [m["name"] for m in s.get("dtype_mismatch", [])] == ["n"] and s["totals"]["changed"] == 0
    return ("ok", "listed as a dtype mismatch") if ok else ("wrong", f"changed {s['totals']['changed']}")


@case
def nan_only_in_base(tmp):
    w = torch.ones(4, 4)
    nb = w.clone()
    nb[0, 0] = float("nan")
    b, t = ckpt(tmp / "b", {"w": nb}), ckpt(tmp / "t", {"w": w})
    kind, line = cli("diff", b, t, "-o", tmp / "out")
    if kind != "exit0":
        return kind, line
    row = pd.read_parquet(tmp / "out" / "tensors.parquet").iloc[0]
    ok = np.isnan(row["delta_fro"]) and np.isnan(row["rel_norm"]) and row["changed"] == 1
    return ("ok", "delta_fro and rel_norm both NaN") if ok else ("wrong", f"rel_norm {row['rel_norm']}")


@case
def float64_checkpoints(tmp):
    g = np.random.default_rng(4)
    base = g.standard_normal((24, 16))
    tuned = base + (g.random(base.shape) < 0.3) * 1e-3
    b, t = ckpt(tmp / "b", {"w": torch.from_numpy(base)}), ckpt(tmp / "t", {"w": torch.from_numpy(tuned)})
    kind, line = cli("diff", b, t, "-o", tmp / "out")
    if kind != "exit0":
        return kind, line
    got = pd.read_parquet(tmp / "out" / "tensors.parquet").iloc[0]["changed"]
    want = int((base.view(np.uint64) != tuned.view(np.uint64)).sum())
    return ("ok", "compared in float64") if got == want else ("wrong", f"{got} changed, numpy {want}")


@case
def fp32_base_against_a_bf16_copy(tmp):
    """A bf16 publication of an fp32 base with 5% of the entries moved: the cast is no change by default."""
    g = np.random.default_rng(5)
    base = (g.standard_normal((64, 48)) * 0.02).astype(np.float32)
    planted = g.random(base.shape) < 0.05
    tuned = torch.from_numpy(np.where(planted, base * 1.2 + np.copysign(1e-3, base), base)).bfloat16()
    b, t = ckpt(tmp / "b", {"w": torch.from_numpy(base)}), ckpt(tmp / "t", {"w": tuned})
    kind, line = cli("diff", b, t, "-o", tmp / "out")
    if kind != "exit0":
        return kind, line
    s = json.loads((tmp / "out" / "summary.json").read_text())
    if s["totals"]["changed"] != planted.sum():
        return "wrong", f"{s['totals']['changed']} changed, {planted.sum()} planted"
    if not s.get("dtype_note", "").startswith("base fp32, tuned bf16: compared in bf16;"):
        return "vague", f"the output does not say the dtypes differ: {s.get('dtype_note')}"
    return "ok", s["dtype_note"]


# ---- resume ----------------------------------------------------------------------------------------------------------


def _interrupt(b: Path, t: Path, out: Path) -> None:
    def stop(done, total, name):
        if done == 2:
            raise KeyboardInterrupt

    try:
        run_diff(b, t, out, save_mask=True, progress=stop)
    except KeyboardInterrupt:
        pass


@case
def resume_across_replaced_input(tmp):
    b, t, _ = pair(tmp)
    _interrupt(b, t, tmp / "out")
    (t / "model.safetensors").write_bytes((b / "model.safetensors").read_bytes())
    kind, line = cli("diff", b, t, "-o", tmp / "out", "--save-mask", "--resume")
    if kind == "exit0":
        changed = json.loads((tmp / "out" / "summary.json").read_text())["totals"]["changed"]
        return ("ok", "") if changed == 0 else ("wrong", f"{changed} changed reported, truth 0")
    return kind, line


@case
def resume_across_a_retrained_input_with_its_mtime_put_back(tmp):
    b, t, _ = pair(tmp)
    _interrupt(b, t, tmp / "out")
    f = t / "model.safetensors"
    st = f.stat()
    _, other, _ = pair(tmp, seed=9, tag="-other")  # the same shapes: the same header and size
    f.write_bytes((other / "model.safetensors").read_bytes())
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # as `touch -r` leaves it
    return expect_naming([str(f.resolve())], "diff", b, t, "-o", tmp / "out", "--save-mask", "--resume")


@case
def resume_corrupt_journal(tmp):
    b, t, _ = pair(tmp)
    _interrupt(b, t, tmp / "out")
    (tmp / "out" / ".partial" / "identity.json").write_bytes(b"\xff{{")
    return expect_error("diff", b, t, "-o", tmp / "out", "--save-mask", "--resume")


@case
def kill9_then_resume_is_byte_identical(tmp):
    b, t, _ = pair(tmp)
    code = (
        "import time; from rldelta.diff import run_diff\n"
        f"run_diff({str(b)!r}, {str(t)!r}, {str(tmp / 'out')!r}, save_mask=True,"
        " progress=lambda d, n, s: d == 2 and (print('now', flush=True), time.sleep(60)))\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=ENV, text=True)
    p.stdout.readline()
    p.send_signal(signal.SIGKILL)
    p.wait()
    kind, line = cli("diff", b, t, "-o", tmp / "out", "--save-mask", "--resume")
    if kind != "exit0":
        return kind, line
    run_diff(b, t, tmp / "fresh", save_mask=True)
    same = all((tmp / "out" / f).read_bytes() == (tmp / "fresh" / f).read_bytes() for f in ("mask.safetensors",))
    same &= pd.read_parquet(tmp / "out" / "tensors.parquet").equals(pd.read_parquet(tmp / "fresh" / "tensors.parquet"))
    return ("ok", "resumed after the lock was taken over") if same else ("wrong", "resume differs from a fresh run")


# ---- concurrency and lifetime -------------------------------------------------------------------------------------


@case
def two_diffs_into_one_out(tmp):
    b1, t1, c1 = pair(tmp, seed=1, tag="1")
    b2, t2, c2 = pair(tmp, moved=0.02, seed=2, tag="2")
    out = tmp / "out"
    procs = [
        subprocess.Popen(
            CLI + ["diff", str(b), str(t), "-o", str(out), "--save-mask"],
            env=ENV,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for b, t in ((b1, t1), (b2, t2))
    ]
    results = [(p.wait(), p.communicate()) for p in procs]
    winners = [i for i, (rc, _) in enumerate(results) if rc == 0]
    for rc, (_, err) in results:
        if rc != 0 and classify_error(rc, err)[0] != "clean":
            return "traceback", err[-300:]
    want = {0: c1, 1: c2}
    s = json.loads((out / "summary.json").read_text())
    from rldelta.masks import load_mask

    mask = load_mask(out)
    mask_true = sum(int(mask.get(n).sum()) for n in mask.names())
    if mask_true != s["totals"]["changed"] or s["totals"]["changed"] not in (want[w] for w in winners):
        return "wrong", f"summary {s['totals']['changed']}, mask {mask_true}, winners {winners}"
    return "ok", f"{len(winners)} finished, {2 - len(winners)} refused with one line; OUT consistent"


@case
def lock_held_by_live_process(tmp):
    b, t, _ = pair(tmp)
    code = (
        "import time; from rldelta.runtime.lock import output_lock\n"
        f"with output_lock({str(tmp / 'out')!r}, 'holder'):\n    print('held', flush=True); time.sleep(60)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=ENV, text=True)
    p.stdout.readline()
    try:
        return expect_error("diff", b, t, "-o", tmp / "out")
    finally:
        p.kill()
        p.wait()


@case
def lock_of_killed_holder_taken_over(tmp):
    b, t, c = pair(tmp)
    code = (
        "import time; from rldelta.runtime.lock import output_lock\n"
        f"with output_lock({str(tmp / 'out')!r}, 'holder'):\n    print('held', flush=True); time.sleep(60)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=ENV, text=True)
    p.stdout.readline()
    p.send_signal(signal.SIGKILL)
    p.wait()
    kind, line = cli("diff", b, t, "-o", tmp / "out")
    if kind != "exit0":
        return kind, line
    got = json.loads((tmp / "out" / "summary.json").read_text())["totals"]["changed"]
    return ("ok", "taken over") if got == c else ("wrong", f"{got} != {c}")


@case
def kill9_diff_workers_die(tmp):
    b, t, _ = pair(tmp)
    code = (
        "import time; from rldelta.diff import run_diff\n"
        f"run_diff({str(b)!r}, {str(t)!r}, {str(tmp / 'out')!r}, workers=2,"
        " progress=lambda d, n, s: (print('running', flush=True), time.sleep(60)))\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=ENV, text=True)
    p.stdout.readline()
    workers = children(p.pid)
    p.send_signal(signal.SIGKILL)
    p.wait()
    deadline = time.monotonic() + 5
    while any(map(alive, workers)) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [w for w in workers if alive(w)]
    for w in left:
        os.kill(w, signal.SIGKILL)
    return ("wrong", f"{len(left)} worker(s) still running 5 s later") if left else ("ok", f"{len(workers)} gone")


def _holder(out: Path) -> subprocess.Popen:
    code = (
        "import time; from rldelta.runtime.lock import output_lock\n"
        f"with output_lock({str(out)!r}, 'diff --save-mask'):\n    print('held', flush=True); time.sleep(60)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=ENV, text=True)
    p.stdout.readline()
    return p


@case
def mask_threshold_into_a_folder_a_diff_writes(tmp):
    b, t, _ = pair(tmp)
    holder = _holder(tmp / "out")  # a diff --save-mask writing OUT
    try:
        kind, line = expect_naming([f"pid {holder.pid}"], "mask", "threshold", b, t, "-o", tmp / "out")
    finally:
        holder.kill()
        holder.wait()
    return ("wrong", "mask written") if (tmp / "out" / "mask.safetensors").exists() else (kind, line)


@case
def mask_combine_over_its_own_input(tmp):
    b, t, _ = pair(tmp)
    run_diff(b, t, tmp / "d1", save_mask=True)
    run_diff(b, t, tmp / "d2", save_mask=True)
    a = tmp / "a.safetensors"
    a.write_bytes((tmp / "d1" / "mask.safetensors").read_bytes())
    before = a.read_bytes()
    kind, line = expect_naming([str(a)], "mask", "combine", a, tmp / "d2", "--op", "minus", "-o", a)
    return ("wrong", "the input mask was replaced") if a.read_bytes() != before else (kind, line)


@case
def kill9_diff_ray_backend_leaves_no_ray(tmp):
    if importlib.util.find_spec("ray") is None:
        raise Skip("needs ray")
    b, t, _ = pair(tmp)
    code = (
        "import time; from rldelta.diff import run_diff\n"
        f"run_diff({str(b)!r}, {str(t)!r}, {str(tmp / 'out')!r}, backend='ray', workers=2,"
        " progress=lambda d, n, s: (print('running', flush=True), time.sleep(60)))\n"
    )
    p = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=ENV, text=True
    )
    p.stdout.readline()
    procs = descendants(p.pid)
    p.send_signal(signal.SIGKILL)
    p.wait()
    left = left_alive(procs, 30)  # by themselves Ray's agents waited 60 s for the dead GCS
    return ("wrong", f"alive 30 s later: {', '.join(sorted(left))}") if left else ("ok", f"{len(procs)} gone")


@case
def surgery_scratch_of_killed_run(tmp):
    b, t, _ = pair(tmp)
    run_diff(b, t, tmp / "d", save_mask=True)
    stale = tmp / ".patched.tmp-killed"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(bytes(10000))
    kind, line = cli("surgery", "patch", b, t, "-m", tmp / "d", "-o", tmp / "patched")
    if kind != "exit0":
        return kind, line
    return ("wrong", "scratch folder left") if stale.exists() else ("ok", "scratch removed")


# ---- the OS says no --------------------------------------------------------------------------------------------------


@case
def file_size_limit(tmp):
    b, t, _ = pair(tmp)
    kind, line, _ = subprocess_cli("diff", b, t, "-o", tmp / "out", "--save-mask", limit_bytes=1024)
    if kind == "exit0":
        return "wrong", "succeeded past the file size limit"
    return (kind, line) if no_partial(tmp / "out") else ("wrong", "partial output left")


@case
def full_disk(tmp):
    g = torch.Generator().manual_seed(3)
    base = {f"w{i}": torch.randn(256, 256, generator=g) for i in range(4)}
    b = ckpt(tmp / "b", base)
    t = ckpt(tmp / "t", {n: w + (torch.rand(w.shape, generator=g) < 0.1) for n, w in base.items()})
    disk = tmp / "disk"
    tmpfs(disk, "64k")  # the mask alone needs 256 KiB
    try:
        kind, line = cli("diff", b, t, "-o", disk / "out", "--save-mask")
        if kind == "exit0":
            return "wrong", "succeeded on a full disk"
        return (kind, line) if no_partial(disk / "out") else ("wrong", "partial output left")
    finally:
        umount(disk)


@case
def read_only_file_system(tmp):
    b, t, _ = pair(tmp)
    disk = tmp / "ro"
    tmpfs(disk, "64k", ro=True)
    try:
        return expect_error("diff", b, t, "-o", disk / "out")
    finally:
        umount(disk)


# ---- training and its runs ------------------------------------------------------------------------------------------


@case
def train_lr_nan(tmp):
    from rldelta.train.models import build_tiny

    model = build_tiny(tmp / "tiny")
    kind, line = expect_naming(["--lr"], "train", "--model", model, "--task", "digits", "--lr", "nan", "-o", tmp / "r")
    return ("wrong", "a run folder was made") if (tmp / "r").exists() else (kind, line)


@case
def train_resume_of_a_finished_run(tmp):
    run = tiny_run(tmp, steps=2)
    files = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    kind, line = cli("train", "--resume", "-o", run)
    if kind != "exit0":
        return kind, line
    steps = sorted(set(pd.read_parquet(run / "steps.parquet")["step"]))
    if steps != [1, 2] or {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} != files:
        return "wrong", f"the finished run changed (recorded steps {steps})"
    return "ok", "nothing to resume, nothing written"


@case
def steps_union_at_outside_the_run(tmp):
    run = tiny_run(tmp, steps=1)
    for step in ("99", "-3"):
        kind, line = expect_naming(["--union-at", step], "steps", run, "--union-at", step, "-o", tmp / f"u{step}")
        if kind != "clean" or (tmp / f"u{step}").exists():
            return kind, line
    return kind, line


@case
def pickled_folder_without_tokenizer(tmp):
    model, marker = _evil_model(tmp)
    for f in model.glob("tokenizer*"):
        f.unlink()
    kind, line = expect_naming(["model.safetensors"], "eval", model, "--task", "arith", "--n", "2")
    return ("wrong", "the pickle's payload ran") if marker.exists() else (kind, line)


@case
def study_killed_while_building_its_base(tmp):
    """kill -9 while the tiny base is built, then the study again: no scratch folder left in STUDY/models."""
    cfg = tmp / "study.toml"
    cfg.write_text('model = "tiny"\n')
    p = subprocess.Popen(CLI + ["study", str(cfg), "-o", str(tmp / "s")], env=ENV, stderr=subprocess.DEVNULL)
    models = tmp / "s" / "models"
    deadline = time.monotonic() + 120
    while not list(models.glob(".*")) and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    from rldelta.study.config import load_config
    from rldelta.study.stages import prepare_base

    prepare_base(load_config(cfg), tmp / "s")  # the study's first stage, as a re-run enters it
    left = [x.name for x in models.glob(".*")]
    return ("wrong", f"left in models/: {left}") if left else ("ok", "scratch removed")


# ---- the study config ----------------------------------------------------------------------------------------------


STUDY_BAD = [
    'retrain = "no"',
    'atol = "x"',
    "eval_n = 1.5",
    "model = 5",
    "save_steps = 10",
    'steps = "2"',
    '[train]\ntemperature = "hot"',
    "[train]\nlr = nan",
    '[formats]\nsizes = ["1b"]',
    "[formats]\nbatch_size = 0",
    "[formats]\ndifficulty = 99",
    "[formats]\nproportions = { code = -0.2, plain = 0.6, boxed = 0.6 }",
]
# Around each bad value, a study small enough that accepting it costs a minute, not the default grid's hour.
SMALL_STUDY = {"model": '"tiny"', "task": '"digits"', "seeds": "[0]", "steps": "1", "eval_n": "2", "retrain": "false"}
SMALL_STUDY |= {"advantage_runs": "false", "probes": '["formats"]'}
SMALL_FORMATS = {"sizes": '["test"]', "pretrain_steps": "2", "steps": "1"}


def _study_toml(text: str) -> str:
    lines = text.splitlines()
    top = {k: v for k, v in SMALL_STUDY.items() if not lines[0].startswith(k + " ")}
    out = "".join(f"{k} = {v}\n" for k, v in top.items()) + text + "\n"
    if lines[0] == "[formats]":
        out += "".join(f"{k} = {v}\n" for k, v in SMALL_FORMATS.items() if not lines[1].startswith(k + " "))
    return out


for _i, _text in enumerate(STUDY_BAD):

    def _study(tmp, text=_text):
        """Refused at once (nothing trained: no STUDY folder), one line naming the file and the key."""
        cfg = tmp / "study.toml"
        cfg.write_text(_study_toml(text))
        key = text.splitlines()[-1].split(" =")[0]
        table = text.splitlines()[0].strip("[]") + "." if text.startswith("[formats]") else ""
        kind, line = expect_naming([str(cfg), table + key], "study", cfg, "-o", tmp / "study")
        return ("wrong", "refused only after it ran") if (tmp / "study").exists() else (kind, line)

    CASES.append((f"study_config_{_i}:{_text.splitlines()[-1]}", _study))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-k", default="", help="Only the cases whose name contains this.")
    ap.add_argument("-v", action="store_true", help="Print each case's message.")
    args = ap.parse_args()
    counts: Counter = Counter()
    t0 = time.perf_counter()
    for name, fn in CASES:
        if args.k not in name:
            continue
        with tempfile.TemporaryDirectory() as d:
            try:
                kind, msg = fn(Path(d))
            except Skip as e:
                kind, msg = "skipped", str(e)
            except LeftOpen as e:
                kind, msg = "wrong", str(e)
            except Exception as e:  # the corpus itself failing on a case counts against the code under test
                kind, msg = "traceback", f"{type(e).__name__}: {e}"
        counts[kind] += 1
        shown = args.v or kind in ("traceback", "wrong", "vague")
        print(f"{kind:10s} {name}" + (f"  — {msg}" if shown else ""), flush=True)
    tried = sum(v for k, v in counts.items() if k != "skipped")
    print(
        f"\ncases tried: {tried}; ok: {counts['ok']}; clean one-line errors: {counts['clean']}; "
        f"tracebacks: {counts['traceback']}; silent wrong results: {counts['wrong']}; vague messages: "
        f"{counts['vague']}; skipped: {counts['skipped']} ({time.perf_counter() - t0:.0f} s)"
    )
    return 1 if counts["traceback"] or counts["wrong"] or counts["vague"] else 0


if __name__ == "__main__":
    sys.exit(main())
