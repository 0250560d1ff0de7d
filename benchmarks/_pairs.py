"""Synthetic Llama-shaped (base, tuned) checkpoint pairs for the benchmarks, written one tensor at a time.

A pair is two folders of sharded bf16 safetensors with an index, plus `pair.json` (written last: a pair without it
is incomplete) holding the spec it was built from and, per tensor, the update's scale and the entries it changed.
A kept pair is reused only when its spec matches. The tuned side comes from a `make(index, name, shape)` callable;
`RLUpdate` is the one that looks like an RL update (a dense fp32 step that bf16 rounding makes sparse, mostly at
small |w|); bench_diff keeps its older one (10% of the entries moved by ~1 ULP) so its figures stay comparable.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from rldelta.checkpoint.writer import SafetensorsStreamWriter
from rldelta.runtime.atomic import atomic_write_json
from rldelta.runtime.progress import progress_bar

INDEX = "model.safetensors.index.json"
MANIFEST = "pair.json"
# The tensor whose changed vs unchanged |w| the builder reports: a square attention matrix of the first layer.
PROBE = "model.layers.0.self_attn.q_proj.weight"
# Rows generated at a time, so that a 32000 x 4096 embedding never exists in fp32 whole.
CHUNK_ENTRIES = 1 << 22


@dataclass(frozen=True)
class ModelShape:
    """A Llama-family decoder's dimensions (grouped-query attention when kv_heads < heads)."""

    hidden: int
    inter: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool = False


SHAPES: dict[str, ModelShape] = {
    # ~58M parameters: the script's own test size
    "tiny": ModelShape(hidden=512, inter=1376, layers=8, heads=8, kv_heads=8, vocab=32000),
    # TinyLlama-1.1B: 1.10B
    "1b": ModelShape(hidden=2048, inter=5632, layers=22, heads=32, kv_heads=4, vocab=32000),
    # OpenLLaMA-3B: 3.43B
    "3b": ModelShape(hidden=3200, inter=8640, layers=26, heads=32, kv_heads=32, vocab=32000),
    # Llama-2-7B: 6.74B
    "7b": ModelShape(hidden=4096, inter=11008, layers=32, heads=32, kv_heads=32, vocab=32000),
    # SmolLM2-135M: 134.5M, tied embeddings
    "smollm2": ModelShape(hidden=576, inter=1536, layers=30, heads=9, kv_heads=3, vocab=49152, tied=True),
}


def llama_tensors(m: ModelShape) -> dict[str, tuple[int, ...]]:
    """Every parameter's name and shape, in a Hugging Face Llama checkpoint's naming and order."""
    kv = m.kv_heads * (m.hidden // m.heads)
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (m.vocab, m.hidden)}
    for i in range(m.layers):
        p = f"model.layers.{i}."
        shapes.update(
            {
                p + "self_attn.q_proj.weight": (m.hidden, m.hidden),
                p + "self_attn.k_proj.weight": (kv, m.hidden),
                p + "self_attn.v_proj.weight": (kv, m.hidden),
                p + "self_attn.o_proj.weight": (m.hidden, m.hidden),
                p + "mlp.gate_proj.weight": (m.inter, m.hidden),
                p + "mlp.up_proj.weight": (m.inter, m.hidden),
                p + "mlp.down_proj.weight": (m.hidden, m.inter),
                p + "input_layernorm.weight": (m.hidden,),
                p + "post_attention_layernorm.weight": (m.hidden,),
            }
        )
    shapes["model.norm.weight"] = (m.hidden,)
    if not m.tied:
        shapes["lm_head.weight"] = (m.vocab, m.hidden)
    return shapes


def params(shapes: dict[str, tuple[int, ...]]) -> int:
    return sum(math.prod(s) for s in shapes.values())


def groups_by_count(names: list[str], shards: int) -> list[list[str]]:
    per = -(-len(names) // shards)
    return [names[i : i + per] for i in range(0, len(names), per)]


def groups_by_bytes(shapes: dict[str, tuple[int, ...]], max_bytes: float, itemsize: int = 2) -> list[list[str]]:
    """Consecutive tensors up to `max_bytes` a shard, as `save_pretrained(max_shard_size=...)` cuts them."""
    groups: list[list[str]] = [[]]
    size = 0
    for name, shape in shapes.items():
        nbytes = math.prod(shape) * itemsize
        if groups[-1] and size + nbytes > max_bytes:
            groups.append([])
            size = 0
        groups[-1].append(name)
        size += nbytes
    return groups


def pair_dirs(root: Path) -> tuple[Path, Path]:
    return root / "base", root / "tuned"


def read_manifest(root: Path) -> dict | None:
    """The manifest of a complete pair under `root`, or None."""
    path = root / MANIFEST
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def _gen(seed: int, index: int) -> torch.Generator:
    # One stream per tensor: a tensor's values do not depend on which tensors came before it or on the sharding.
    return torch.Generator().manual_seed(seed * 1_000_003 + index)


def _bf16_changed_share(w: torch.Tensor, z: torch.Tensor, s: float) -> float:
    return ((w.float() + s * z).bfloat16() != w).double().mean().item()


def calibrate_scale(share: float, std: float = 0.02, n: int = 1 << 18, seed: int = 0) -> float:
    """The update std s with which bf16(w + N(0, s)) differs from w (w ~ N(0, std) in bf16) on `share` of entries.

    Bisection on log s over a fixed sample: the share grows monotonically with s.
    """
    g = _gen(seed, -1)
    w = (torch.randn(n, generator=g) * std).bfloat16()
    z = torch.randn(n, generator=g)
    lo, hi = math.log(std * 1e-6), math.log(std)
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _bf16_changed_share(w, z, math.exp(mid)) < share else (lo, mid)
    return math.exp((lo + hi) / 2)


class RLUpdate:
    """base: matrices ~ N(0, std), norms 1.0, in bf16; tuned = bf16(float(base) + u), u ~ N(0, s_t) in fp32.

    s_t is drawn per tensor, log-uniform within a factor `spread` around the scale that changes `share` of a
    matrix's entries (so each matrix changes ~share/sqrt(spread) to ~share*sqrt(spread) of its entries). bf16's
    spacing grows with |w|, so a fixed-size step moves small weights far more often than large ones.
    """

    def __init__(self, seed: int = 0, share: float = 0.10, spread: float = 2.0, std: float = 0.02):
        self.seed, self.share, self.spread, self.std = seed, share, spread, std
        self.centre = calibrate_scale(share, std, seed=seed)
        self.scales: dict[str, float] = {}

    def spec(self) -> dict:
        return {"recipe": "rl-update", "seed": self.seed, "share": self.share, "spread": self.spread, "std": self.std}

    def __call__(self, index: int, name: str, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        g = _gen(self.seed, index)
        s = self.centre * self.spread ** (torch.rand((), generator=g).item() - 0.5)
        self.scales[name] = s
        base = torch.empty(shape, dtype=torch.bfloat16)
        tuned = torch.empty(shape, dtype=torch.bfloat16)
        flat_b, flat_t = base.view(-1), tuned.view(-1)
        n = flat_b.numel()
        for start in range(0, n, CHUNK_ENTRIES):
            k = min(CHUNK_ENTRIES, n - start)
            if len(shape) == 1:
                w = torch.ones(k)
            else:
                w = torch.randn(k, generator=g) * self.std
            flat_b[start : start + k] = w
            u = torch.randn(k, generator=g) * s
            flat_t[start : start + k] = flat_b[start : start + k].float() + u
        return base, tuned


def write_pair(
    root: Path,
    shapes: dict[str, tuple[int, ...]],
    groups: list[list[str]],
    make: Callable[[int, str, tuple[int, ...]], tuple[torch.Tensor, torch.Tensor]],
    spec: dict,
) -> tuple[Path, Path]:
    """Write base and tuned under `root` (reused when a complete pair of the same spec is there).

    One tensor pair in memory at a time: each shard's header is written first, then every tensor into its slot.
    An interrupted build removes both folders, so nothing half-written is ever taken for a pair.
    """
    base_dir, tuned_dir = pair_dirs(root)
    done = read_manifest(root)
    if done is not None and done["spec"] == spec:
        return base_dir, tuned_dir
    remove_pair(root)
    tensors: dict[str, dict] = {}
    weight_map: dict[str, str] = {}
    index = {name: i for i, name in enumerate(shapes)}
    try:
        for d in (base_dir, tuned_dir):
            d.mkdir(parents=True)
        with progress_bar(f"writing {root.name}", len(shapes), True) as advance:
            for s, names in enumerate(groups):
                fname = f"model-{s + 1:05d}-of-{len(groups):05d}.safetensors"
                layout = [(n, torch.bfloat16, shapes[n]) for n in names]
                writers = [SafetensorsStreamWriter(d / fname, layout) for d in (base_dir, tuned_dir)]
                for n in names:
                    b, t = make(index[n], n, shapes[n])
                    writers[0].write(n, b)
                    writers[1].write(n, t)
                    tensors[n] = _tensor_record(n, b, t, make)
                    weight_map[n] = fname
                    advance(n)
                for w in writers:
                    w.close()
        total = 2 * params(shapes)
        for d in (base_dir, tuned_dir):
            atomic_write_json(d / INDEX, {"metadata": {"total_size": total}, "weight_map": weight_map})
        atomic_write_json(root / MANIFEST, {"spec": spec, "tensors": tensors})
    except BaseException:
        remove_pair(root)
        raise
    return base_dir, tuned_dir


def _tensor_record(name: str, b: torch.Tensor, t: torch.Tensor, make) -> dict:
    changed = b != t
    rec = {"shape": list(b.shape), "numel": b.numel(), "changed": int(changed.sum())}
    scale = getattr(make, "scales", {}).get(name)
    if scale is not None:
        rec["scale"] = scale
    if name == PROBE:
        a = b.float().abs()
        rec["median_abs_w_changed"] = a[changed].median().item() if changed.any() else None
        rec["median_abs_w_unchanged"] = a[~changed].median().item() if (~changed).any() else None
    return rec


def remove_pair(root: Path) -> None:
    """Delete the pair's files (the manifest first, so a half-deleted pair is never taken for a complete one)."""
    (root / MANIFEST).unlink(missing_ok=True)
    for d in pair_dirs(root):
        shutil.rmtree(d, ignore_errors=True)


def describe(manifest: dict) -> str:
    """Changed share overall and over the matrices, and the probe tensor's changed vs unchanged median |w|."""
    recs = manifest["tensors"]
    changed = sum(r["changed"] for r in recs.values())
    numel = sum(r["numel"] for r in recs.values())
    lines = [f"changed entries: {changed / numel:.2%} of all ({changed:,} of {numel:,})"]
    mats = [r for r in recs.values() if len(r["shape"]) == 2]
    if mats:
        share = sum(r["changed"] for r in mats) / sum(r["numel"] for r in mats)
        each = [r["changed"] / r["numel"] for r in mats]
        lines.append(f"  2-D tensors: {share:.2%} changed; per tensor {min(each):.2%} to {max(each):.2%}")
    probe = recs.get(PROBE)
    if probe and probe.get("median_abs_w_changed") is not None:
        lines.append(
            f"  {PROBE}: {probe['changed'] / probe['numel']:.2%} changed; median |w| of changed entries "
            f"{probe['median_abs_w_changed']:.5f} vs unchanged {probe['median_abs_w_unchanged']:.5f}"
        )
    return "\n".join(lines)


def shape_spec(m: ModelShape) -> dict:
    return asdict(m)
