"""Wall time and peak RSS of `rldelta diff` beside the naive way, on a synthetic sharded bf16 pair.

The pair is Llama-shaped (default ~805M parameters, 1.61 GB per side in bf16, 4 shards each) and is built once
under --dir and reused. Every variant runs as its own process tree; peak RSS is the largest sum of RSS over that
tree (parent plus workers), sampled every 20 ms. By default the page cache is warm for every variant alike (the
files were just written or read), so "raw read" is a copy out of memory, not a read from the disk. `--cold` evicts
the pair from the page cache before every variant (posix_fadvise, and drop_caches as root), so each reads from
disk as a freshly downloaded checkpoint would be read. The `--no-rank` target (within 3x of the raw read) is about that read from
storage. A warm raw read of this pair takes ~0.6 s, less than the tool's own start (Python importing torch,
printed as "start-up alone").

    python benchmarks/bench_diff.py [--dir bench-out] [--layers 44] [--skip-rank] [--cold]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _measure import RAW_READ, RLDELTA, cold_cache, measure
from _pairs import ModelShape, groups_by_count, llama_tensors, shape_spec, write_pair


def build_pair(root: Path, layers: int, hidden: int, inter: int, vocab: int, shards: int) -> tuple[Path, Path]:
    """Write base and tuned (10% of entries moved by ~1 ULP) as sharded bf16 checkpoints, one tensor in memory."""
    import torch

    model = ModelShape(hidden=hidden, inter=inter, layers=layers, heads=1, kv_heads=1, vocab=vocab)
    shapes = llama_tensors(model)
    g = torch.Generator().manual_seed(0)

    def make(index: int, name: str, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        # one generator in name order: the same pair as before the builder was shared
        w = (torch.randn(shape, generator=g) * 0.02).bfloat16()
        moved = torch.rand(shape, generator=g) < 0.1
        return w, torch.where(moved, (w.float() * (1 + 2**-7)).bfloat16(), w)

    spec = {"shape": shape_spec(model), "recipe": "ulp-10pct", "seed": 0, "shards": shards}
    return write_pair(root, shapes, groups_by_count(list(shapes), shards), make, spec)


NAIVE = r"""
import sys, glob, torch
from safetensors.torch import load_file
from rldelta.metrics.delta import delta_stats
base_dir, tuned_dir, rank = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
def load(d):
    sd = {}
    for f in sorted(glob.glob(d + "/*.safetensors")):
        sd.update(load_file(f))
    return sd
base, tuned = load(base_dir), load(tuned_dir)
changed = 0
for name, b in base.items():
    stats, _ = delta_stats(b, tuned[name], compare_dtype=b.dtype, atol=1e-5, rank=rank)
    changed += stats.changed
print(changed)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, default=Path("bench-out"))
    ap.add_argument("--layers", type=int, default=44)  # ~805M parameters: 1.61 GB (1.50 GiB) per side
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--inter", type=int, default=4096)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--skip-rank", action="store_true", help="only the --no-rank comparisons")
    ap.add_argument("--cold", action="store_true", help="drop the page cache before every variant (root)")
    args = ap.parse_args()

    print(f"building the pair under {args.dir} (reused if present) ...", flush=True)
    base, tuned = build_pair(args.dir, args.layers, args.hidden, args.inter, args.vocab, args.shards)
    size = sum(f.stat().st_size for f in base.glob("*.safetensors")) / 2**30
    print(
        f"pair: {size:.2f} GiB per side, bf16, {args.shards} shards; page cache {'cold' if args.cold else 'warm'}\n",
        flush=True,
    )
    out = args.dir / "runs"

    def rl(tag: str, *extra: str) -> list[str]:
        return [*RLDELTA, "diff", str(base), str(tuned), "-o", str(out / tag), *extra]

    rows: list[tuple[str, float, float]] = []

    def run(label: str, cmd: list[str]) -> None:
        if args.cold:
            cold_cache([base, tuned])
        m = measure(cmd).check(label)
        wall, rss = m.wall, m.peak_rss / 2**30
        rows.append((label, wall, rss))
        print(f"  {label:<40} {wall:8.1f} s   {rss:6.2f} GiB", flush=True)

    run("raw read of both checkpoints", [sys.executable, "-c", RAW_READ, str(base), str(tuned)])
    run("start-up alone (import rldelta.diff)", [sys.executable, "-c", "import rldelta.diff"])
    run("rldelta diff --no-rank --workers 1", rl("nr1", "--no-rank", "--workers", "1"))
    run("rldelta diff --no-rank --workers 2", rl("nr2", "--no-rank", "--workers", "2"))
    run("naive (load both, loop) --no-rank", [sys.executable, "-c", NAIVE, str(base), str(tuned), "0"])
    if not args.skip_rank:
        run("rldelta diff --workers 1", rl("r1", "--workers", "1"))
        run("rldelta diff --workers 2", rl("r2", "--workers", "2"))
        run("naive (load both, loop)", [sys.executable, "-c", NAIVE, str(base), str(tuned), "1"])

    by = {label: (wall, rss) for label, wall, rss in rows}
    raw = by["raw read of both checkpoints"][0]
    print("\ntargets")
    for w in (1, 2):
        print(
            f"  --no-rank --workers {w} / raw read time  : {by[f'rldelta diff --no-rank --workers {w}'][0] / raw:5.2f}x  (target < 3)"
        )
    if not args.cold:
        start = by["start-up alone (import rldelta.diff)"][0]
        print(
            f"    (warm cache: the raw read is a copy out of memory, and the start-up alone is {start / raw:.2f}x of it;"
            f" the target is about the read from storage: run with --cold)"
        )
    for suffix in [" --no-rank"] if args.skip_rank else [" --no-rank", ""]:
        nai = by[f"naive (load both, loop){suffix}"][1]
        ours = by[f"rldelta diff{suffix} --workers 1"][1]
        w1, w2 = by[f"rldelta diff{suffix} --workers 1"][0], by[f"rldelta diff{suffix} --workers 2"][0]
        print(f"  peak RSS rldelta / naive{suffix:<10}      : {ours / nai:5.3f}   (target < 0.25)")
        print(f"  --workers 2 speed-up{suffix:<10}          : {w1 / w2:5.2f}x  (target > 1)")


if __name__ == "__main__":
    main()
