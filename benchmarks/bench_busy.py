"""`rldelta diff` of a SmolLM2-135M-sized pair on a quiet machine and beside two CPU-bound "training runs".

The pair has SmolLM2-135M's shapes (hidden 576, intermediate 1536, 30 layers, 9 heads / 3 kv heads, vocab 49152,
tied embeddings; 134.5M parameters) and the RL-like update of bench_scale (benchmarks/_pairs.py). The load is two
processes each running torch matmuls, GELU and layer norms in a loop with torch's default thread count (not
pinned), as two training jobs on the same node would; they start before the busy runs and are killed after them,
also on an error or Ctrl-C. Each variant of the diff runs quiet and busy (`--repeats` times, quiet and busy
alternating which goes first); printed per variant: wall and CPU time (user + system of the diff's process tree)
and the busy/quiet wall ratio (target <= 3x; the issue counts 2x as a fair share). The page cache is warm throughout (one untimed diff first): the question is threads, not the disk.

Variants: `--workers 1` with the tool's own thread and wait-policy defaults; `--threads 1` (when `rldelta diff` has
the option); OMP_WAIT_POLICY=ACTIVE and =PASSIVE set explicitly.

    python benchmarks/bench_busy.py [-o bench-busy-out] [--repeats 1] [--size smollm2|tiny] [--keep] [--no-rank]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _measure import RLDELTA, Measured, conditions, measure
from _pairs import (
    SHAPES,
    RLUpdate,
    describe,
    groups_by_bytes,
    llama_tensors,
    params,
    read_manifest,
    remove_pair,
    shape_spec,
    write_pair,
)

# One "training run": forward-and-backward-like dense work on torch's default thread count, forever.
LOAD = r"""
import torch
x = torch.randn(256, 1024)
w1, w2 = torch.randn(1024, 2048) * 0.02, torch.randn(2048, 1024) * 0.02
print("ready", torch.get_num_threads(), flush=True)
while True:
    h = torch.nn.functional.gelu(x @ w1)
    y = torch.nn.functional.layer_norm(h @ w2, (1024,))
    g = (y.T @ h) * 1e-6
    x = y.detach()
"""
BUSY_PROCS = 2


class Load:
    """The two load processes, started on entry and killed on exit (whatever ends the block)."""

    def __init__(self, n: int):
        self.n, self.procs, self.threads = n, [], "?"

    def __enter__(self) -> Load:
        try:
            for _ in range(self.n):
                self.procs.append(subprocess.Popen([sys.executable, "-c", LOAD], stdout=subprocess.PIPE, text=True))
            for p in self.procs:
                line = p.stdout.readline()  # after torch's import: the load is running when this returns
                if not line.startswith("ready"):
                    raise SystemExit(f"a load process did not start (exit {p.poll()})")
                self.threads = line.split()[1]
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
            p.stdout.close()
        self.procs = []


def _has_option(option: str) -> bool:
    res = subprocess.run([*RLDELTA, "diff", "--help"], capture_output=True, text=True, env=_env(None))
    return option in res.stdout


def _env(wait_policy: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    if wait_policy is not None:
        env["OMP_WAIT_POLICY"] = wait_policy
    return env


def variants(threads_option: bool) -> list[tuple[str, list[str], str | None]]:
    """(label, extra diff options, OMP_WAIT_POLICY or None for the tool's default)."""
    out = [("--workers 1 (defaults)", [], None)]
    if threads_option:
        out.append(("--workers 1 --threads 1", ["--threads", "1"], None))
    out += [
        ("--workers 1, OMP_WAIT_POLICY=ACTIVE", [], "ACTIVE"),
        ("--workers 1, OMP_WAIT_POLICY=PASSIVE", [], "PASSIVE"),
    ]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--out", type=Path, default=Path("bench-busy-out"))
    ap.add_argument("--size", choices=("smollm2", "tiny"), default="smollm2", help="tiny: to test this script")
    ap.add_argument("--repeats", type=int, default=1, help="quiet/busy rounds, alternating which goes first")
    ap.add_argument("--timeout", type=float, default=180, help="seconds before a diff is stopped (and reported so)")
    ap.add_argument("--keep", action="store_true", help="keep the pair (and reuse a kept one)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-rank", action="store_true", help="diff --no-rank (quicker; the figure is the full diff)")
    args = ap.parse_args()
    # SIGTERM ends the benchmark through the same path as Ctrl-C: the load processes are killed on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    size = args.size
    shapes = llama_tensors(SHAPES[size])
    update = RLUpdate(seed=args.seed)
    spec = {"shape": shape_spec(SHAPES[size]), **update.spec(), "shard_bytes": 5e9}
    root = args.out / size
    cond = conditions()
    print(f"machine: {cond['cpu_count']} CPUs, affinity {cond['affinity']}, load average {cond['loadavg']}")
    print(f"pair: {size} shapes, {params(shapes):,} parameters; building under {root} (reused if kept) ...")
    base, tuned = write_pair(root, shapes, groups_by_bytes(shapes, 5e9), update, spec)
    print(describe(read_manifest(root)))
    try:
        results = _run(args, base, tuned, root)
    finally:
        if not args.keep:
            remove_pair(root)
            shutil.rmtree(root, ignore_errors=True)
            if not any(args.out.iterdir()):
                args.out.rmdir()
    _report(results)


def _run(args: argparse.Namespace, base: Path, tuned: Path, root: Path) -> dict[tuple[str, str], list[Measured]]:
    vs = variants(_has_option("--threads"))
    if len(vs) == 3:
        print("(rldelta diff has no --threads option yet: that variant is left out)")
    out = root / "diff"
    rank = ["--no-rank"] if args.no_rank else []

    def diff(extra: list[str], policy: str | None) -> Measured:
        cmd = [*RLDELTA, "diff", str(base), str(tuned), "-o", str(out), "--workers", "1", *rank, *extra]
        m = measure(cmd, env=_env(policy), timeout=args.timeout)
        return m if m.timed_out else m.check(" ".join(cmd[3:]))

    print("warming the page cache (one untimed diff) ...", flush=True)
    diff([], None)
    results: dict[tuple[str, str], list[Measured]] = {}
    for r in range(args.repeats):
        for state in ("quiet", "busy") if r % 2 == 0 else ("busy", "quiet"):
            print(f"round {r + 1}, {state}: load average {[round(x, 2) for x in os.getloadavg()]}", flush=True)
            with Load(BUSY_PROCS if state == "busy" else 0) as load:
                if state == "busy":
                    print(f"  {BUSY_PROCS} load processes running, {load.threads} torch threads each", flush=True)
                for label, extra, policy in vs:
                    m = diff(extra, policy)
                    results.setdefault((label, state), []).append(m)
                    wall = f">{m.wall:.0f} s (stopped)" if m.timed_out else f"{m.wall:.1f} s"
                    print(f"  {label:<38} wall {wall:>10}   CPU {m.cpu:7.1f} s", flush=True)
    return results


def _report(results: dict[tuple[str, str], list[Measured]]) -> None:
    print(f"\nmedians over repeats; busy = beside {BUSY_PROCS} CPU-bound load processes; target busy/quiet <= 3x")
    print(
        f"  {'variant':<38} {'quiet wall':>10} {'quiet CPU':>10} {'busy wall':>10} {'busy CPU':>10} {'busy/quiet':>10}"
    )
    for label in dict.fromkeys(k[0] for k in results):
        q, b = results[(label, "quiet")], results[(label, "busy")]
        qw, qc = statistics.median(m.wall for m in q), statistics.median(m.cpu for m in q)
        bw, bc = statistics.median(m.wall for m in b), statistics.median(m.cpu for m in b)
        stopped = "+" if any(m.timed_out for m in b) else ""
        print(f"  {label:<38} {qw:9.1f}s {qc:9.1f}s {bw:9.1f}s{stopped} {bc:9.1f}s {bw / qw:9.2f}x")


if __name__ == "__main__":
    t0 = time.perf_counter()
    try:
        main()
    except KeyboardInterrupt:
        raise SystemExit("bench_busy: interrupted (the load processes and the pair are gone)") from None
    print(f"\n(the benchmark took {time.perf_counter() - t0:.0f} s)")
