"""The StepRecorder's cost on SmolLM2-135M-Instruct: end to end, alone, its memory, its disk reads, and a profile.

End to end (`--part e2e`): GRPO runs of the same config (same seed, same data, so the same work per step) with the
recorder off, on, and on with `--patches`, alternating (`--repeats` rounds), so a change in the machine's load hits
all three; each step's wall time comes from metrics.parquet (a run's first step is left out: one-off warm-up).

Alone (`--part alone`): the recorder's own work per step on the fp32 policy, ~1.25% of the bf16 entries moved per
step (as in the demo), each placement of the base (device, host, file) in a fresh process, beside the naive way it
replaces (the bf16 copy to numpy and the whole base read from the file every step). Before each step the base
file's pages are dropped from the page cache (posix_fadvise DONTNEED), so `read_bytes` of /proc/self/io is what a
step reads from the disk when the base is not cached. Peak memory: the process's resident high-water mark
(VmHWM, reset through /proc/self/clear_refs after each step's planting) above its size before the recorder started,
per parameter, at the start (the base written) and during a step. Minor page faults per step (getrusage) show the cost of fresh pages for transient buffers.

`--part profile`: cProfile of record() (base in the file), the top entries by own time.

    python benchmarks/bench_steps.py --model demo-out/models/smollm2-135m --part all --steps 6 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETTINGS = {"off": {"record_steps": False}, "on": {"record_steps": True}, "patches": {"record_patches": True}}


def _io() -> dict[str, int]:
    rows = Path("/proc/self/io").read_text().split("\n")
    return {k: int(v) for k, v in (r.split(": ") for r in rows if r)}


def _status(key: str) -> int:
    line = next(r for r in Path("/proc/self/status").read_text().split("\n") if r.startswith(key + ":"))
    return int(line.split()[1]) * 1024


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS


def _drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _spread(xs: list[float]) -> str:
    return f"median {statistics.median(xs):7.3f}  range {min(xs):.3f}-{max(xs):.3f}  n={len(xs)}"


# ---- end to end ------------------------------------------------------------------------------------------------


def end_to_end(model: Path, steps: int, repeats: int) -> None:
    import pandas as pd

    from rldelta.train.config import TrainConfig
    from rldelta.train.trainers import train

    settings = dict(
        task="arith",
        difficulty=1,
        steps=steps,
        save_steps=str(steps),
        prompts_per_step=2,
        num_generations=4,
        max_completion_length=16,
        lr=1e-5,
        rewards="correctness",
        progress=False,
    )
    times: dict[str, list[float]] = {k: [] for k in SETTINGS}
    loads = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        for k in range(repeats):  # the settings alternate, so a change in the machine's load hits each
            for name, extra in SETTINGS.items():
                out = Path(tmp) / f"{name}-{k}"
                loads.append(os.getloadavg()[0])
                train(TrainConfig(model=str(model), output=str(out), **settings, **extra))
                times[name] += pd.read_parquet(out / "metrics.parquet")["seconds"].tolist()[1:]
                print(f"  round {k} {name:8s}: {statistics.median(times[name][-(steps - 1) :]):.2f} s/step", flush=True)
    off = statistics.median(times["off"])
    print(f"end to end, load average {min(loads):.1f}-{max(loads):.1f} during the runs, {repeats} rounds")
    for name, xs in times.items():
        print(f"  step time {name:8s}: {_spread(xs)}  ratio to off {statistics.median(xs) / off:.3f}")


# ---- alone -----------------------------------------------------------------------------------------------------


class _Naive:
    """The way it replaces: every step the bf16 copy to numpy, compared with the previous step's and with the whole
    base read back from the file (numpy, packed bits), as the recorder did before it ran on the weights' device."""

    def __init__(self, model, base: Path):
        import numpy as np
        import torch
        from safetensors.torch import save_file

        self.params = dict(model.named_parameters())
        self.base = base
        self.prev = {n: p.detach().to(torch.bfloat16).view(torch.int16).numpy().copy() for n, p in self.params.items()}
        self.sets = {n: np.zeros((v.size + 7) // 8, np.uint8) for n, v in self.prev.items()}
        self.union = {n: np.zeros((v.size + 7) // 8, np.uint8) for n, v in self.prev.items()}
        save_file({n: torch.from_numpy(v).view(torch.bfloat16) for n, v in self.prev.items()}, base)

    def record(self, step: int) -> None:
        import torch
        from safetensors import safe_open

        from rldelta.metrics.steps import step_counts

        with safe_open(self.base, "pt") as f:
            for n, p in self.params.items():
                cur = p.detach().to(torch.bfloat16).view(torch.int16).reshape(-1).numpy()
                base = f.get_tensor(n).view(torch.int16).reshape(-1).numpy()
                _, self.sets[n], fresh = step_counts(cur, self.prev[n].reshape(-1), base, self.sets[n], self.union[n])
                self.union[n] |= fresh
                self.prev[n][...] = cur.reshape(self.prev[n].shape)

    def memory_bytes(self) -> int:
        return sum(v.nbytes + self.sets[n].nbytes + self.union[n].nbytes for n, v in self.prev.items())


def _plant(model, gen) -> None:
    import torch

    with torch.no_grad():  # like a real step of the demo: ~1.25% of the bf16 entries move
        for prm in model.parameters():
            hit = torch.rand(prm.shape, generator=gen) < 0.0125
            prm.add_(hit * prm.abs().clamp_min(1e-3) * 0.02)


def alone_child(model_dir: Path, placement: str, steps: int, patches: bool) -> dict:
    from types import SimpleNamespace

    import torch

    from rldelta.runtime.files import STEPS_BASE_FILE as BASE_FILE
    from rldelta.runtime.files import STEPS_DIR
    from rldelta.train.step_recorder import StepRecorder
    from rldelta.train.trainers import load_policy

    model, _ = load_policy(str(model_dir), "fp32")
    params = sum(p.numel() for p in model.parameters())
    gen = torch.Generator().manual_seed(0)
    _plant(model, gen)  # once before: the allocator's pools for the planting are there before the baseline
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        before = _status("VmRSS")
        _reset_peak()
        if placement == "naive":
            rec = _Naive(model, Path(tmp) / "base.safetensors")
            base_file = rec.base
        else:
            rec = StepRecorder(tmp, model, base=placement, patches=patches)
            rec.on_train_begin(None, SimpleNamespace(global_step=0, max_steps=steps), None)
            base_file = Path(tmp) / STEPS_DIR / BASE_FILE
        peak_start, peak = _status("VmHWM") - before, 0
        secs, reads, rchar, faults, transient = [], [], [], [], []
        for step in range(1, steps + 1):
            _plant(model, gen)
            _drop_cache(base_file)
            _reset_peak()
            rss = _status("VmRSS")
            io0, f0, t0 = _io(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
            rec.record(step)
            secs.append(time.perf_counter() - t0)
            io1 = _io()
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
            reads.append(io1["read_bytes"] - io0["read_bytes"])
            rchar.append(io1["rchar"] - io0["rchar"])
            peak = max(peak, _status("VmHWM") - before)
            transient.append(_status("VmHWM") - rss)  # above what the process held when the step began
        held = rec.memory_bytes()
        if placement != "naive":
            rec.close()
    base_bytes = params * 2
    return {
        "placement": placement + ("+patches" if patches else ""),
        "params": params,
        "seconds": secs[1:],  # the first step of a process is left out (warm-up)
        "read_bytes": reads[1:],
        "rchar": rchar[1:],
        "minor_faults": faults[1:],
        "peak_start_bytes": peak_start,
        "peak_bytes": peak,
        "transient_bytes": max(transient[1:]),
        "held_bytes": held,
        "base_bytes": base_bytes,
    }


def alone(model: Path, steps: int) -> None:
    import torch

    print(f"record() alone, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f} at the start")
    print("  (base pages dropped from the cache before each step; per step: seconds, MB read from disk, MB read()")
    for placement, patches in (("naive", False), ("file", False), ("host", False), ("device", False), ("file", True)):
        cmd = [sys.executable, __file__, "--model", str(model), "--child", placement, "--steps", str(steps)]
        r = json.loads(
            subprocess.run(cmd + (["--patches"] if patches else []), capture_output=True, text=True, check=True)
            .stdout.strip()
            .splitlines()[-1]
        )
        p = r["params"]
        print(
            f"  {r['placement']:14s} {_spread(r['seconds'])} s;"
            f" disk {statistics.median(r['read_bytes']) / 2**20:7.1f} MB/step"
            f" (base {r['base_bytes'] / 2**20:.0f} MB); read() {statistics.median(r['rchar']) / 2**20:7.1f} MB;"
            f" faults {statistics.median(r['minor_faults']):8.0f};"
            f" held {r['held_bytes'] / p:.3f} B/param; peak RSS at the start {r['peak_start_bytes'] / p:.3f},"
            f" in a step {r['peak_bytes'] / p:.3f} B/param (of which the step's own {r['transient_bytes'] / p:.3f})",
            flush=True,
        )


def profile(model: Path, steps: int) -> None:
    import cProfile
    import pstats
    from types import SimpleNamespace

    import torch

    from rldelta.train.step_recorder import StepRecorder
    from rldelta.train.trainers import load_policy

    model_, _ = load_policy(str(model), "fp32")
    gen = torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        rec = StepRecorder(tmp, model_)
        rec.on_train_begin(None, SimpleNamespace(global_step=0, max_steps=steps), None)
        prof = cProfile.Profile()
        for step in range(1, steps + 1):
            _plant(model_, gen)
            prof.enable()
            rec.record(step)
            prof.disable()
        rec.close()
    print(f"profile of record(), {steps} steps, base in the file; top entries by own time:")
    pstats.Stats(prof).sort_stats("tottime").print_stats(12)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="a prepared SmolLM2 folder (rldelta models prepare)")
    p.add_argument("--part", choices=("e2e", "alone", "profile", "all"), default="all")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--repeats", type=int, default=2, help="rounds of the end-to-end settings, alternating")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--patches", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(alone_child(args.model, args.child, args.steps, args.patches)))
        return
    if args.part in ("alone", "all"):
        alone(args.model, args.steps)
    if args.part in ("profile", "all"):
        profile(args.model, args.steps)
    if args.part in ("e2e", "all"):
        end_to_end(args.model, args.steps, args.repeats)


if __name__ == "__main__":
    main()
