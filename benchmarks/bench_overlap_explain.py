"""Wall time and peak RSS of `rldelta overlap` and `rldelta explain` beside the naive load-everything way.

Reuses the synthetic sharded bf16 pair of bench_diff.py (built once under --dir) and adds a second tuned copy
with an independent 10% of entries moved, as a second "seed". Both are diffed with --save-mask (not timed).
Then, each in its own process tree:
  - overlap: `rldelta overlap d1 d2` vs loading both masks whole and counting;
  - explain: `rldelta explain d1 --base B --other d2 --no-rank-null` vs loading base and both masks whole,
    concatenating |w| over the model and computing the exact AUC (global sort), deciles and the overlap.

    python benchmarks/bench_overlap_explain.py [--dir bench-out] [--layers 4]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_diff import RLDELTA, build_pair, measure  # noqa: E402


def build_second_tuned(base: Path, out: Path) -> Path:
    """A second tuned copy: an independent 10% of each tensor moved by ~1 ULP, shard by shard."""
    import torch
    from safetensors.torch import load_file, save_file

    if (out / "model.safetensors.index.json").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(1)
    for f in sorted(base.glob("*.safetensors")):
        t = {}
        for n, w in load_file(f).items():
            moved = torch.rand(w.shape, generator=g) < 0.1
            t[n] = torch.where(moved, (w.float() * (1 + 2**-7)).bfloat16(), w)
        save_file(t, str(out / f.name))
        del t
    (out / "model.safetensors.index.json").write_text((base / "model.safetensors.index.json").read_text())
    return out


NAIVE_OVERLAP = r"""
import sys
from safetensors.torch import load_file
a, b = load_file(sys.argv[1] + "/mask.safetensors"), load_file(sys.argv[2] + "/mask.safetensors")
inter = sum(int((a[n] & b[n]).sum()) for n in a)
size_a = sum(int(a[n].sum()) for n in a)
print(inter / size_a)
"""

NAIVE_EXPLAIN = r"""
import sys, glob, torch
from safetensors.torch import load_file
from rldelta.metrics.precision import roc_auc
base = {}
for f in sorted(glob.glob(sys.argv[1] + "/*.safetensors")):
    base.update(load_file(f))
a, b = load_file(sys.argv[2] + "/mask.safetensors"), load_file(sys.argv[3] + "/mask.safetensors")
names = list(a)
w = torch.cat([base[n].float().abs().reshape(-1) for n in names])
ya = torch.cat([a[n].reshape(-1) for n in names])
yb = torch.cat([b[n].reshape(-1) for n in names])
order = torch.argsort(w)
dec = [float(x.float().mean()) for x in torch.chunk(ya[order], 10)]
del order
auc = roc_auc(-w, ya)  # exact, tie-aware, over the whole model at once
print(auc, dec, int((ya & yb).sum()) / int(ya.sum()))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, default=Path("bench-out-ox"))
    ap.add_argument("--layers", type=int, default=4)  # the naive explain needs ~40 B per parameter
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--inter", type=int, default=4096)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--shards", type=int, default=4)
    args = ap.parse_args()

    print(f"building the inputs under {args.dir} (reused if present) ...", flush=True)
    base, tuned = build_pair(args.dir, args.layers, args.hidden, args.inter, args.vocab, args.shards)
    tuned2 = build_second_tuned(base, args.dir / "tuned2")
    d1, d2 = args.dir / "diff1", args.dir / "diff2"
    for t, d in ((tuned, d1), (tuned2, d2)):
        if not (d / "mask.safetensors").exists():
            subprocess.run(
                [*RLDELTA, "diff", str(base), str(t), "-o", str(d), "--no-rank", "--save-mask"],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
    size = sum(f.stat().st_size for f in base.glob("*.safetensors")) / 2**30
    mask = (d1 / "mask.safetensors").stat().st_size / 2**30
    print(f"base: {size:.2f} GiB bf16; each mask {mask:.2f} GiB\n", flush=True)
    out = args.dir / "runs"

    rows = []

    def run(label: str, cmd: list[str]) -> None:
        wall, rss = measure(cmd)
        rows.append({"variant": label, "wall_s": round(wall, 2), "peak_rss_gib": round(rss, 3)})
        print(f"  {label:<44} {wall:8.1f} s   {rss:6.2f} GiB", flush=True)

    run("rldelta overlap d1 d2", [*RLDELTA, "overlap", str(d1), str(d2), "-o", str(out / "overlap")])
    run("naive overlap (load both masks whole)", [sys.executable, "-c", NAIVE_OVERLAP, str(d1), str(d2)])
    run(
        "rldelta explain --other --no-rank-null",
        [
            *RLDELTA,
            "explain",
            str(d1),
            "--base",
            str(base),
            "--other",
            str(d2),
            "--no-rank-null",
            "-o",
            str(out / "explain"),
        ],
    )
    run("naive explain (load all, global sort)", [sys.executable, "-c", NAIVE_EXPLAIN, str(base), str(d1), str(d2)])
    (args.dir / "bench_overlap_explain.json").write_text(
        json.dumps({"base_gib": size, "mask_gib": mask, "rows": rows}, indent=2)
    )


if __name__ == "__main__":
    main()
