"""`rldelta reproduce` end to end, offline, on a catalog of fabricated tiny pairs written into a local hub cache.

One bf16 pair, one FP8 pair (block scales), one pickled `.bin` pair, one with a grown vocabulary, one missing.
Every number of the output is recomputed here with numpy/scipy from the tensors written.
"""

from __future__ import annotations

import html
import json
import math
import re

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file
from scipy.stats import mannwhitneyu
from typer.testing import CliRunner

from conftest import bf16_rne
from rldelta.checkpoint.hub import parse_hub_id
from rldelta.cli import app
from rldelta.reproduce import ReproduceError, figure_verdict, load_catalog, run_reproduce
from test_readers import fp8_values, hub_cache, np_rank

ATOL = 1e-5
SHAPES = {
    "model.embed_tokens.weight": (20, 12),
    "model.layers.0.self_attn.q_proj.weight": (12, 12),
    "model.layers.0.mlp.up_proj.weight": (16, 12),
    "model.norm.weight": (14,),
}  # 590 entries: ten |w| deciles of 59 each


def bf16_model(seed: int) -> dict[str, torch.Tensor]:
    """Weights with pairwise distinct |w| from 2^-7 to ~5 (so the |w| deciles have no ties) and random signs."""
    rng = np.random.default_rng(seed)
    n = sum(math.prod(s) for s in SHAPES.values())
    bits = (0x3C00 + 2 * rng.permutation(n)).astype(np.uint16) | (rng.integers(0, 2, n, dtype=np.uint16) << 15)
    out, pos = {}, 0
    for name, shape in SHAPES.items():
        k = math.prod(shape)
        out[name] = torch.from_numpy(bits[pos : pos + k].view(np.int16).reshape(shape).copy()).view(torch.bfloat16)
        pos += k
    return out


def rl_step(model: dict[str, torch.Tensor], seed: int, size: float = 3e-3) -> dict[str, torch.Tensor]:
    """A dense update of one size, stored back in the model's dtype: rounding decides which entries change."""
    g = torch.Generator().manual_seed(seed)
    return {n: (t.float() + size * torch.randn(t.shape, generator=g)).to(t.dtype) for n, t in model.items()}


def f32(t: torch.Tensor) -> np.ndarray:
    if t.dtype == torch.bfloat16:
        return (t.contiguous().view(torch.int16).numpy().astype(np.uint16).astype(np.uint32) << 16).view(np.float32)
    return t.numpy().astype(np.float32)


def bits(t: torch.Tensor) -> np.ndarray:
    return t.contiguous().view({1: torch.uint8, 2: torch.int16, 4: torch.int32}[t.element_size()]).numpy()


def expected(base: dict, tuned: dict, rounding: bool) -> dict:
    """The reproduce row's measured numbers from numpy (scipy for the AUC), tensors given as float32 + bits."""
    numel = changed = changed_atol = added = 0
    ranks, absw, labels = [], [], []
    for name, b in base.items():
        t = tuned[name]
        if t.shape != b.shape:
            added += (t.shape[0] - b.shape[0]) * t.shape[1]
            t = t[: b.shape[0]]
        ch = bits(b) != bits(t)
        delta = f32(t) - f32(b)
        numel += b.numel()
        changed += int(ch.sum())
        changed_atol += int((np.abs(delta) > ATOL).sum())
        if b.ndim == 2:
            ranks.append(np_rank(delta) / min(b.shape))
        absw.append(np.abs(f32(b)).reshape(-1))
        labels.append(ch.reshape(-1))
    out = {
        "numel": numel,
        "changed": changed,
        "changed_atol": changed_atol,
        "added": added,
        "sparsity_bitwise": 1 - changed / numel,
        "sparsity_atol": 1 - changed_atol / numel,
        "mean_rank_frac": float(np.mean(ranks)),
        "lowest_decile_share": None,
        "auc": None,
    }
    if rounding:
        w, y = np.concatenate(absw), np.concatenate(labels)
        assert len(np.unique(w)) == w.size and w.size % 10 == 0  # deciles without ties: the count is exact
        lowest = np.argsort(w)[: w.size // 10]
        out["lowest_decile_share"] = y[lowest].sum() / y.sum()
        out["auc"] = mannwhitneyu(-w[y], -w[~y]).statistic / (y.sum() * (~y).sum())
    return out


@pytest.fixture
def fabricated(tmp_path, monkeypatch):  # noqa: PLR0915
    """The hub cache, the catalog file and the numpy expectations of each pair."""
    hub = tmp_path / "hub"
    hub.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    want = {}

    # bf16, as published models are
    base = bf16_model(0)
    tuned = rl_step(base, 1)
    hub_cache(hub, "fab/bf16-sft", base)
    hub_cache(hub, "fab/bf16-rl", tuned)
    want["bf16"] = expected(base, tuned, rounding=True)

    # FP8 with 128×128 block scales on both sides (DeepSeek-V3's layout): bits and one scale changed
    rng = np.random.default_rng(2)
    wb = rng.integers(0, 256, size=(200, 140), dtype=np.uint8)
    wb[(wb & 0x7E) == 0x7E] = 0x38  # no NaN (0x7F/0xFF), nor after a flip of bit 0
    wt = wb.copy()
    wt[rng.random(wb.shape) < 0.1] ^= 0x01
    sb = rng.uniform(0.5, 2, size=(2, 2)).astype(np.float32)
    st = sb.copy()
    st[1, 1] *= 2
    for repo, w, s in (("fab/fp8-base", wb, sb), ("fab/fp8-rl", wt, st)):
        snap = hub_cache(hub, repo, {"placeholder": torch.zeros(1)})
        (snap / "model.safetensors").unlink()
        fp8 = torch.from_numpy(w).view(torch.float8_e4m3fn)
        save_file(
            {
                "model.layers.0.mlp.up_proj.weight": fp8,
                "model.layers.0.mlp.up_proj.weight_scale_inv": torch.from_numpy(s),
            },
            str(snap / "model.safetensors"),
        )
    big = lambda s: np.kron(s, np.ones((128, 128), np.float32))[:200, :140]  # noqa: E731
    ch = (wb != wt) | (big(sb) != big(st))
    delta = fp8_values(wt) * big(st) - fp8_values(wb) * big(sb)
    want["fp8"] = {
        "numel": wb.size,
        "changed": int(ch.sum()),
        "changed_atol": int((np.abs(delta) > ATOL).sum()),
        "added": 0,
        "sparsity_bitwise": 1 - ch.sum() / wb.size,
        "sparsity_atol": 1 - (np.abs(delta) > ATOL).sum() / wb.size,
        "mean_rank_frac": np_rank(delta) / 140,
        "lowest_decile_share": None,
        "auc": None,
    }

    # pickled .bin, an fp32 base and its tuned copy published in bf16 (so no rounding null: that is measured where
    # the base is bf16). Read as the paper read its pairs, both in bf16: the cast itself is no change.
    fbase = {n: torch.randn(t.shape, generator=torch.Generator().manual_seed(3)) for n, t in bf16_model(3).items()}
    ftuned = {n: t.clone() for n, t in fbase.items()}
    ftuned["model.layers.0.self_attn.q_proj.weight"][:4] += 0.25  # a rank-1 update of four rows, above bf16's ULP
    ftuned["model.norm.weight"][0] += 1e-7  # below half a bf16 ULP: gone in bf16, as in the paper's reading
    ftuned = {n: t.bfloat16() for n, t in ftuned.items()}
    for repo, tensors in (("fab/bin-sft", fbase), ("fab/bin-rl", ftuned)):
        snap = hub_cache(hub, repo, {"placeholder": torch.zeros(1)})
        (snap / "model.safetensors").unlink()
        torch.save(tensors, snap / "pytorch_model.bin")
    want["bin"] = expected({n: bf16_rne(t.numpy()) for n, t in fbase.items()}, ftuned, rounding=False)
    assert want["bin"]["changed"] == 4 * 12  # the update's rows, not the cast

    # a grown vocabulary (Tulu-3's 128,256 -> 128,264, in small): 3 rows added to the embedding
    vbase = bf16_model(4)
    vtuned = rl_step(vbase, 5)
    extra = torch.randn(3, 12, generator=torch.Generator().manual_seed(6)).to(torch.bfloat16)
    vtuned["model.embed_tokens.weight"] = torch.cat([vtuned["model.embed_tokens.weight"], extra])
    hub_cache(hub, "fab/vocab-sft", vbase)
    hub_cache(hub, "fab/vocab-rl", vtuned)
    want["vocab"] = expected(vbase, vtuned, rounding=True)

    published = {
        "bf16": (round(100 * want["bf16"]["sparsity_atol"], 6), 100 * want["bf16"]["mean_rank_frac"] - 5),
        "bin": (100 * want["bin"]["sparsity_atol"] - 3, "nan"),
    }
    more_vocab = ["lr = 3e-3", "steps = 1", 'hyper_source = "this test"']
    # the other published columns: Table 6's 1e-8 figure (against bitwise), a second 1e-5 figure, a range only
    more = {
        "bf16": [f"sparsity_1e8_pct = {100 * want['bf16']['sparsity_bitwise'] + 4}", 'tolerance_source = "Table 6"'],
        "bin": [f"sparsity_alt_pct = {round(100 * want['bin']['sparsity_atol'], 6)}", 'sparsity_alt_source = "T6"'],
        "vocab": more_vocab
        + [
            f"sparsity_range_pct = [{100 * want['vocab']['sparsity_atol'] + 2}, 90.0]",
            'range_source = "Appendix C"',
        ],
        "fp8": [f"sparsity_range_pct = [1.0, {100 * want['fp8']['sparsity_atol'] + 0.5}]", "lr = 1e-6", "steps = 10"],
        "gone": ["sparsity_1e8_pct = 50.0"],
    }
    more["fp8"] += ['hyper_source = "a model card"', 'sparsity_source = "Table 1"']
    pairs = {"bf16": "bf16-sft bf16-rl", "fp8": "fp8-base fp8-rl", "bin": "bin-sft bin-rl"}
    pairs |= {"vocab": "vocab-sft vocab-rl", "gone": "gone-sft gone-rl"}
    lines = ['title = "fabricated"', 'source = "this test"', "match_points = 1.0", 'hyperparameters = "none known"', ""]
    for name, ids in pairs.items():
        b, t = ids.split()
        sp, rk = published.get(name, ("nan", "nan"))
        lines += [
            "[[pair]]",
            f'name = "{name}"',
            f'base = "fab/{b}"',
            f'tuned = "fab/{t}"',
            'algorithm = "GRPO"',
            f"sparsity_pct = {sp}",
            f"rank_pct = {rk}",
            'published_in = "nowhere, Table 1"',
            *more.get(name, []),
            "",
        ]
    lines += ["[[gap]]", 'name = "unnamed"', 'table = "Table 5"', 'figures = "RFT: 91.2"', 'reason = "not named"']
    catalog = tmp_path / "catalog.toml"
    catalog.write_text("\n".join(lines))
    return catalog, want


def test_reproduce_fabricated_catalog_end_to_end(fabricated, tmp_path):
    catalog, want = fabricated
    result = run_reproduce(tmp_path / "out", catalog=catalog)
    table = pd.read_parquet(tmp_path / "out" / "reproduce.parquet").set_index("name")
    assert list(table.index) == ["bf16", "fp8", "bin", "vocab", "gone"]
    for name, exp in want.items():
        row = table.loc[name]
        assert row["status"] == "measured", name
        for key, value in exp.items():
            if value is None:
                assert row[key] is None or np.isnan(row[key]), (name, key)
            elif isinstance(value, (int, np.integer)):
                assert row[key] == value, (name, key)
            else:
                assert row[key] == pytest.approx(value, rel=1e-9, abs=1e-12), (name, key)
    assert table.loc["fp8", "dtype_base"] == "F8_E4M3" and table.loc["vocab", "added"] == 36

    # the verdicts: published figures set in the catalog relative to what numpy measured
    assert table.loc["bf16", "sparsity_verdict"] == "matches"
    assert table.loc["bf16", "rank_verdict"] == "differs by +5.0 points"
    assert table.loc["bin", "sparsity_verdict"] == "differs by +3.0 points"  # published 3 points below
    assert table.loc["bin", "rank_verdict"] == table.loc["fp8", "sparsity_verdict"] == "no published figure"
    # the new published columns, each against numpy's measurement: bitwise vs Table 6's 1e-8 figure (4 points
    # above it), a second 1e-5 figure (equal), a range above the measurement (2 points) and one around it
    assert table.loc["bf16", "sparsity_1e8_verdict"] == "differs by -4.0 points"
    assert table.loc["bf16", "published_sparsity_1e8"] == pytest.approx(want["bf16"]["sparsity_bitwise"] + 0.04)
    assert (
        table.loc["bin", "sparsity_alt_verdict"] == "matches"
        and table.loc["bin", "published_sparsity_alt_source"] == "T6"
    )
    assert table.loc["vocab", "range_verdict"] == "outside the published range by -2.0 points"
    assert table.loc["fp8", "range_verdict"] == "within the published range"
    assert table.loc["bf16", "range_verdict"] == table.loc["vocab", "sparsity_1e8_verdict"] == "no published figure"
    assert (
        table.loc["bf16", "verdict"]
        == "sparsity: matches; bitwise vs 1e-8: differs by -4.0 points; rank: differs by +5.0 points"
    )
    assert table.loc["gone", "sparsity_1e8_verdict"] == "not available"
    # lr/steps only with their source; the prediction's column says why it is empty
    assert (
        table.loc["fp8", "lr"] == 1e-6
        and table.loc["fp8", "steps"] == 10
        and table.loc["fp8", "hyper_source"] == "a model card"
    )
    assert table.loc["bf16", "predicted_note"] == "no prediction: none known" and np.isnan(table.loc["bf16", "lr"])
    assert (
        table.loc["fp8", "predicted_note"].startswith("no prediction: ")
        and "floating-point" in table.loc["fp8", "predicted_note"]
    )
    # the law's prediction where lr and steps are given: the same number `rldelta predict` gives for that base
    from rldelta.predict import Settings, predict, read_base

    p = predict(read_base("fab/vocab-sft"), Settings(lr=3e-3, steps=1))
    assert table.loc["vocab", "predicted_sparsity"] == pytest.approx(1 - p["changed_frac"], abs=1e-12)
    assert (
        table.loc["vocab", "predicted_lo"]
        <= table.loc["vocab", "predicted_sparsity"]
        <= table.loc["vocab", "predicted_hi"]
    )
    assert result["gaps"] == [{"name": "unnamed", "table": "Table 5", "figures": "RFT: 91.2", "reason": "not named"}]
    gone = table.loc["gone"]
    assert gone["status"] == "not available" and gone["verdict"].startswith("not available: fab/gone-sft")
    assert all(gone[c] is None or np.isnan(gone[c]) for c in ("numel", "sparsity_atol", "mean_rank_frac", "auc"))
    assert result["measured"] == ["bf16", "fp8", "bin", "vocab"] and result["not_available"] == ["gone"]

    # per module: the bf16 pair's q_proj row against numpy
    mods = pd.read_parquet(tmp_path / "out" / "by_module.parquet")
    q = mods[(mods["pair"] == "bf16") & (mods["module"] == "self_attn.q_proj")].iloc[0]
    b, t = bf16_model(0), rl_step(bf16_model(0), 1)
    name = "model.layers.0.self_attn.q_proj.weight"
    assert q["changed_frac"] == pytest.approx((bits(b[name]) != bits(t[name])).mean())
    csv = pd.read_csv(tmp_path / "out" / "reproduce.csv").set_index("name")
    assert csv.loc["bin", "changed"] == want["bin"]["changed"]
    first = (tmp_path / "out" / "reproduce.csv").read_text().splitlines()[1].split(",")
    assert first[7] == str(want["bf16"]["numel"])  # a count written as an integer, not 590.0
    assert json.loads((tmp_path / "out" / "reproduce.json").read_text())["pairs"][4]["numel"] is None


def test_reproduce_cli_page_and_dry_run(fabricated, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # a wide terminal: rich wraps table cells at 80 columns otherwise
    catalog, want = fabricated
    out = tmp_path / "out"
    r = CliRunner().invoke(
        app, ["reproduce", "--catalog", str(catalog), "--only", "bf16", "--only", "gone", "-o", str(out)]
    )
    assert r.exit_code == 0, r.output
    assert "matches" in r.output and "not available" in r.output
    page = (out / "reproduce.html").read_text()
    assert "Measured here: bf16." in page and "Not available" in page and "gone" in page
    table = pd.read_parquet(out / "reproduce.parquet")
    # every number on the page is a cell tagged with its table, row and column: check each against the table
    cells = re.findall(
        r'data-table="reproduce" data-row="(\d+)" data-col="(\w+)" data-fmt="\w+" data-value="([^"]*)"', page
    )
    assert len(cells) > 10
    for row, col, value in cells:
        got = table.iloc[int(row)][col]
        value = html.unescape(value)
        if value == "None":
            assert got is None or (isinstance(got, float) and np.isnan(got)), col
        else:
            assert float(value) == pytest.approx(float(got)), col
    assert float(table.set_index("name").loc["bf16", "auc"]) == pytest.approx(want["bf16"]["auc"])

    r = CliRunner().invoke(app, ["reproduce", "--catalog", str(catalog), "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "cached" in r.output and "not available" in r.output and "fab/gone-sft" in r.output
    # every pair with its published figures, each with its table, and the figures without a pair
    out = re.sub(r"\s*│\s*", " ", r.output)  # table cells wrap; the text of each pair's cell is what matters
    assert "|Δ|≤1e-8 50% (nowhere, Table 1)" in out and "(Appendix C)" in out and "RFT: 91.2" in out

    r = CliRunner().invoke(app, ["reproduce", "--catalog", str(catalog), "--only", "nope", "-o", str(out)])
    assert r.exit_code == 2 and "--only nope: no such pair" in r.output


def test_shipped_catalog_offline_says_not_available(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cat = load_catalog()
    assert len(cat.pairs) == 18
    assert all(parse_hub_id(p.base) and parse_hub_id(p.tuned) for p in cat.pairs)
    result = run_reproduce(tmp_path / "out", catalog=None, rank=False)
    assert result["measured"] == [] and len(result["not_available"]) == 18
    assert all(r["verdict"].startswith("not available: ") for r in result["pairs"])


# The published figures of arXiv:2505.11711 the shipped catalog must hold, each with its table: (pair, figure, value %,
# source). Table 1 |Δ| <= 1e-5 sparsity, Table 2 rank, Table 5 and Table 6 rows, Appendix C's SFT range.
PUBLISHED = [
    ("tulu3-8b-dpo", "sparsity", 81.4, "Table 1"),
    ("tulu3-70b-dpo", "sparsity", 95.2, "Table 1"),
    ("deepseek-math-7b-rl", "sparsity", 68.5, "Table 1"),
    ("deepseek-r1-zero", "sparsity", 86.0, "Table 1"),
    ("mistral-orpo-beta", "sparsity", 76.9, "Table 1"),
    ("eurus-7b-kto", "sparsity", 96.0, "Table 1"),
    ("llama3-8b-sft-kto", "sparsity", 81.2, "Table 1"),
    ("math-shepherd-mistral-7b-rl", "sparsity", 80.8, "Table 1"),
    ("llama3-8b-simpo", "sparsity", 86.5, "Table 1"),
    ("eurus2-7b-prime", "sparsity", 77.0, "Table 1"),
    ("tulu3-8b-dpo", "rank", 99.8, "Table 2"),
    ("eurus2-7b-prime", "rank", 99.5, "Table 2"),
    ("llama3-8b-sft-kto", "rank", 99.2, "Table 2"),
    ("deepseek-math-7b-rl", "rank", 99.4, "Table 2"),
    ("llama3-8b-simpo", "sparsity_alt", 76.42, "Table 6 (1e-5 column)"),
    ("llama3-base-8b-sft-simpo", "sparsity", 86.5, "Table 6 (1e-5 column)"),
    ("zephyr-7b-beta-dpo", "sparsity", 7.7, "Table 5 (out-of-distribution data)"),
]


# The learning rates of the released runs, as their recipes state them: open-instruct docs/tulu3.md's reproduction
# commands (Tulu 3 SFT and DPO) and the SimPO README's table of the released models' hyperparameters.
LRS = {
    "tulu3-8b-dpo": 5e-7,
    "tulu3-70b-dpo": 2e-7,
    "llama31-8b-tulu3-sft": 5e-6,
    "llama31-70b-tulu3-sft": 2e-6,
    "llama3-8b-simpo": 1e-6,
    "llama3-base-8b-sft-simpo": 6e-7,
    "mistral-7b-instruct-simpo": 5e-7,
    "mistral-7b-base-sft-simpo": 3e-7,
}


def test_shipped_catalog_holds_the_published_figures():
    cat = load_catalog()
    pairs = {p.name: p for p in cat.pairs}
    for name, fig, value, source in PUBLISHED:
        p = pairs[name]
        assert getattr(p, fig) == pytest.approx(value / 100, abs=1e-12), (name, fig)
        assert getattr(p, {"sparsity": "sparsity_source"}.get(fig, f"{fig}_source")) == source, (name, fig)
    # every other figure is NaN (not transcribed), never a guess; the SFT pairs carry Appendix C's range only
    figures = {(n, f) for n, f, _, _ in PUBLISHED}
    for p in cat.pairs:
        for fig in ("sparsity", "sparsity_alt", "rank", "sparsity_1e8", "sparsity_1e7", "sparsity_1e6"):
            assert (p.name, fig) in figures or math.isnan(getattr(p, fig)), (p.name, fig)
        sft = p.algorithm == "SFT"
        assert p.sparsity_range == ((0.06, 0.15) if sft else (p.sparsity_range[0], p.sparsity_range[1]))
        assert sft or math.isnan(p.sparsity_range[0])
        # an lr only where a training recipe states it (with its URL); no source found states a step count
        assert p.lr == LRS.get(p.name) and p.steps is None, p.name
        assert (p.lr is None) == (p.hyper_source == ""), p.name
        assert p.lr is None or "https://github.com/" in p.hyper_source, p.name
    assert sum(p.algorithm == "SFT" for p in cat.pairs) == 3
    assert {"mistral-orpo-alpha", "mistral-7b-instruct-simpo", "mistral-7b-base-sft-simpo"} <= set(pairs)
    note = pairs["llama3-8b-simpo"].note
    assert "86.5" in note and "76.42" in note and "not decided" in note
    assert {g.figures for g in cat.gaps} == {
        "Qwen2.5-Math-7B, RFT: 91.2",
        "Qwen2.5-Math-7B, RAFT++: 69.4",
        "Llama-3.1-8B-SFT, SFT: 6.8",
        "Llama-3.1-8B-SFT, DPO: 6.8",
    }
    assert "guessed" in cat.hyperparameters


def test_catalog_errors_are_one_line(tmp_path):
    bad = tmp_path / "c.toml"
    bad.write_text('[[pair]]\nname = "x"\nbase = "a/b"\n')
    with pytest.raises(ReproduceError, match="c.toml: pair 1: missing key 'tuned'"):
        load_catalog(bad)
    bad.write_text('[[pair]]\nname = "x"\nbase = "a/b"\ntuned = "a/c"\nsparsity_pct = 180\n')
    with pytest.raises(ReproduceError, match=r"\(x\): sparsity_pct must be a percentage"):
        load_catalog(bad)
    assert figure_verdict(0.8, 0.805, 1.0) == "matches"
    assert figure_verdict(0.8, 0.7, 1.0) == "differs by -10.0 points"
    assert figure_verdict(float("nan"), 0.7, 1.0) == "no published figure"
    assert figure_verdict(0.8, None, 1.0) == "not available"
    bad.write_text('[[pair]]\nname = "x"\nbase = "a/b"\ntuned = "a/c"\nlr = 1e-6\nsteps = 10\n')
    with pytest.raises(ReproduceError, match=r"\(x\): lr/steps need hyper_source"):
        load_catalog(bad)
