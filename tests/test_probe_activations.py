"""`rldelta probe activations`: the sparsity arithmetic on planted cases, and the runner against an independent
forward pass of a tiny model, with a planted (and a random) neuron–update link."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import pearsonr, rankdata, spearmanr
from transformers import AutoModelForCausalLM, AutoTokenizer

from rldelta.metrics.activations import (
    activation_frequency,
    correlation,
    hoyer,
    near_zero_frac,
    neuron_changed_frac,
    top_mass_share,
)
from rldelta.probes.activation_verdicts import neuron_verdict
from rldelta.probes.activations import (
    PLOT_LEVELS,
    PLOT_NEURONS,
    ProbeError,
    ladder,
    prompt_texts,
    run_activations,
)
from rldelta.runtime.files import ACTIVATIONS_JSON, ACTIVATIONS_TABLE, NEURONS_TABLE
from rldelta.train.models import build_tiny
from rldelta.train.tasks import Arith

N_PER_LEVEL = 3


# ---- independent numpy references ------------------------------------------------------------------------------


def np_near_zero(h: np.ndarray, rel: float) -> float:
    scale = np.sqrt(np.mean(h.astype(np.float64) ** 2))
    return float(np.mean(np.abs(h) < rel * scale))


def np_hoyer(h: np.ndarray) -> float:
    vals = []
    n = h.shape[1]
    for row in h.astype(np.float64):
        l2 = np.linalg.norm(row)
        if l2 > 0:
            vals.append((math.sqrt(n) - np.abs(row).sum() / l2) / (math.sqrt(n) - 1))
    return float(np.mean(vals))


def np_top_share(h: np.ndarray, frac: float) -> float:
    k = max(1, math.ceil(frac * h.shape[1]))
    vals = []
    for row in np.abs(h.astype(np.float64)):
        if row.sum() > 0:
            vals.append(np.sort(row)[::-1][:k].sum() / row.sum())
    return float(np.mean(vals))


# ---- metrics on planted cases ----------------------------------------------------------------------------------


def test_planted_sparsity_known_answers():
    # 10 rows of 200 units, exactly k = 4 nonzeros of magnitude 3 each: the rest are exact zeros.
    n, k = 200, 4
    h = torch.zeros(10, n)
    for r in range(10):
        h[r, torch.randperm(n, generator=torch.Generator().manual_seed(r))[:k]] = 3.0 * (-1) ** r
    assert near_zero_frac(h, 0.01) == pytest.approx(1 - k / n, abs=1e-12)
    # one row with k equal nonzeros: L1/L2 = k·3 / (3·√k) = √k
    assert hoyer(h) == pytest.approx((math.sqrt(n) - math.sqrt(k)) / (math.sqrt(n) - 1), abs=1e-12)
    # top ceil(0.01·200) = 2 units hold 2 of the 4 equal units' mass
    assert top_mass_share(h, 0.01) == pytest.approx(0.5, abs=1e-12)
    # one nonzero per row: maximally sparse; a flat row: Hoyer 0, top share = k/n
    one = torch.zeros(3, 50)
    one[:, 7] = 2.0
    assert hoyer(one) == pytest.approx(1.0) and top_mass_share(one, 0.01) == pytest.approx(1.0)
    flat = torch.full((3, 50), -0.5)
    assert hoyer(flat) == pytest.approx(0.0, abs=1e-12)
    assert top_mass_share(flat, 0.1) == pytest.approx(5 / 50)
    assert near_zero_frac(torch.zeros(4, 4)) == 1.0
    # all-zero rows are left out of the per-row means
    mixed = torch.cat([one, torch.zeros(2, 50)])
    assert hoyer(mixed) == pytest.approx(1.0) and top_mass_share(mixed) == pytest.approx(1.0)
    assert math.isnan(hoyer(torch.zeros(3, 5)))


def test_sparsity_matches_numpy_on_random_heavy_tails():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(300, 257, generator=g) ** 3  # heavy tails, many entries near zero
    h[:, :20] *= torch.rand(300, 20, generator=g) < 0.3  # some exact zeros too
    h[5] = 0.0
    x = h.numpy()
    for rel in (0.01, 0.1):
        assert near_zero_frac(h, rel) == pytest.approx(np_near_zero(x, rel), abs=1e-12)
    assert hoyer(h) == pytest.approx(np_hoyer(x), rel=1e-10)
    for frac in (0.01, 0.05):
        assert top_mass_share(h, frac) == pytest.approx(np_top_share(x, frac), rel=1e-10)


def test_activation_frequency_known_answer():
    # columns: always big, big on half the tokens, never above threshold, always zero
    a = torch.tensor([[4.0, 4.0, 0.01, 0.0], [-4.0, 0.0, -0.01, 0.0], [4.0, -4.0, 0.01, 0.0], [-4.0, 0.0, 0.01, 0.0]])
    rms = float(np.sqrt(np.mean(a.numpy().astype(np.float64) ** 2)))
    np.testing.assert_allclose(activation_frequency(a, 0.1).numpy(), [1.0, 0.5, 0.0, 0.0])
    assert 0.01 < 0.1 * rms  # the third column stays below the threshold
    # an explicit scale replaces the matrix's own RMS
    np.testing.assert_allclose(activation_frequency(a, 1.0, scale=0.001).numpy(), [1.0, 0.5, 1.0, 0.0])


def test_neuron_changed_frac_known_answer():
    inter, hidden = 3, 4
    gate = torch.zeros(inter, hidden, dtype=torch.bool)
    up = torch.zeros(inter, hidden, dtype=torch.bool)
    down = torch.zeros(hidden, inter, dtype=torch.bool)
    gate[0] = True  # neuron 0: its whole gate row (4 of 12 weights)
    up[1, :2] = True  # neuron 1: half an up row and one down entry (3 of 12)
    down[3, 1] = True
    down[:, 2] = True  # neuron 2: its whole down column (4 of 12)
    down[0, 0] = True  # neuron 0 also one down entry
    np.testing.assert_allclose(neuron_changed_frac(gate, up, down).numpy(), [5 / 12, 3 / 12, 4 / 12])
    # non-gated: only up rows and down columns (8 weights per neuron)
    np.testing.assert_allclose(neuron_changed_frac(None, up, down).numpy(), [1 / 8, 3 / 8, 4 / 8])
    with pytest.raises(ValueError, match="down mask has shape"):
        neuron_changed_frac(gate, up, down.T)


def test_correlation_matches_scipy_with_ties():
    g = np.random.default_rng(0)
    x = g.integers(0, 6, 400).astype(float)  # many ties
    y = 0.3 * x + g.integers(0, 4, 400)
    got = correlation(torch.tensor(x), y)
    assert got["n"] == 400
    assert got["pearson"] == pytest.approx(pearsonr(x, y).statistic, abs=1e-12)
    assert got["spearman"] == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
    x[:3] = np.nan  # pairs with a NaN side are dropped
    got = correlation(x, y)
    assert got["n"] == 397
    assert got["spearman"] == pytest.approx(spearmanr(x[3:], y[3:]).statistic, abs=1e-12)
    assert math.isnan(correlation([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])["spearman"])


# ---- runner on a tiny model ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    base = build_tiny(root / "base")
    # measure the base against itself first: activation frequencies, nothing changed
    same = run_activations(base, root / "same", compare=base, n_per_level=N_PER_LEVEL, progress=False, plot=False)
    return root, base, same


def _independent_activations(base, layer: int) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Per level: the block output (from output_hidden_states) and act(gate(x))·up(x) of `layer`, prompt by prompt."""
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(base)
    mlp_inputs = []
    handle = model.model.layers[layer].mlp.register_forward_pre_hook(lambda m, args: mlp_inputs.append(args[0]))
    residual, inter = {}, {}
    try:
        for level, examples in ladder("arith", N_PER_LEVEL).items():
            res, mid = [], []
            for text in prompt_texts(tok, examples):
                ids = tok(text, add_special_tokens=False, return_tensors="pt").input_ids
                mlp_inputs.clear()
                with torch.no_grad():
                    out = model(input_ids=ids, output_hidden_states=True)
                    res.append(out.hidden_states[layer + 1][0].numpy())
                    mlp = model.model.layers[layer].mlp
                    x = mlp_inputs[0][0]
                    mid.append((mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x)).numpy())
            residual[level], inter[level] = np.concatenate(res), np.concatenate(mid)
    finally:
        handle.remove()
    return residual, inter


def test_runner_matches_independent_forward(tiny):
    root, base, same = tiny
    table = pd.read_parquet(root / "same" / ACTIVATIONS_TABLE)
    assert set(table["level"]) == set(range(1, 8))
    assert set(table.loc[table["beyond_training"], "level"]) == {6, 7}
    assert same["settings"]["beyond_training_levels"] == [6, 7]
    # not the last layer: transformers puts the final-normed state in the last hidden_states entry
    residual, inter = _independent_activations(base, layer=0)
    for level in range(1, 8):
        for site, h in (("residual", residual[level]), ("mlp", inter[level])):
            row = table[
                (table["model"] == "base") & (table["level"] == level) & (table["layer"] == 0) & (table["site"] == site)
            ].iloc[0]
            assert row["tokens"] == h.shape[0]
            # batched vs one-by-one float noise may move an entry across the threshold; allow one such entry
            assert row["near_zero_frac"] == pytest.approx(np_near_zero(h, 0.01), abs=1.01 / h.size)
            assert row["hoyer"] == pytest.approx(np_hoyer(h), rel=1e-5)
            assert row["top1_mass_share"] == pytest.approx(np_top_share(h, 0.01), rel=1e-5)
    # activation frequency: training levels pooled, threshold 0.1 x RMS of the pooled mlp activations
    pooled = np.concatenate([inter[lv] for lv in range(1, 6)]).astype(np.float64)
    expect = (np.abs(pooled) > 0.1 * np.sqrt(np.mean(pooled**2))).mean(axis=0)
    neurons = pd.read_parquet(root / "same" / NEURONS_TABLE)
    got = neurons[neurons["layer"] == 0].sort_values("neuron")["activation_freq"].to_numpy()
    np.testing.assert_allclose(got, expect, atol=2.01 / pooled.shape[0])
    # the same model on both sides: nothing changed, no correlation to speak of
    assert (neurons["changed_frac"] == 0).all()
    assert same["verdict"].startswith("undetermined")
    # tuned rows exist and equal the base ones (same weights)
    b = table[table["model"] == "base"].drop(columns="model").reset_index(drop=True)
    t = table[table["model"] == "tuned"].drop(columns="model").reset_index(drop=True)
    pd.testing.assert_frame_equal(b, t)


def _plant(base, out, chosen: set[tuple[int, int]]):
    """A copy of `base` whose chosen neurons have every gate/up row weight and down column weight moved."""
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    with torch.no_grad():
        for layer, i in chosen:
            mlp = model.model.layers[layer].mlp
            mlp.gate_proj.weight[i] += 0.01
            mlp.up_proj.weight[i] += 0.01
            mlp.down_proj.weight[:, i] += 0.01
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out


def test_planted_neuron_update_correlation(tiny):
    root, base, same = tiny
    freq = pd.read_parquet(root / "same" / NEURONS_TABLE)
    top = freq.sort_values("activation_freq", ascending=False, kind="mergesort").head(len(freq) // 2)
    tuned = _plant(base, root / "used", set(zip(top["layer"], top["neuron"])))
    res = run_activations(base, root / "out_used", compare=tuned, n_per_level=N_PER_LEVEL, progress=False)
    neurons = pd.read_parquet(root / "out_used" / NEURONS_TABLE)
    np.testing.assert_array_equal(neurons["activation_freq"], freq["activation_freq"])  # measured on the base
    planted = set(zip(top["layer"], top["neuron"]))
    is_planted = np.array([(lr, n) in planted for lr, n in zip(neurons["layer"], neurons["neuron"])])
    np.testing.assert_array_equal(neurons["changed_frac"].to_numpy(), is_planted.astype(float))
    rho = res["correlation"]["overall"]["spearman"]
    assert rho == pytest.approx(spearmanr(neurons["activation_freq"], neurons["changed_frac"]).statistic, abs=1e-12)
    assert rho > 0.5
    within = res["correlation"]["mean_within_layer_spearman"]
    # the within-layer reading leads the verdict; the magnitude-controlled and the pooled ones follow it
    assert res["verdict"].startswith(neuron_verdict(within, len(neurons), "within a layer"))
    assert "uses more" in res["verdict"] and f"pooled over layers {rho:+.2f}" in res["verdict"]
    # magnitude-controlled: per layer, the Spearman of the residual ranks after regressing out the mean |w| ranks
    parts = []
    for _, g in neurons.groupby("layer"):
        rx, ry, rw = (rankdata(g[col]) for col in ("activation_freq", "changed_frac", "mean_abs_w"))
        design = np.c_[np.ones(len(g)), rw]
        ex = rx - design @ np.linalg.lstsq(design, rx, rcond=None)[0]
        ey = ry - design @ np.linalg.lstsq(design, ry, rcond=None)[0]
        parts.append((np.corrcoef(ex, ey)[0, 1], len(g)))
    controlled = res["correlation"]["magnitude_controlled"]["spearman"]
    assert controlled == pytest.approx(sum(r * n for r, n in parts) / sum(n for _, n in parts), abs=1e-9)
    assert controlled > 0.5  # the planted edits follow activity, not |w|
    for layer, c in res["correlation"]["by_layer"].items():
        sub = neurons[neurons["layer"] == int(layer)]
        assert c["spearman"] == pytest.approx(
            spearmanr(sub["activation_freq"], sub["changed_frac"]).statistic, abs=1e-12
        )
    per = [(spearmanr(g["activation_freq"], g["changed_frac"]).statistic, len(g)) for _, g in neurons.groupby("layer")]
    assert res["correlation"]["mean_within_layer_spearman"] == pytest.approx(
        sum(r * n for r, n in per) / sum(n for _, n in per), abs=1e-12
    )
    on_disk = json.loads((root / "out_used" / ACTIVATIONS_JSON).read_text())
    assert on_disk["verdict"] == res["verdict"] and on_disk["sparsity_verdict"] == res["sparsity_verdict"]
    for png in (PLOT_LEVELS, PLOT_NEURONS):
        assert (root / "out_used" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_random_update_control(tiny):
    root, base, same = tiny
    freq = pd.read_parquet(root / "same" / NEURONS_TABLE)
    pick = np.random.default_rng(0).permutation(len(freq))[: len(freq) // 2]
    tuned = _plant(base, root / "random", set(zip(freq["layer"].iloc[pick], freq["neuron"].iloc[pick])))
    res = run_activations(base, root / "out_random", compare=tuned, n_per_level=N_PER_LEVEL, progress=False, plot=False)
    assert abs(res["correlation"]["overall"]["spearman"]) < 0.2  # 256 neurons: chance sd ~ 0.06
    assert res["verdict"].startswith("neither")


def test_verdict_thresholds():
    assert neuron_verdict(0.12, 40_000).startswith("RL edited the neurons the task uses more (Spearman +0.12")
    assert neuron_verdict(-0.12, 40_000).startswith("RL edited the rarely used")
    assert neuron_verdict(0.05, 40_000).startswith("neither")
    assert neuron_verdict(0.12, 256).startswith("neither")  # 3 chance sds over 256 neurons is 0.19
    assert neuron_verdict(0.25, 256).startswith("RL edited the neurons the task uses more")


def test_ladder_is_the_task_test_split():
    levels = ladder("arith", 4)
    assert [ex.prompt for ex in levels[3]] == [
        ex.prompt for ex in Arith().generate(4, seed=0, split="test", difficulty=3)
    ]
    # beyond the range: 3 operands of 4 and 5 digits
    for level, digits in ((6, 4), (7, 5)):
        expr = levels[level][0].prompt[0]["content"].split("What is ")[1].split("?")[0]
        assert [len(t) for t in expr.split()[::2]] == [digits] * 3


def test_bad_inputs(tiny, tmp_path):
    root, base, same = tiny
    with pytest.raises(ProbeError, match="not a model folder"):
        run_activations(tmp_path / "nope", tmp_path / "o", progress=False)
    with pytest.raises(ProbeError, match="not a model folder"):
        run_activations(base, tmp_path / "o", compare=tmp_path, progress=False)
    with pytest.raises(ProbeError, match="arith-style task"):
        run_activations(base, tmp_path / "o", task="countdown", progress=False)
    with pytest.raises(ProbeError, match="n_per_level"):
        run_activations(base, tmp_path / "o", n_per_level=0, progress=False)
    # a compared model whose checkpoint lacks an MLP weight, and one with a wrong shape
    from safetensors.torch import load_file, save_file

    for case in ("missing", "shape"):
        other = tmp_path / case
        other.mkdir()
        (other / "config.json").write_text((base / "config.json").read_text())
        tensors = load_file(base / "model.safetensors")
        name = "model.layers.1.mlp.up_proj.weight"
        if case == "missing":
            del tensors[name]
        else:
            tensors[name] = tensors[name][:, :-1].contiguous()
        save_file(tensors, other / "model.safetensors")
        match = (
            "MLP weight 'model.layers.1.mlp.up_proj.weight' is missing"
            if case == "missing"
            else r"tensor 'model.layers.1.mlp.up_proj.weight' has shape \(128, 64\) in .* but \(128, 63\)"
        )
        with pytest.raises(ProbeError, match=match):
            run_activations(base, tmp_path / "o", compare=other, progress=False)


def test_trained_levels_mark_the_rest_as_beyond_training(tmp_path):
    from rldelta.probes import ProbeError
    from rldelta.probes.activations import run_activations
    from rldelta.train.models import build_tiny

    m = build_tiny(tmp_path / "m", seed=0)
    res = run_activations(m, tmp_path / "o", n_per_level=1, progress=False, plot=False, trained_levels=[1])
    assert res["settings"]["training_levels"] == [1]
    assert res["settings"]["beyond_training_levels"] == [2, 3, 4, 5, 6, 7]
    table = pd.read_parquet(tmp_path / "o" / "activations.parquet")
    assert set(table[~table["beyond_training"]]["level"]) == {1}
    with pytest.raises(ProbeError, match="trained_levels"):
        run_activations(m, tmp_path / "p", n_per_level=1, progress=False, plot=False, trained_levels=[9])
