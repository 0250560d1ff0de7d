"""`rldelta diff` and `overlap` on hand-built mixture-of-experts checkpoints: the Mixtral per-expert layout, the
Qwen-MoE/DeepSeek layout with shared experts and router, and the stacked (fused) layout, each with planted per-expert
changes; every number checked against a direct numpy/scipy computation on the planted arrays."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors import safe_open
from scipy.stats import hypergeom

from conftest import write_checkpoint
from rldelta.diff import run_diff
from rldelta.metrics.experts import above_median, hypergeom_pmf, set_overlap, top_share
from rldelta.overlap import run_overlap
from rldelta.runtime.files import EXPERT_OVERLAP_TABLE
from rldelta.surgery import patch

H, INTER, E, LAYERS = 12, 6, 5, 2  # hidden, expert intermediate, experts per layer, layers
# (layer, expert) -> fraction of each of the expert's matrices changed; every other expert untouched
PLAN = {(0, 1): 0.1, (0, 3): 0.5, (1, 0): 0.2}
ROUTER = {0: 0.3, 1: 0.0}  # per layer
SHARED = 0.05

EXPERT_MODULES = {
    "mixtral": {f"block_sparse_moe.experts.w{i}" for i in (1, 2, 3)},
    "qwen": {f"mlp.experts.{p}_proj" for p in ("gate", "up", "down")},
    "stacked": {"mlp.experts.gate_up_proj", "mlp.experts.down_proj"},
}
PROJ_SHAPES = {"gate": (INTER, H), "up": (INTER, H), "down": (H, INTER)}


def _base(seed: int = 0) -> dict:
    """The model as arrays: (layer, expert, proj) of every expert, ("router", layer), ("shared", layer, proj), and a
    dense attention matrix per layer."""
    rng = np.random.default_rng(seed)
    arrays: dict = {}
    for layer in range(LAYERS):
        for e in range(E):
            for proj, shape in PROJ_SHAPES.items():
                arrays[(layer, e, proj)] = rng.normal(0, 0.1, shape).astype(np.float32)
        arrays[("router", layer)] = rng.normal(0, 0.1, (E, H)).astype(np.float32)
        for proj, (rows, cols) in PROJ_SHAPES.items():  # a shared expert twice as wide as a routed one
            shape = (2 * rows, cols) if proj != "down" else (rows, 2 * cols)
            arrays[("shared", layer, proj)] = rng.normal(0, 0.1, shape).astype(np.float32)
        arrays[("attn", layer)] = rng.normal(0, 0.1, (H, H)).astype(np.float32)
    return arrays


def _plant(x: np.ndarray, frac: float, rng: np.random.Generator) -> np.ndarray:
    """x with round(frac · size) entries moved by at least 0.5 (so every one of them changes its bits)."""
    out = x.copy()
    k = round(frac * x.size)
    idx = rng.choice(x.size, size=k, replace=False)
    out.reshape(-1)[idx] += (rng.uniform(0.5, 1.0, k) * rng.choice([-1.0, 1.0], k)).astype(np.float32)
    return out


def _tune(base: dict, plan: dict = PLAN, router: dict = ROUTER, shared: float = SHARED, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    tuned = {}
    for key, x in base.items():
        if key[0] == "router":
            frac = router.get(key[1], 0.0)
        elif key[0] == "shared":
            frac = shared
        elif key[0] == "attn":
            frac = 0.0
        else:
            frac = plan.get(key[:2], 0.0)
        tuned[key] = _plant(x, frac, rng) if frac else x.copy()
    return tuned


def _render(arrays: dict, layout: str) -> dict[str, torch.Tensor]:
    """The arrays under a layout's names: mixtral (per expert, w1/w2/w3), qwen (per expert, shared expert and its
    gate) or stacked (gate_up_proj (E, 2I, H) and down_proj (E, H, I), transformers 5's in-memory layout)."""
    out = {}
    for layer in range(LAYERS):
        p = f"model.layers.{layer}."
        out[p + "self_attn.q_proj.weight"] = arrays[("attn", layer)]
        if layout == "mixtral":
            for e in range(E):
                for proj, w in (("gate", "w1"), ("down", "w2"), ("up", "w3")):
                    out[p + f"block_sparse_moe.experts.{e}.{w}.weight"] = arrays[(layer, e, proj)]
            out[p + "block_sparse_moe.gate.weight"] = arrays[("router", layer)]
        elif layout == "qwen":
            for e in range(E):
                for proj in PROJ_SHAPES:
                    out[p + f"mlp.experts.{e}.{proj}_proj.weight"] = arrays[(layer, e, proj)]
            out[p + "mlp.gate.weight"] = arrays[("router", layer)]
            for proj in PROJ_SHAPES:
                out[p + f"mlp.shared_expert.{proj}_proj.weight"] = arrays[("shared", layer, proj)]
            out[p + "mlp.shared_expert_gate.weight"] = arrays[("router", layer)][:1]
        elif layout == "stacked":
            gate_up = [np.concatenate([arrays[(layer, e, "gate")], arrays[(layer, e, "up")]]) for e in range(E)]
            out[p + "mlp.experts.gate_up_proj"] = np.stack(gate_up)
            out[p + "mlp.experts.down_proj"] = np.stack([arrays[(layer, e, "down")] for e in range(E)])
            out[p + "mlp.gate.weight"] = arrays[("router", layer)]
        else:
            raise ValueError(layout)
    return {n: torch.from_numpy(np.ascontiguousarray(x)) for n, x in out.items()}


def _expected_experts(base: dict, tuned: dict) -> dict:
    """(layer, expert) -> (changed, numel) straight from the arrays."""
    out = {}
    for layer in range(LAYERS):
        for e in range(E):
            keys = [(layer, e, proj) for proj in PROJ_SHAPES]
            out[(layer, e)] = (sum(int((base[k] != tuned[k]).sum()) for k in keys), sum(base[k].size for k in keys))
    return out


@pytest.fixture(scope="module")
def arrays():
    base = _base()
    return base, _tune(base)


def _diff(tmp_path, arrays, layout: str):
    base, tuned = arrays
    b = write_checkpoint(tmp_path / f"{layout}-base", _render(base, layout))
    t = write_checkpoint(tmp_path / f"{layout}-tuned", _render(tuned, layout))
    summary = run_diff(b, t, tmp_path / f"{layout}-diff", save_mask=True)
    return summary, pd.read_parquet(tmp_path / f"{layout}-diff" / "tensors.parquet"), (b, t)


@pytest.mark.parametrize("layout", ["mixtral", "qwen", "stacked"])
def test_per_expert_change_and_expert_summary_match_the_planted_arrays(tmp_path, arrays, layout):
    base, tuned = arrays
    summary, rows, _ = _diff(tmp_path, arrays, layout)
    want = _expected_experts(base, tuned)

    # tensors.parquet: the expert column set on every expert row, the module label without the index
    ex = rows[rows["role"] == "expert"]
    assert ex["expert"].notna().all() and rows[rows["role"] != "expert"]["expert"].isna().all()
    assert set(ex["module"]) == EXPERT_MODULES[layout]
    got = ex.groupby(["layer", "expert"])[["changed", "numel"]].sum()
    assert {k: tuple(int(v) for v in got.loc[k]) for k in got.index} == want

    # the experts block, from the arrays directly
    fracs = np.array([c / n for c, n in want.values()])
    changed = [c for c, _ in want.values()]
    block = summary["experts"]
    assert block["experts"] == LAYERS * E and block["layers"] == LAYERS
    assert block["changed_experts"] == len(PLAN) == sum(1 for c in changed if c)
    assert block["expert_changed_frac"]["min"] == 0.0
    assert block["expert_changed_frac"]["median"] == pytest.approx(float(np.median(fracs)))
    assert block["expert_changed_frac"]["max"] == pytest.approx(fracs.max())
    k = math.ceil(0.1 * LAYERS * E)
    assert block["top_experts"] == k == 1
    assert block["top10_share"] == pytest.approx(max(changed) / sum(changed))
    assert [(x["layer"], x["experts"], x["changed_experts"]) for x in block["by_layer"]] == [(0, E, 2), (1, E, 1)]

    # the router: its changed fraction pooled over layers, and each layer's rank against numpy's
    r = block["router"]
    routers = [(base[("router", i)], tuned[("router", i)]) for i in range(LAYERS)]
    if layout == "qwen":  # the shared-expert gate is a router too: the first router row of every layer again
        routers += [(b[:1], t[:1]) for b, t in routers]
    assert r["changed_frac"] == pytest.approx(
        sum(int((b != t).sum()) for b, t in routers) / sum(b.size for b, _ in routers)
    )
    by_name = {x["name"]: x for x in r["by_layer"]}
    gate = "block_sparse_moe.gate.weight" if layout == "mixtral" else "mlp.gate.weight"
    for i in range(LAYERS):
        x = by_name[f"model.layers.{i}.{gate}"]
        b, t = routers[i]
        assert x["rank"] == np.linalg.matrix_rank(t - b)
        assert x["max_rank"] == min(E, H)
    assert x["rank"] == 0  # layer 1's router is untouched
    if layout == "qwen":
        sh = [(base[("shared", i, p)], tuned[("shared", i, p)]) for i in range(LAYERS) for p in PROJ_SHAPES]
        want_sh = sum(int((b != t).sum()) for b, t in sh) / sum(b.size for b, _ in sh)
        assert block["shared_experts"]["changed_frac"] == pytest.approx(want_sh)
    else:
        assert block["shared_experts"] is None

    # per-module totals across experts: one module row per projection, not per expert
    mods = summary["by_module"]
    exp_mods = [m for m, v in mods.items() if v["role"] == "expert"]
    assert len(exp_mods) == (2 if layout == "stacked" else 3)
    for m in exp_mods:
        assert mods[m]["experts"] == LAYERS * E
        sub = ex[ex["module"] == m]
        assert mods[m]["changed"] == sub["changed"].sum() and mods[m]["numel"] == sub["numel"].sum()
    assert summary["totals"]["numel"] == sum(x.numel() for x in _render(base, layout).values())
    assert summary["totals"]["tensors"] == len(_render(base, layout))


def test_stacked_rows_are_per_expert_slices_and_the_mask_is_the_whole_tensor(tmp_path, arrays):
    base, tuned = arrays
    summary, rows, (b_path, t_path) = _diff(tmp_path, arrays, "stacked")
    b_st, t_st = _render(base, "stacked"), _render(tuned, "stacked")
    name = "model.layers.0.mlp.experts.gate_up_proj"
    sub = rows[rows["name"] == name].sort_values("expert")
    assert list(sub["expert"]) == list(range(E))
    for e, row in zip(range(E), sub.itertuples()):
        d = (t_st[name][e] - b_st[name][e]).numpy()
        assert list(row.shape) == [2 * INTER, H] and row.numel == 2 * INTER * H
        assert row.changed == int((d != 0).sum())
        assert row.rank == np.linalg.matrix_rank(d) and row.max_rank == min(2 * INTER, H)
        assert row.delta_fro == pytest.approx(float(np.linalg.norm(d.astype(np.float64))), rel=1e-6)
        assert row.row_coverage == pytest.approx((d != 0).any(axis=1).mean())
    assert sub.iloc[3]["rank"] == min(2 * INTER, H)  # half of expert 3 moved: full rank
    with safe_open(str(tmp_path / "stacked-diff" / "mask.safetensors"), "pt") as f:
        mask = f.get_tensor(name)
    assert mask.shape == (E, 2 * INTER, H)
    assert torch.equal(mask, b_st[name] != t_st[name])
    # the stacked mask serves surgery as it is: patching every changed entry gives back the tuned model
    out = patch(b_path, t_path, tmp_path / "stacked-diff", tmp_path / "patched")
    assert out["totals"]["from_tuned"] == summary["totals"]["changed"]
    with safe_open(str(tmp_path / "patched" / "model.safetensors"), "pt") as f:
        assert torch.equal(f.get_tensor(name), t_st[name])


def test_stacked_and_per_expert_layouts_give_the_same_experts(tmp_path, arrays):
    per, _, _ = _diff(tmp_path, arrays, "qwen")
    st, _, _ = _diff(tmp_path, arrays, "stacked")
    for key in ("experts", "changed_experts", "numel", "changed", "expert_changed_frac", "top10_share", "by_layer"):
        assert per["experts"][key] == st["experts"][key], key


def test_a_dense_model_gets_no_experts_block(tmp_path):
    rng = np.random.default_rng(0)
    w = torch.from_numpy(rng.normal(size=(8, 8)).astype(np.float32))
    b = write_checkpoint(tmp_path / "b", {"model.layers.0.mlp.gate_proj.weight": w})
    t = write_checkpoint(tmp_path / "t", {"model.layers.0.mlp.gate_proj.weight": w + 1})
    s = run_diff(b, t, tmp_path / "d")
    assert "experts" not in s
    assert s["by_module"]["mlp.gate_proj"]["role"] == "dense" and s["by_module"]["mlp.gate_proj"]["experts"] is None


# ---- expert-level overlap across runs --------------------------------------------------------------------------

# three seeds' plans: which experts each run touches (and how much)
RUNS = {
    "s0": {(0, 1): 0.1, (0, 3): 0.5, (1, 0): 0.2},
    "s1": {(0, 1): 0.3, (0, 2): 0.05, (1, 0): 0.1, (1, 4): 0.4},
    "s2": {(0, 4): 0.2, (1, 1): 0.2, (1, 2): 0.3},
}


def test_expert_overlap_against_the_hypergeometric_chance(tmp_path):
    base = _base()
    b = write_checkpoint(tmp_path / "base", _render(base, "stacked"))
    diffs = []
    for i, (label, plan) in enumerate(RUNS.items()):
        t = write_checkpoint(tmp_path / label, _render(_tune(base, plan, seed=10 + i), "stacked"))
        run_diff(b, t, tmp_path / f"d-{label}", save_mask=True)
        diffs.append(str(tmp_path / f"d-{label}"))
    result = run_overlap(diffs, tmp_path / "ov", plot=False)
    table = pd.read_parquet(tmp_path / "ov" / EXPERT_OVERLAP_TABLE)

    touched = {d: set(plan) for d, plan in zip(diffs, RUNS.values())}
    for pair in (r for r in result["experts"]["pairs"] if r["expert_set"] == "touched"):
        a, b_ = touched[pair["a"]], touched[pair["b"]]
        inter = len(a & b_)
        assert (pair["size_a"], pair["size_b"], pair["intersection"]) == (len(a), len(b_), inter)
        assert pair["overlap"] == pytest.approx(inter / len(a))
        per_layer = [({x for x in a if x[0] == i}, {x for x in b_ if x[0] == i}) for i in range(LAYERS)]
        chance = sum(len(x) * len(y) / E for x, y in per_layer) / len(a)
        assert pair["random_overlap"] == pytest.approx(chance)
        # p: P(X0 + X1 >= inter), each layer's X hypergeometric (scipy), the layers independent
        pmfs = [hypergeom(E, len(y), len(x)).pmf(np.arange(E + 1)) for x, y in per_layer]
        p = sum(pmfs[0][i] * pmfs[1][j] for i in range(E + 1) for j in range(E + 1) if i + j >= inter)
        assert pair["p_value"] == pytest.approx(p, rel=1e-9)
        rows = table[(table["a"] == pair["a"]) & (table["b"] == pair["b"]) & (table["expert_set"] == "touched")]
        layer_rows = rows[rows["layer"].notna()].sort_values("layer")
        assert list(layer_rows["intersection"]) == [len(x & y) for x, y in per_layer]
        assert list(layer_rows["experts"]) == [E] * LAYERS
    s0, s1 = diffs[0], diffs[1]
    row = next(r for r in result["experts"]["pairs"] if (r["a"], r["b"], r["expert_set"]) == (s0, s1, "touched"))
    assert row["intersection"] == 2  # (0, 1) and (1, 0)
    assert result["experts"]["matrix"]["touched"]["overlap"][0][1] == pytest.approx(2 / 3)


def test_hypergeometric_pmf_and_sets_against_scipy():
    for pool, kb, na in [(8, 3, 4), (256, 40, 8), (5, 0, 2), (5, 5, 5), (64, 32, 32)]:
        got = hypergeom_pmf(pool, kb, na)
        want = hypergeom(pool, kb, na).pmf(np.arange(min(kb, na) + 1))
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-300)
    # one layer: the pooled p equals scipy's survival function, the chance level |B|/E
    a, b = {(0, 0), (0, 1), (0, 2)}, {(0, 1), (0, 2), (0, 5), (0, 6)}
    rows = set_overlap(a, b, {0: 8})
    assert rows[-1]["p_value"] == pytest.approx(hypergeom(8, 4, 3).sf(1), rel=1e-9)
    assert rows[-1]["random_overlap"] == pytest.approx(4 / 8) == rows[0]["random_overlap"]
    counts = {(0, 0): (0, 10), (0, 1): (5, 10), (0, 2): (2, 10), (1, 0): (1, 4), (1, 1): (1, 4)}
    assert above_median(counts) == {(0, 1)}  # layer 1: both at the median, neither above
    assert top_share([10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5]) == (2, 1.0)
    assert top_share([0, 0]) == (1, None)


def test_resume_keeps_a_stacked_tensors_rows_together(tmp_path, arrays, monkeypatch):
    import rldelta.diff as diff_mod

    base, tuned = arrays
    b = write_checkpoint(tmp_path / "b", _render(base, "stacked"))
    t = write_checkpoint(tmp_path / "t", _render(tuned, "stacked"))
    out = tmp_path / "out"

    def stop_after_three(done, total, name):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_diff(b, t, out, save_mask=True, progress=stop_after_three)
    computed = []
    real = diff_mod.diff_tensor
    monkeypatch.setattr(diff_mod, "diff_tensor", lambda *a: computed.append(a[2]) or real(*a))
    run_diff(b, t, out, save_mask=True, resume=True)
    assert len(computed) == len(_render(base, "stacked")) - 3
    run_diff(b, t, tmp_path / "fresh", save_mask=True)
    pd.testing.assert_frame_equal(
        pd.read_parquet(out / "tensors.parquet"), pd.read_parquet(tmp_path / "fresh" / "tensors.parquet")
    )
    assert (out / "mask.safetensors").read_bytes() == (tmp_path / "fresh" / "mask.safetensors").read_bytes()


def test_cli_prints_the_experts_tables(tmp_path, arrays):
    from typer.testing import CliRunner

    from rldelta.cli import app

    base, tuned = arrays
    b = write_checkpoint(tmp_path / "b", _render(base, "qwen"))
    t0 = write_checkpoint(tmp_path / "t0", _render(tuned, "qwen"))
    t1 = write_checkpoint(tmp_path / "t1", _render(_tune(base, RUNS["s1"], seed=5), "qwen"))
    runner = CliRunner()
    res = runner.invoke(app, ["diff", str(b), str(t0), "-o", str(tmp_path / "d0"), "--save-mask"], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert f"mlp.experts.up_proj ({LAYERS * E} experts)" in res.output
    assert "changed at all" in res.output and f"3 of {LAYERS * E}" in res.output
    assert "router: rank per tensor" in res.output
    runner.invoke(app, ["diff", str(b), str(t1), "-o", str(tmp_path / "d1"), "--save-mask"])
    res = runner.invoke(
        app, ["overlap", str(tmp_path / "d0"), str(tmp_path / "d1"), "-o", str(tmp_path / "ov")], terminal_width=200
    )
    assert res.exit_code == 0, res.output
    assert "hypergeometric" in res.output and "touched" in res.output  # narrow columns: `above_median` is cut


def test_explain_on_a_stacked_diff_gives_no_rank_of_the_whole(tmp_path, arrays):
    from rldelta.explain import run_explain

    _, _, (b, _) = _diff(tmp_path, arrays, "stacked")
    run_explain(tmp_path / "stacked-diff", b, tmp_path / "ex", rank_samples=1)
    ex = pd.read_parquet(tmp_path / "ex" / "explain.parquet").set_index("name")
    assert pd.isna(ex.loc["model.layers.0.mlp.experts.gate_up_proj", "observed_rank_frac"])
    assert ex.loc["model.layers.0.mlp.gate.weight", "observed_rank_frac"] > 0


@pytest.mark.parametrize("arch", ["qwen2_moe", "gpt_oss"])
def test_checkpoints_saved_by_transformers_group_by_expert(tmp_path, arch):
    # The layouts as transformers writes them: Qwen2-MoE per expert (with shared expert), gpt-oss stacked (with
    # biases). One expert of layer 0 is moved in memory (stacked there: slice 2 of experts.down_proj) and saved.
    import transformers

    torch.manual_seed(0)
    small = dict(vocab_size=32, hidden_size=16, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2)
    small |= dict(num_key_value_heads=1, num_experts_per_tok=2)
    if arch == "qwen2_moe":
        cfg = transformers.Qwen2MoeConfig(**small, num_experts=4, moe_intermediate_size=8)
        model = transformers.Qwen2MoeForCausalLM(cfg)
    else:
        cfg = transformers.GptOssConfig(**small, num_local_experts=4, head_dim=8)
        model = transformers.GptOssForCausalLM(cfg)
    model.save_pretrained(tmp_path / "base")
    with torch.no_grad():
        model.model.layers[0].mlp.experts.down_proj[2] += 1.0
    model.save_pretrained(tmp_path / "tuned")
    s = run_diff(tmp_path / "base", tmp_path / "tuned", tmp_path / "d")
    rows = pd.read_parquet(tmp_path / "d" / "tensors.parquet")
    moved = rows[rows["changed"] > 0]
    assert set(zip(moved["module"], moved["expert"])) == {("mlp.experts.down_proj", 2)}
    assert s["experts"]["experts"] == 4 and s["experts"]["changed_experts"] == 1
    assert s["experts"]["router"]["changed"] == 0 and s["experts"]["top10_share"] == 1.0
    routers = set(rows[rows["role"] == "router"]["module"])
    assert routers == ({"mlp.gate", "mlp.shared_expert_gate"} if arch == "qwen2_moe" else {"mlp.router"})
