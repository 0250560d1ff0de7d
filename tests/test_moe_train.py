"""The tiny mixture-of-experts model through training: built and reloaded, its stored layout mapped onto the fused
parameters transformers holds, every algorithm trains it, masks stay exact, the step recorder's sets equal diff's
masks, and a resumed run continues bit-for-bit (the Trainer's own resume loads fused experts by name and misses them).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import TRAIN_ONE_STEP, bits, masked_training_changes
from rldelta.checkpoint import open_checkpoint
from rldelta.diff import run_diff
from rldelta.masks import Mask, MaskError, load_mask
from rldelta.train.algorithms import ALGOS
from rldelta.train.config import TrainConfig
from rldelta.train.masking import bind_masks
from rldelta.train.models import build_tiny_moe
from rldelta.train.step_recorder import mask_file
from rldelta.train.stored_layout import is_identity, stored_tensors
from rldelta.train.trainers import train

MOE = TRAIN_ONE_STEP


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return build_tiny_moe(tmp_path_factory.mktemp("base") / "tiny-moe", seed=0)


def run(base: Path, out: Path, **kw) -> Path:
    return train(TrainConfig(model=str(base), output=str(out), **{**MOE, **kw}))


def _model(base: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)


# ---- the model and its stored layout -----------------------------------------------------------------------------


def test_tiny_moe_builds_reloads_and_stores_per_expert(base, tmp_path):
    names = open_checkpoint(base).names()
    assert "model.layers.1.mlp.experts.7.down_proj.weight" in names and "model.layers.0.mlp.gate.weight" in names
    assert "model.layers.0.mlp.shared_expert.up_proj.weight" in names
    assert sum(".experts." in n for n in names) == 2 * 8 * 3  # layers x experts x projections
    model = _model(base)
    assert model.config.model_type == "qwen2_moe" and model.config.num_experts_per_tok == 2
    # transformers holds the experts fused: the names differ from the stored ones, which is what the map is for
    assert "model.layers.0.mlp.experts.gate_up_proj" in dict(model.named_parameters())
    again = build_tiny_moe(tmp_path / "again", seed=0)
    assert (again / "model.safetensors").read_bytes() == (base / "model.safetensors").read_bytes()


def test_stored_map_gives_back_exactly_what_save_pretrained_writes(base):
    from transformers import MixtralConfig, MixtralForCausalLM

    qwen = _model(base)
    torch.manual_seed(0)
    mixtral = MixtralForCausalLM(
        MixtralConfig(
            vocab_size=64,
            hidden_size=16,
            intermediate_size=8,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            num_local_experts=3,
        )
    )
    for model in (qwen, mixtral):
        state = {n: t.detach().clone() for n, t in model.state_dict().items()}
        from transformers.core_model_loading import revert_weight_conversion

        on_disk = revert_weight_conversion(model, {n: state[n] for n, _ in model.named_parameters()})
        stored = stored_tensors(model)
        assert not is_identity(stored) and set(stored) == set(on_disk)
        params = dict(model.named_parameters())
        for name, st in stored.items():
            assert torch.equal(st.take(params[st.param].detach().reshape(-1)), on_disk[name]), name
    # Mixtral's router is renamed on disk; the map follows the rename without splitting anything
    router = stored_tensors(mixtral)["model.layers.0.block_sparse_moe.gate.weight"]
    assert router.param == "model.layers.0.mlp.gate.weight" and router.index is None


def test_bind_masks_puts_each_experts_mask_into_its_part_of_the_fused_parameter(base):
    model = _model(base)
    ck = open_checkpoint(base)
    g = torch.Generator().manual_seed(3)
    masks = {n: torch.rand(ck.info(n).shape, generator=g) < 0.3 for n in ck.names()}
    bound = bind_masks(model, Mask.from_tensors(masks))
    # independent of the map: expert e's gate_proj is rows [0, I) of gate_up_proj[e], up_proj rows [I, 2I)
    fused = bound["model.layers.1.mlp.experts.gate_up_proj"]
    inter = model.config.moe_intermediate_size
    for e in range(model.config.num_experts):
        assert torch.equal(fused[e, :inter], masks[f"model.layers.1.mlp.experts.{e}.gate_proj.weight"])
        assert torch.equal(fused[e, inter:], masks[f"model.layers.1.mlp.experts.{e}.up_proj.weight"])
        assert torch.equal(
            bound["model.layers.1.mlp.experts.down_proj"][e], masks[f"model.layers.1.mlp.experts.{e}.down_proj.weight"]
        )
    with pytest.raises(MaskError, match="has shape"):
        bind_masks(model, Mask.from_tensors({"model.layers.0.mlp.experts.3.gate_proj.weight": torch.ones(2, 2) > 0}))


# ---- training ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("algo", ALGOS)
def test_every_algorithm_trains_the_moe(base, tmp_path, algo):
    out = run(base, tmp_path / "run", algo=algo)
    ck = open_checkpoint(out / "checkpoints" / "step-1")
    assert sorted(ck.names()) == sorted(open_checkpoint(base).names())  # the stored layout, per expert
    summary = run_diff(base, out / "checkpoints" / "step-1-fp32", tmp_path / "diff", compare_dtype="fp32")
    assert summary["totals"]["changed"] > 0


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_masked_training_of_the_moe_changes_only_the_mask(base, tmp_path, precision):
    masks, changes = masked_training_changes(base, tmp_path, precision, run)
    for d, changed in changes.items():
        for name, c in changed.items():
            assert not (c & ~masks[name]).any(), f"{d}: {name} changed outside the mask"
        changed_experts = sum(int(".experts." in n and bool(c.any())) for n, c in changed.items())
        assert changed_experts > 0  # the experts did train: the check above is not vacuous


def test_recorded_sets_equal_diff_masks_and_resume_continues_exactly(base, tmp_path):
    kw = dict(steps=2, save_steps="every:1", lr=1e-4)
    full = run(base, tmp_path / "full", record_steps=True, **kw)
    for step in (1, 2):
        out = tmp_path / f"d{step}"
        run_diff(base, full / "checkpoints" / f"step-{step}", out, compare_dtype="bf16", save_mask=True)
        diff_mask, recorded = load_mask(out), load_mask(mask_file(full, step))
        assert sorted(diff_mask.names()) == sorted(recorded.names())
        assert any(diff_mask.get(n).any() for n in diff_mask.names() if ".experts." in n)
        for n in diff_mask.names():
            assert torch.equal(diff_mask.get(n), recorded.get(n)), n
    part = run(base, tmp_path / "part", record_steps=True, **{**kw, "steps": 1})
    run(base, part, record_steps=True, resume=True, **kw)
    a, b = (load_file(r / "checkpoints" / "step-2-fp32" / "model.safetensors") for r in (full, part))
    assert set(a) == set(b)
    for n in a:
        assert torch.equal(bits(a[n]), bits(b[n])), n
