"""`rldelta diff` at 1B, 3B and 7B parameters: raw read, --no-rank, the full diff, peak RSS, and the ranks checked.

For each size a synthetic Llama-shaped pair (bf16, sharded at --shard-gb) is written, measured and deleted (unless
--keep; a kept complete pair of the same spec is reused), one size at a time. The update looks like an RL one: a
dense fp32 step with a per-tensor scale, rounded to bf16, so ~10% of the entries change, mostly small |w|
(benchmarks/_pairs.py). Sizes: tiny (~58M, to test this script), 1b (TinyLlama-1.1B's shapes, 1.10B), 3b
(OpenLLaMA-3B, 3.43B), 7b (Llama-2-7B, 6.74B, ~13.5 GB a side).

Per size, each a process tree of its own, each from a cold page cache (posix_fadvise DONTNEED on every file, and
drop_caches as root): (a) a raw read of both sides, 16 MB at a time; (b) `rldelta diff --no-rank`; (c) the full
`rldelta diff`; wall time and peak RSS of the tree. Then the ranks in OUT/tensors.parquet are recomputed with
`torch.linalg.matrix_rank(tuned.float() - base.float())` (all 2-D tensors, or a sample for 7b: see --check), timed
apart from the diff. Targets: --no-rank within 1.5x of the raw read; peak RSS flat across sizes; full 7b diff
within 900 s. Figures: printed, a markdown table to paste, and OUT/bench_scale.json.

    python benchmarks/bench_scale.py [--sizes 1b,3b,7b] [-o bench-scale-out] [--keep] [--workers N]
        [--threads N] [--device cpu|cuda|auto] [--check auto|all|sample|none] [--check-sample 8]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

from _measure import RAW_READ, RLDELTA, Measured, cold_cache, conditions, free_bytes, gb, measure, mib
from _pairs import (
    INDEX,
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
from rldelta.runtime.atomic import atomic_write_json

START_UP = [sys.executable, "-c", "import rldelta.cli, rldelta.diff"]
MARGIN = 2e9  # bytes of disk left free beyond the pair
SIZES = ("tiny", "1b", "3b", "7b")


def _spec(size: str, update: RLUpdate, shard_bytes: float) -> dict:
    return {"shape": shape_spec(SHAPES[size]), **update.spec(), "shard_bytes": shard_bytes}


def _need(sizes: list[str], specs: dict[str, dict], out: Path, keep: bool) -> int:
    """Disk bytes the pairs still to be written need at once: the largest (built one at a time), or all if kept."""
    needs = []
    for s in sizes:
        done = read_manifest(out / s)
        needs.append(0 if done is not None and done["spec"] == specs[s] else 2 * 2 * params(llama_tensors(SHAPES[s])))
    return sum(needs) if keep else max(needs, default=0)


def _pick(mats: list[tuple[str, tuple[int, ...]]], mode: str, sample: int) -> list[str]:
    """The matrices whose rank is recomputed: all, or `sample` of them (one of each shape, then evenly spread)."""
    names = [n for n, _ in mats]
    if mode == "all" or len(names) <= sample:
        return names
    chosen: list[str] = []
    seen: set[tuple[int, ...]] = set()
    for n, shape in mats:
        if shape not in seen:
            seen.add(shape)
            chosen.append(n)
    rest = [n for n in names if n not in chosen]
    k = max(0, sample - len(chosen))
    chosen += [rest[round(i * (len(rest) - 1) / max(1, k - 1))] for i in range(k)] if k and rest else []
    return sorted(set(chosen), key=names.index)


def check_ranks(base: Path, tuned: Path, table: Path, mode: str, sample: int) -> dict:
    """Recompute `matrix_rank(tuned - base)` in fp32 for the chosen 2-D tensors; compare with the table's rank."""
    import pandas as pd
    import torch
    from safetensors import safe_open

    from rldelta.runtime.progress import progress_bar

    df = pd.read_parquet(table, columns=["name", "shape", "rank"])
    mats = [(n, tuple(int(x) for x in s)) for n, s in zip(df["name"], df["shape"]) if len(s) == 2]
    names = _pick(mats, mode, sample)
    table_rank = dict(zip(df["name"], df["rank"]))
    where = json.loads((base / INDEX).read_text())["weight_map"]
    t0 = time.perf_counter()
    disagree = []
    with progress_bar("matrix_rank", len(names), True) as advance:
        for n in names:
            with safe_open(base / where[n], "pt") as fb, safe_open(tuned / where[n], "pt") as ft:
                delta = ft.get_tensor(n).float() - fb.get_tensor(n).float()
            want = int(torch.linalg.matrix_rank(delta))
            got = None if pd.isna(table_rank[n]) else int(table_rank[n])
            if got != want:
                disagree.append({"name": n, "table": got, "matrix_rank": want})
            advance(n)
    return {"checked": len(names), "of": len(mats), "disagree": disagree, "seconds": time.perf_counter() - t0}


def run_size(size: str, args: argparse.Namespace, spec: dict, update: RLUpdate) -> dict:
    root = args.out / size
    shapes = llama_tensors(SHAPES[size])
    n_params = params(shapes)
    side = 2 * n_params
    largest = 2 * max(math.prod(s) for s in shapes.values())
    cond = conditions()
    print(
        f"\n== {size}: {n_params:,} parameters, {gb(side):.2f} GB per side (bf16); largest tensor {mib(largest):.0f} MiB"
    )
    print(f"   conditions: {cond['cpu_count']} CPUs, affinity {cond['affinity']}, load average {cond['loadavg']}")
    kept = read_manifest(root)
    reused = kept is not None and kept["spec"] == spec
    need = 0 if reused else 2 * side
    free = free_bytes(args.out)
    print(
        f"   disk: needs {gb(need):.1f} GB ({'kept pair reused' if reused else 'both sides'}), free {gb(free):.1f} GB"
    )
    if need + MARGIN > free:
        print(
            f"bench_scale: {size} needs {gb(need):.1f} GB + 2 GB margin, {args.out} has {gb(free):.1f} GB free",
            file=sys.stderr,
        )
        raise SystemExit(2)
    t0 = time.perf_counter()
    groups = groups_by_bytes(shapes, args.shard_gb * 1e9)
    base, tuned = write_pair(root, shapes, groups, update, spec)
    built = time.perf_counter() - t0
    print(f"   pair {'reused' if reused else f'written in {built:.0f} s'}: {len(groups)} shard(s) a side")
    print("   " + describe(read_manifest(root)).replace("\n", "\n   "))
    try:
        fig = _measure_pair(size, base, tuned, root, args)
    finally:
        if not args.keep:
            remove_pair(root)
    fig.update(params=n_params, gb_per_side=gb(side), largest_tensor_mib=mib(largest), shards=len(groups))
    fig.update(conditions=cond, build_s=None if reused else built)
    return fig


def _diff_cmd(base: Path, tuned: Path, out: Path, args: argparse.Namespace, *extra: str) -> list[str]:
    passed = [(f"--{k}", str(v)) for k, v in (("workers", args.workers), ("threads", args.threads)) if v is not None]
    if args.device is not None:
        passed.append(("--device", args.device))
    return [*RLDELTA, "diff", str(base), str(tuned), "-o", str(out), *extra, *(x for p in passed for x in p)]


def _measure_pair(size: str, base: Path, tuned: Path, root: Path, args: argparse.Namespace) -> dict:
    fig: dict = {}

    def step(key: str, label: str, cmd: list[str]) -> Measured:
        how = cold_cache([base, tuned])
        if "cold" not in fig:
            print(f"   cold cache before each: {how}", flush=True)
        fig["cold"] = how
        m = measure(cmd).check(f"{size}: {label}")
        fig[key] = {"s": m.wall, "peak_rss_mib": mib(m.peak_rss), "cpu_s": m.cpu}
        print(f"   {label:<22} {m.wall:8.1f} s   peak RSS {mib(m.peak_rss):7.0f} MiB   CPU {m.cpu:7.1f} s", flush=True)
        return m

    raw = step("raw_read", "raw read, both sides", [sys.executable, "-c", RAW_READ, str(base), str(tuned)])
    # what a diff pays before reading a byte (Python, torch, the engine's imports): a floor under small sizes' ratios
    start = measure(START_UP).check("start-up alone")
    fig["start_up_s"] = start.wall
    print(f"   {'start-up alone':<22} {start.wall:8.1f} s   (import rldelta.cli and rldelta.diff; no checkpoint read)")
    outs = {"no_rank": root / "diff-no-rank", "full": root / "diff-full"}
    for out in outs.values():
        shutil.rmtree(out, ignore_errors=True)
    nr = step("no_rank", "rldelta diff --no-rank", _diff_cmd(base, tuned, outs["no_rank"], args, "--no-rank"))
    full = step("full", "rldelta diff", _diff_cmd(base, tuned, outs["full"], args))
    side = 2 * sum(f.stat().st_size for f in base.glob("*.safetensors"))
    fig["raw_read"]["gb_per_s"] = gb(side) / raw.wall
    fig["no_rank"]["x_raw_read"] = nr.wall / raw.wall
    print(
        f"   raw read {gb(side) / raw.wall:.2f} GB/s; --no-rank / raw read {nr.wall / raw.wall:.2f}x (target <= 1.5x)"
    )
    if size == "7b":
        print(f"   full 7b diff {full.wall:.0f} s (target <= 900 s)")
    mode = args.check if args.check != "auto" else ("sample" if size == "7b" else "all")
    if mode != "none":
        rc = check_ranks(base, tuned, outs["full"] / "tensors.parquet", mode, args.check_sample)
        fig["rank_check"] = rc
        if rc["disagree"]:
            print(f"   rank DISAGREEMENT on {len(rc['disagree'])} of {rc['checked']} matrices:")
            for d in rc["disagree"]:
                print(f"     {d['name']}: table {d['table']}, matrix_rank {d['matrix_rank']}")
        else:
            print(f"   rank agreement: {rc['checked']}/{rc['checked']} matrices", end="")
            print(f" (of {rc['of']}: a sample)" if rc["checked"] < rc["of"] else " (every 2-D tensor)", end="")
        print(f"; the check took {rc['seconds']:.1f} s (not part of the diff time)", flush=True)
    return fig


def _markdown(figs: dict[str, dict]) -> str:
    head = (
        "| size | parameters | GB per side | raw read | `--no-rank` | full diff | peak RSS raw / `--no-rank` / full "
        "| largest tensor | start-up | ranks checked |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    rows = []
    for size, f in figs.items():
        rc = f.get("rank_check")
        ranks = "-" if rc is None else f"{rc['checked'] - len(rc['disagree'])}/{rc['checked']} agree"
        rows.append(
            f"| {size} | {f['params'] / 1e9:.2f}B | {f['gb_per_side']:.2f} | {f['raw_read']['s']:.1f} s "
            f"({f['raw_read']['gb_per_s']:.2f} GB/s) | {f['no_rank']['s']:.1f} s ({f['no_rank']['x_raw_read']:.2f}x) "
            f"| {f['full']['s']:.1f} s | {f['raw_read']['peak_rss_mib']:.0f} / {f['no_rank']['peak_rss_mib']:.0f} / "
            f"{f['full']['peak_rss_mib']:.0f} MiB | {f['largest_tensor_mib']:.0f} MiB | {f['start_up_s']:.1f} s | {ranks} |"
        )
    return "\n".join([head, *rows])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1b,3b,7b", help=f"comma-separated, of {', '.join(SIZES)}")
    ap.add_argument("-o", "--out", type=Path, default=Path("bench-scale-out"))
    ap.add_argument("--shard-gb", type=float, default=5.0, help="largest shard, GB (1e9 bytes)")
    ap.add_argument("--keep", action="store_true", help="keep each pair (and reuse a kept one)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, help="passed to rldelta diff when given")
    ap.add_argument("--threads", type=int, help="passed to rldelta diff when given")
    ap.add_argument("--device", help="passed to rldelta diff when given (cpu, cuda, auto)")
    ap.add_argument(
        "--check",
        choices=("auto", "all", "sample", "none"),
        default="auto",
        help="ranks recomputed with matrix_rank: auto = every 2-D tensor, a sample for 7b",
    )
    ap.add_argument("--check-sample", type=int, default=8, help="matrices in a sample (one of each shape first)")
    args = ap.parse_args()
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    bad = [s for s in sizes if s not in SIZES]
    if bad or not sizes:
        ap.error(f"--sizes: {', '.join(bad) or 'none given'}; choose from {', '.join(SIZES)}")

    import torch

    update = RLUpdate(seed=args.seed)
    specs = {s: _spec(s, update, args.shard_gb * 1e9) for s in sizes}
    need, free = _need(sizes, specs, args.out, args.keep), free_bytes(args.out)
    print(
        f"disk: the pairs need {gb(need):.1f} GB at most at once ({'all kept' if args.keep else 'one size at a time'})"
        f" + 2 GB margin; {gb(free):.1f} GB free under {args.out}"
    )
    if need + MARGIN > free:
        print(
            f"bench_scale: needs {gb(need):.1f} GB + 2 GB margin, {args.out} has {gb(free):.1f} GB free",
            file=sys.stderr,
        )
        raise SystemExit(2)
    args.out.mkdir(parents=True, exist_ok=True)
    cond = conditions()
    print(
        f"machine: {cond['cpu_count']} CPUs, affinity {cond['affinity']}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads here), Python {cond['python']}; update scale centre {update.centre:.3g}"
    )
    passed = {k: getattr(args, k) for k in ("workers", "threads", "device") if getattr(args, k) is not None}
    print(f"rldelta diff options passed: {passed or 'none (its defaults)'}")
    figs: dict[str, dict] = {}
    for size in sizes:
        figs[size] = run_size(size, args, specs[size], RLUpdate(seed=args.seed))
        atomic_write_json(args.out / "bench_scale.json", {"args": vars(args), "machine": cond, "sizes": figs})
    print("\n" + _markdown(figs))
    rss = [f["full"]["peak_rss_mib"] for f in figs.values()]
    print(
        f"\npeak RSS of the full diff across sizes: {min(rss):.0f} to {max(rss):.0f} MiB; written {args.out / 'bench_scale.json'}"
    )


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        raise SystemExit("bench_scale: interrupted (the pair being measured is gone unless --keep)") from None
