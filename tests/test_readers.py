"""The readers of issue 12: hub ids, FP8 with block scales, pickled `.bin`/`.pt`, resized vocabularies.

Every expected number is computed here with numpy from the stored bits (FP8 decoded by torch only to get its value
table, bf16 rounded by bit arithmetic), never through rldelta's own code paths.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from conftest import write_checkpoint
from rldelta.checkpoint import CheckpointError, open_checkpoint, pair_tensors
from rldelta.checkpoint.hub import choose_weight_files, parse_hub_id
from rldelta.diff import DiffError, run_diff

ATOL = 1e-5


def hub_cache(root: Path, repo: str, tensors: dict[str, torch.Tensor], config: dict | None = None, rev="abc123"):
    """A huggingface_hub cache entry built by hand: models--org--name/snapshots/<rev>/ and refs/main."""
    folder = root / ("models--" + repo.replace("/", "--"))
    write_checkpoint(folder / "snapshots" / rev, tensors, "dir", config or {})
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(rev)
    return folder / "snapshots" / rev


@pytest.fixture
def hub(tmp_path, monkeypatch):
    root = tmp_path / "hub"
    root.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return root


def read(out: Path) -> tuple[pd.DataFrame, dict]:
    return pd.read_parquet(out / "tensors.parquet").set_index("name"), json.loads((out / "summary.json").read_text())


def np_rank(delta: np.ndarray) -> int:
    s = np.linalg.svd(delta.astype(np.float64), compute_uv=False)
    return int((s > s.max() * max(delta.shape) * np.finfo(np.float32).eps).sum()) if s.size and s.max() > 0 else 0


# ---- hub ids --------------------------------------------------------------------------------------------------


def test_hub_ids_resolve_from_the_cache_offline(hub, tmp_path, monkeypatch):
    g = torch.Generator().manual_seed(0)
    base = {"w": torch.randn(6, 5, generator=g)}
    tuned = {"w": base["w"].clone()}
    tuned["w"][1, 2] += 1.0
    hub_cache(hub, "fab/base", base)
    rev = "0123456789abcdef0123456789abcdef01234567"  # a commit hash: names its snapshot without any refs/ file
    hub_cache(hub, "fab/tuned", tuned, rev=rev)

    ck = open_checkpoint("fab/base")
    assert torch.equal(ck.get("w"), base["w"])
    assert torch.equal(open_checkpoint(f"fab/tuned@{rev}").get("w"), tuned["w"])  # a revision given explicitly
    assert torch.equal(open_checkpoint("fab/base@main").get("w"), base["w"])
    summary = run_diff("fab/base", "fab/tuned", tmp_path / "out")
    assert summary["totals"]["changed"] == 1

    # neither a local path nor cached, offline: one line naming the id and the cache
    with pytest.raises(
        CheckpointError, match=r"^fab/nope: not a local path, and not in the hub cache .*hub \(HF_HUB_OFFLINE=1\)$"
    ):
        open_checkpoint("fab/nope")
    with pytest.raises(CheckpointError, match="fab/base@zzz"):
        open_checkpoint("fab/base@zzz")

    # the command line takes the same ids; one that is not there is one line, no traceback
    from typer.testing import CliRunner

    from rldelta.cli import app

    r = CliRunner().invoke(app, ["diff", "fab/base", f"fab/tuned@{rev}", "-o", str(tmp_path / "cli")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["diff", "fab/base", "fab/nope", "-o", str(tmp_path / "cli2")])
    assert r.exit_code == 2 and "fab/nope: not a local path" in r.output and "Traceback" not in r.output

    # a local folder of the same spelling wins over the cached id
    monkeypatch.chdir(tmp_path)
    write_checkpoint(tmp_path / "fab" / "base", {"w": torch.zeros(2, 2)})
    assert torch.equal(open_checkpoint("fab/base").get("w"), torch.zeros(2, 2))


def test_hub_download_asks_only_for_the_weights_and_says_the_size_first(hub, tmp_path, monkeypatch, capsys):
    """The online path, with the hub replaced by a fake (no test reaches the network)."""
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    monkeypatch.delenv("HF_HUB_OFFLINE")
    listing = [("config.json", 10), ("model.safetensors", 3 << 20), ("pytorch_model.bin", 3 << 20), ("README.md", 5)]
    calls = []

    class FakeApi:
        def model_info(self, repo, revision=None, files_metadata=False):
            sib = [type("S", (), {"rfilename": f, "size": n})() for f, n in listing]
            return type("Info", (), {"siblings": sib})()

    def fake_snapshot_download(repo, *, revision=None, allow_patterns=None, cache_dir=None, local_files_only=False):
        calls.append((repo, sorted(allow_patterns), local_files_only))
        if local_files_only:
            raise LocalEntryNotFoundError("not cached")
        return str(hub_cache(Path(cache_dir), repo, {"w": torch.ones(2, 2)}))

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    ck = open_checkpoint("fab/online")
    assert torch.equal(ck.get("w"), torch.ones(2, 2))
    assert calls[-1] == ("fab/online", ["config.json", "model.safetensors"], False)  # no .bin twin, no README
    assert "fab/online: fetching 2 files, 3.0 MiB" in capsys.readouterr().err

    def unreachable(self, *a, **k):
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(FakeApi, "model_info", unreachable)
    with pytest.raises(CheckpointError, match=r"^fab/other: .*the hub is not reachable \(Name or service not known\)$"):
        open_checkpoint("fab/other")


def test_hub_id_spelling_and_file_choice():
    assert parse_hub_id("org/name") == ("org/name", None)
    assert parse_hub_id("org/name@v1.0") == ("org/name", "v1.0")
    assert parse_hub_id("/abs/path") is None and parse_hub_id("a/b/c") is None and parse_hub_id("name") is None
    files = [
        ("config.json", 1),
        ("model-00001-of-00002.safetensors", 10),
        ("model-00002-of-00002.safetensors", 10),
        ("model.safetensors.index.json", 1),
        ("pytorch_model.bin", 30),
        ("training_args.bin", 5),
        ("onnx/model.onnx", 7),
        ("README.md", 1),
    ]
    # safetensors where the repo has them: the .bin copy of the same weights is never fetched as well
    assert {f for f, _ in choose_weight_files(files)} == {
        "config.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
    }
    pickled_only = [f for f in files if "safetensors" not in f[0]]
    assert {f for f, _ in choose_weight_files(pickled_only)} == {"config.json", "pytorch_model.bin"}


# ---- FP8 with block scales ----------------------------------------------------------------------------------------


def fp8_values(bits: np.ndarray) -> np.ndarray:
    """The value of each FP8 E4M3 bit pattern from the 256-entry table (the one thing torch is asked here)."""
    table = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).float().numpy()
    return table[bits]


def np_bf16_bits(x: np.ndarray) -> np.ndarray:
    """fp32 -> bf16 bit patterns, round to nearest even, by bit arithmetic (finite inputs)."""
    u = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def _fp8_weight(rows: int, cols: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 256, size=(rows, cols), dtype=np.uint8)
    bits[(bits & 0x7E) == 0x7E] = 0x3C  # E4M3 has NaN at 0x7F/0xFF: no stored value, nor its bit-0 flip, is NaN
    return bits


def test_fp8_pair_counts_bit_and_scale_changes(tmp_path):
    rows, cols, block = 300, 260, (128, 128)  # 3×3 blocks, the last ones cut short
    nb = (-(-rows // 128), -(-cols // 128))
    bits = _fp8_weight(rows, cols, 0)
    rng = np.random.default_rng(1)
    scale = rng.uniform(0.5, 2.0, size=nb).astype(np.float32)
    t_bits, t_scale = bits.copy(), scale.copy()
    moved = [(0, 0), (5, 200), (140, 3), (299, 259), (200, 130), (250, 10), (131, 131)]
    for r, c in moved:
        t_bits[r, c] = bits[r, c] ^ 0x01  # the next FP8 value: K known entry changes
    t_scale[2, 0] *= 1.5  # one block scale changed: every entry of block (2, 0) changes value

    def save(folder: Path, b: np.ndarray, s: np.ndarray) -> Path:
        folder.mkdir()
        w = torch.from_numpy(b).view(torch.float8_e4m3fn)
        save_file(
            {
                "model.layers.0.mlp.up_proj.weight": w,
                "model.layers.0.mlp.up_proj.weight_scale_inv": torch.from_numpy(s),
            },
            str(folder / "model.safetensors"),
        )
        (folder / "config.json").write_text(json.dumps({"quantization_config": {"weight_block_size": list(block)}}))
        return folder

    base, tuned = save(tmp_path / "b", bits, scale), save(tmp_path / "t", t_bits, t_scale)
    run_diff(base, tuned, tmp_path / "out")
    df, summary = read(tmp_path / "out")

    # numpy: entries whose stored bits or block scale differ; values dequantized in fp32
    expand = lambda s: np.kron(s, np.ones(block, dtype=np.float32))[:rows, :cols]  # noqa: E731
    changed = (bits != t_bits) | (expand(scale) != expand(t_scale))
    b32 = fp8_values(bits) * expand(scale)
    t32 = fp8_values(t_bits) * expand(t_scale)
    delta = t32 - b32
    assert changed.sum() == len(moved) + 44 * 128  # block (2, 0) is rows 256..299, cols 0..127; no moved entry in it
    assert list(df.index) == ["model.layers.0.mlp.up_proj.weight"]  # the scale is no weight of its own
    row = df.iloc[0]
    assert row["dtype_base"] == row["dtype_tuned"] == "F8_E4M3"
    assert row["changed"] == changed.sum()
    assert row["changed_atol"] == (np.abs(delta) > ATOL).sum()
    assert row["delta_fro"] == pytest.approx(np.sqrt((delta.astype(np.float64) ** 2).sum()), rel=1e-6)
    # the engine sums the base's squares in fp32 within a chunk (delta_stats), hence 1e-5
    assert row["base_fro"] == pytest.approx(np.sqrt((b32.astype(np.float64) ** 2).sum()), rel=1e-5)
    assert row["rank"] == np_rank(delta)
    assert row["row_coverage"] == pytest.approx(changed.any(axis=1).mean())
    assert summary["totals"]["numel"] == rows * cols


def test_bf16_base_against_fp8_tuned(tmp_path):
    rows, cols = 130, 140
    bits = _fp8_weight(rows, cols, 3)
    scale = np.array([[0.75, 1.25], [1.0, 0.5]], dtype=np.float32)
    t32 = fp8_values(bits) * np.kron(scale, np.ones((128, 128), dtype=np.float32))[:rows, :cols]
    base_bits = np_bf16_bits(t32)
    base_bits[:3, :4] ^= 0x0001  # 12 entries the base holds one bf16 ULP away from the FP8 copy
    base = torch.from_numpy(base_bits.view(np.int16)).view(torch.bfloat16)
    write_checkpoint(tmp_path / "b", {"lm_head.weight": base}, "dir", {})
    tuned_dir = tmp_path / "t"
    tuned_dir.mkdir()
    save_file(
        {
            "lm_head.weight": torch.from_numpy(bits).view(torch.float8_e4m3fn),
            "lm_head.weight_scale_inv": torch.from_numpy(scale),
        },
        str(tuned_dir / "model.safetensors"),
    )
    run_diff(tmp_path / "b", tuned_dir, tmp_path / "out")
    df, _ = read(tmp_path / "out")
    row = df.loc["lm_head.weight"]
    b32 = (base_bits.astype(np.uint32) << 16).view(np.float32)
    assert row["dtype_base"] == "bfloat16" and row["dtype_tuned"] == "F8_E4M3"
    assert row["changed"] == (np_bf16_bits(t32) != base_bits).sum() == 12  # compared in the base's bf16
    assert row["changed_atol"] == (np.abs(t32 - b32) > ATOL).sum()
    assert row["rank"] == np_rank(t32 - b32)


def test_fp8_scale_of_the_wrong_shape_is_one_line(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    save_file(
        {"w": torch.zeros(256, 256).to(torch.float8_e4m3fn), "w_scale_inv": torch.ones(3, 2)},
        str(folder / "model.safetensors"),
    )
    with pytest.raises(CheckpointError, match=r"scale 'w_scale_inv' has shape \[3, 2\].*needs \[2, 2\]"):
        open_checkpoint(folder)


# ---- pickled .bin / .pt -------------------------------------------------------------------------------------------


def _model(seed: int, moved: bool) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    t = {
        "model.embed_tokens.weight": torch.randn(16, 8, generator=g).to(torch.bfloat16),
        "model.layers.0.self_attn.q_proj.weight": torch.randn(8, 8, generator=g).to(torch.bfloat16),
        "model.layers.0.mlp.down_proj.weight": torch.randn(8, 12, generator=g).to(torch.bfloat16),
        "model.norm.weight": torch.ones(8, dtype=torch.bfloat16),
    }
    if moved:
        g2 = torch.Generator().manual_seed(99)
        for name in list(t)[:3]:
            keep = torch.rand(t[name].shape, generator=g2) > 0.2
            t[name] = torch.where(keep, t[name], t[name] + 0.05 * torch.randn(t[name].shape, generator=g2).to(t[name]))
    return t


def write_pickled(folder: Path, tensors: dict[str, torch.Tensor], sharded: bool) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "training_args.bin").write_bytes(b"not weights, and never read")
    if not sharded:
        torch.save(tensors, folder / "pytorch_model.bin")
        return folder
    names = list(tensors)
    weight_map = {}
    for i, group in enumerate((names[::2], names[1::2])):
        shard = f"pytorch_model-{i + 1:05d}-of-00002.bin"
        torch.save({n: tensors[n] for n in group}, folder / shard)
        weight_map.update(dict.fromkeys(group, shard))
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return folder


@pytest.mark.parametrize("sharded", [False, True], ids=["single", "index"])
def test_pickled_weights_give_the_safetensors_results(tmp_path, sharded):
    base, tuned = _model(0, False), _model(0, True)
    run_diff(write_checkpoint(tmp_path / "sb", base), write_checkpoint(tmp_path / "st", tuned), tmp_path / "o1")
    run_diff(
        write_pickled(tmp_path / "pb", base, sharded), write_pickled(tmp_path / "pt", tuned, sharded), tmp_path / "o2"
    )
    a, sa = read(tmp_path / "o1")
    b, sb = read(tmp_path / "o2")
    assert a["changed"].sum() > 0
    pd.testing.assert_frame_equal(a.sort_index(), b.sort_index())
    assert sa["totals"] == sb["totals"]


class _WritesAFile:
    """Unpickling this calls exec, which writes a file: what a malicious checkpoint does."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (exec, (f"open({str(self.target)!r}, 'w').write('pwned')",))


def test_pickle_that_would_run_code_is_refused(tmp_path):
    target = tmp_path / "written-by-the-pickle"
    folder = tmp_path / "evil"
    folder.mkdir()
    torch.save({"w": torch.ones(2, 2), "payload": _WritesAFile(target)}, folder / "pytorch_model.bin")
    with pytest.raises(
        CheckpointError, match=r"pytorch_model.bin: refused: .*it would call (builtins\.)?exec while unpickling"
    ):
        open_checkpoint(folder)
    assert not target.exists()
    # the file really is malicious: an unrestricted load runs it (which is what the reader never does)
    torch.load(folder / "pytorch_model.bin", weights_only=False)
    assert target.read_text() == "pwned"


def test_pickle_with_something_else_than_tensors_is_refused(tmp_path):
    folder = tmp_path / "p"
    folder.mkdir()
    torch.save({"w": torch.ones(2), "step": 3}, folder / "model.pt")
    with pytest.raises(CheckpointError, match=r"model.pt: refused: entry 'step' is a int, not a tensor"):
        open_checkpoint(folder)


# ---- resized vocabularies -----------------------------------------------------------------------------------------


def test_resized_vocabulary_compares_the_shared_rows(tmp_path):
    g = torch.Generator().manual_seed(5)
    emb = torch.randn(10, 8, generator=g).to(torch.bfloat16)
    other = torch.randn(6, 4, generator=g).to(torch.bfloat16)
    t_emb = torch.cat([emb, torch.randn(3, 8, generator=g).to(torch.bfloat16)])  # 3 rows added
    t_emb[2, 5] += 1.0
    t_emb[9, 0] += 1.0
    base = {"model.embed_tokens.weight": emb, "model.layers.0.mlp.up_proj.weight": other}
    tuned = {"model.embed_tokens.weight": t_emb, "model.layers.0.mlp.up_proj.weight": torch.zeros(6, 5)}
    b, t = write_checkpoint(tmp_path / "b", base), write_checkpoint(tmp_path / "t", tuned)
    summary = run_diff(b, t, tmp_path / "out")
    df, _ = read(tmp_path / "out")
    row = df.loc["model.embed_tokens.weight"]
    shared = t_emb[:10].float().numpy() - emb.float().numpy()
    assert row["changed"] == (shared != 0).sum() == 2 and row["numel"] == 80 and list(row["shape"]) == [10, 8]
    assert row["added"] == 24
    assert row["rank"] == np_rank(shared)
    assert summary["resized"] == [{"name": "model.embed_tokens.weight", "base_shape": [10, 8], "tuned_shape": [13, 8]}]
    assert summary["totals"]["added"] == 24 and summary["totals"]["numel"] == 80
    # any other shape mismatch is still listed and skipped, and --strict still refuses it
    assert [m["name"] for m in summary["shape_mismatch"]] == ["model.layers.0.mlp.up_proj.weight"]
    assert "model.layers.0.mlp.up_proj.weight" not in df.index
    with pytest.raises(DiffError, match="up_proj"):
        run_diff(b, t, tmp_path / "strict", strict=True)
    # the pairing other commands use (surgery, masks) still calls the resized tensor a mismatch
    p = pair_tensors(open_checkpoint(b), open_checkpoint(t))
    assert "model.embed_tokens.weight" in [m["name"] for m in p.shape_mismatch]
