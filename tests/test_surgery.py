"""Surgery (patch / revert) on hand-built bf16 pairs with a known changed set, checked bit for bit with numpy."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

import rldelta.surgery as surgery_mod
from conftest import write_checkpoint
from rldelta.checkpoint import open_checkpoint
from rldelta.cli import app
from rldelta.diff import run_diff
from rldelta.masks import Mask, load_mask, random_mask, save_mask
from rldelta.runtime.files import SURGERY_JSON
from rldelta.surgery import SurgeryError, patch, revert

runner = CliRunner()
SHAPES = {
    "model.embed_tokens.weight": (16, 8),
    "model.layers.0.self_attn.q_proj.weight": (8, 8),
    "model.layers.0.mlp.up_proj.weight": (12, 8),
    "model.layers.0.input_layernorm.weight": (8,),
    "model.norm.weight": (8,),  # left unchanged by "training"
}
UNCHANGED = "model.norm.weight"
MODEL_FILES = {
    "config.json": json.dumps({"model_type": "llama", "tie_word_embeddings": False}),
    "generation_config.json": "{}",
    "tokenizer.json": '{"version": "1.0"}',
    "tokenizer_config.json": "{}",
    "chat_template.jinja": "{{ messages }}",
}


def bits(t: torch.Tensor) -> np.ndarray:
    """The raw 16-bit patterns of a bf16 tensor, so comparisons are bitwise (−0 ≠ +0, NaN payloads count)."""
    return t.contiguous().view(torch.int16).numpy().astype(np.uint16)


def _pair(tmp_path, seed: int = 0):
    """bf16 base; tuned differs exactly on `changed` (a flipped low mantissa bit or a real step, never a no-op)."""
    g = torch.Generator().manual_seed(seed)
    base, tuned, changed = {}, {}, {}
    for n, s in SHAPES.items():
        b = torch.randn(s, generator=g).to(torch.bfloat16)
        ch = torch.rand(s, generator=g) < (0.0 if n == UNCHANGED else 0.3)
        flip = torch.rand(s, generator=g) < 0.5
        tb = bits(b).copy()
        tb[ch.numpy() & flip.numpy()] ^= 1  # one ULP
        t = torch.from_numpy(tb.view(np.int16)).view(torch.bfloat16).clone()
        step = ch & ~flip
        t[step] = (t[step].float() + 0.25).to(torch.bfloat16)
        base[n], tuned[n], changed[n] = b, t, bits(t) != bits(b)
    assert all(changed[n].any() == (n != UNCHANGED) for n in SHAPES)
    bdir = write_checkpoint(tmp_path / "base", base)
    tdir = write_checkpoint(tmp_path / "tuned", tuned)
    for name, text in MODEL_FILES.items():
        (bdir / name).write_text(text)
        (tdir / name).write_text(text.replace("{}", '{"tuned": true}'))
    (bdir / "notes.txt").write_text("not a model file")
    (bdir / "optimizer.pt").write_bytes(b"\0" * 16)
    return bdir, tdir, base, tuned, changed


def _diff_mask(tmp_path, bdir, tdir):
    run_diff(bdir, tdir, tmp_path / "diff", rank=False, save_mask=True)
    return tmp_path / "diff"


def test_full_changed_mask_patch_gives_tuned_and_revert_gives_base_bit_for_bit(tmp_path):
    bdir, tdir, base, tuned, changed = _pair(tmp_path)
    diff_dir = _diff_mask(tmp_path, bdir, tdir)
    m = load_mask(diff_dir)
    for n in SHAPES:  # the diff found exactly the planted set
        np.testing.assert_array_equal(m.get(n).numpy(), changed[n])

    rp = patch(bdir, tdir, diff_dir, tmp_path / "patched")
    rr = revert(bdir, tdir, diff_dir, tmp_path / "reverted")
    got_p = load_file(str(tmp_path / "patched" / "model.safetensors"))
    got_r = load_file(str(tmp_path / "reverted" / "model.safetensors"))
    assert set(got_p) == set(got_r) == set(SHAPES)
    for n in SHAPES:
        assert got_p[n].dtype == got_r[n].dtype == torch.bfloat16
        np.testing.assert_array_equal(bits(got_p[n]), bits(tuned[n]))
        np.testing.assert_array_equal(bits(got_r[n]), bits(base[n]))
    n_changed = sum(int(c.sum()) for c in changed.values())
    numel = sum(int(np.prod(s)) for s in SHAPES.values())
    assert rp["totals"] == {
        "tensors": len(SHAPES),
        "numel": numel,
        "masked": n_changed,
        "masked_frac": n_changed / numel,
        "from_tuned": n_changed,
        "from_base": numel - n_changed,
    }
    assert rr["totals"]["from_base"] == n_changed and rr["totals"]["from_tuned"] == numel - n_changed

    ck = open_checkpoint(tmp_path / "patched")  # an ordinary checkpoint rldelta reads back
    assert set(ck.names()) == set(SHAPES) and ck.config == json.loads(MODEL_FILES["config.json"])
    assert run_diff(tmp_path / "patched", tdir, tmp_path / "d2", rank=False)["totals"]["changed"] == 0


def test_partial_mask_takes_each_entry_from_the_side_it_names(tmp_path):
    bdir, tdir, base, tuned, changed = _pair(tmp_path)
    rng = np.random.default_rng(1)
    absent = "model.layers.0.input_layernorm.weight"
    partial = {n: rng.random(s) < 0.4 for n, s in SHAPES.items() if n != absent}
    save_mask(Mask.from_tensors({n: torch.from_numpy(a) for n, a in partial.items()}), tmp_path / "m.safetensors")

    rp = patch(bdir, tdir, tmp_path / "m.safetensors", tmp_path / "p")
    rr = revert(bdir, tdir, tmp_path / "m.safetensors", tmp_path / "r")
    got_p = load_file(str(tmp_path / "p" / "model.safetensors"))
    got_r = load_file(str(tmp_path / "r" / "model.safetensors"))
    for n, s in SHAPES.items():
        m = partial.get(n, np.zeros(s, dtype=bool))  # a tensor the mask lacks counts as mask=False
        np.testing.assert_array_equal(bits(got_p[n]), np.where(m, bits(tuned[n]), bits(base[n])))
        np.testing.assert_array_equal(bits(got_r[n]), np.where(m, bits(base[n]), bits(tuned[n])))
        assert rp["tensors"][n]["from_tuned"] == int(m.sum()) == rr["tensors"][n]["from_base"]
        assert rp["tensors"][n]["in_mask"] == (n != absent)
    assert rp["absent_from_mask"] == rr["absent_from_mask"] == [absent]
    assert not np.array_equal(bits(got_p[absent]), bits(tuned[absent]))  # it really had a change to leave out
    on_disk = json.loads((tmp_path / "p" / SURGERY_JSON).read_text())
    assert on_disk["kind"] == "patch" and on_disk["absent_from_mask"] == [absent]
    assert on_disk["tensors"] == rp["tensors"] and on_disk["totals"] == rp["totals"]
    assert on_disk["control"] is None and on_disk["mask"].endswith("m.safetensors")


def test_fp32_master_is_rounded_to_the_base_dtype_to_nearest_even(tmp_path):
    g = torch.Generator().manual_seed(3)
    base = {n: torch.randn(s, generator=g).to(torch.bfloat16) for n, s in SHAPES.items()}
    tuned = {n: b.float() + 1e-3 * torch.randn(b.shape, generator=g) for n, b in base.items()}
    name = "model.layers.0.mlp.up_proj.weight"
    # Exact ties between two bf16 neighbours: 1 + 2^-8 lies halfway between 1 and 1 + 2^-7, and rounds to even (1).
    tuned[name][0, :3] = torch.tensor([1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8)])
    bdir = write_checkpoint(tmp_path / "base", base)
    tdir = write_checkpoint(tmp_path / "tuned", tuned)
    save_mask(Mask.from_tensors({n: torch.ones(s, dtype=torch.bool) for n, s in SHAPES.items()}), tmp_path / "all")

    rec = patch(bdir, tdir, tmp_path / "all", tmp_path / "p")
    got = load_file(str(tmp_path / "p" / "model.safetensors"))
    for n in SHAPES:
        f32 = tuned[n].numpy().view(np.uint32).astype(np.uint64)
        rne = ((f32 + 0x7FFF + ((f32 >> 16) & 1)) >> 16).astype(np.uint16)  # finite inputs only
        assert got[n].dtype == torch.bfloat16
        np.testing.assert_array_equal(bits(got[n]), rne)
    assert got[name][0, :3].tolist() == [1.0, 1 + 2**-6, -1.0]
    assert set(rec["cast_to_base_dtype"]) == set(SHAPES)


def test_random_control_keeps_per_tensor_counts_and_moves_the_entries(tmp_path):
    bdir, tdir, base, tuned, changed = _pair(tmp_path)
    diff_dir = _diff_mask(tmp_path, bdir, tdir)
    real = load_mask(diff_dir)
    rec = patch(bdir, tdir, diff_dir, tmp_path / "c0", control="random", seed=0)
    again = patch(bdir, tdir, diff_dir, tmp_path / "c0b", control="random", seed=0)
    other = patch(bdir, tdir, diff_dir, tmp_path / "c1", control="random", seed=1)
    got = load_file(str(tmp_path / "c0" / "model.safetensors"))
    rm = random_mask(real, 0)
    for n in SHAPES:
        assert rec["tensors"][n]["masked"] == int(changed[n].sum())
        ctrl = rm.get(n).numpy()
        assert ctrl.sum() == changed[n].sum()
        if 0 < changed[n].sum() < changed[n].size:
            assert not np.array_equal(ctrl, changed[n])
        np.testing.assert_array_equal(bits(got[n]), np.where(ctrl, bits(tuned[n]), bits(base[n])))
    # Patched where the control and the real set overlap only: fewer changed entries than the real mask carries.
    n_moved = sum(int((rm.get(n).numpy() & changed[n]).sum()) for n in SHAPES)
    assert run_diff(bdir, tmp_path / "c0", tmp_path / "d", rank=False)["totals"]["changed"] == n_moved
    assert n_moved < sum(int(c.sum()) for c in changed.values())
    assert rec["control"] == "random" and rec["seed"] == 0
    assert (tmp_path / "c0" / "model.safetensors").read_bytes() == (tmp_path / "c0b" / "model.safetensors").read_bytes()
    assert again["tensors"] == rec["tensors"] and other["totals"]["masked"] == rec["totals"]["masked"]
    assert (tmp_path / "c0" / "model.safetensors").read_bytes() != (tmp_path / "c1" / "model.safetensors").read_bytes()


def test_model_files_are_copied_from_base_and_nothing_else(tmp_path):
    bdir, tdir, *_ = _pair(tmp_path)
    diff_dir = _diff_mask(tmp_path, bdir, tdir)
    rec = revert(bdir, tdir, diff_dir, tmp_path / "r")
    out = tmp_path / "r"
    for name, text in MODEL_FILES.items():
        assert (out / name).read_text() == text  # the base's copy, not the tuned one's
    assert sorted(p.name for p in out.iterdir()) == sorted([*MODEL_FILES, "model.safetensors", SURGERY_JSON])
    assert sorted(rec["copied_files"]) == sorted(MODEL_FILES)


@pytest.mark.parametrize("layout", ["sharded", "hub"])
def test_other_base_layouts(tmp_path, layout):
    bdir, tdir, base, tuned, changed = _pair(tmp_path)
    other = write_checkpoint(tmp_path / layout, base, layout, config=json.loads(MODEL_FILES["config.json"]))
    diff_dir = _diff_mask(tmp_path, bdir, tdir)
    rec = patch(other, tdir, diff_dir, tmp_path / "p")
    got = load_file(str(tmp_path / "p" / "model.safetensors"))
    for n in SHAPES:
        np.testing.assert_array_equal(bits(got[n]), bits(tuned[n]))
    assert rec["copied_files"] == ["config.json"]  # from the shard folder, or the hub cache's snapshot


def test_tied_embeddings_stay_tied_and_mask_may_not_name_the_alias(tmp_path):
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(16, 8, generator=g).to(torch.bfloat16)
    cfg = {"model_type": "llama", "tie_word_embeddings": True}
    base = {"model.embed_tokens.weight": emb, "lm_head.weight": emb.clone()}
    tuned = {"model.embed_tokens.weight": emb + 1, "lm_head.weight": emb + 1}
    bdir = write_checkpoint(tmp_path / "base", base, config=cfg)
    tdir = write_checkpoint(tmp_path / "tuned", tuned, config=cfg)
    diff_dir = _diff_mask(tmp_path, bdir, tdir)
    rec = patch(bdir, tdir, diff_dir, tmp_path / "p")
    got = load_file(str(tmp_path / "p" / "model.safetensors"))
    assert list(got) == ["model.embed_tokens.weight"] and rec["tied"] == ["lm_head.weight"]
    np.testing.assert_array_equal(bits(got["model.embed_tokens.weight"]), bits(tuned["model.embed_tokens.weight"]))

    save_mask(Mask.from_tensors({"lm_head.weight": torch.ones(16, 8, dtype=torch.bool)}), tmp_path / "m.safetensors")
    with pytest.raises(SurgeryError, match="'lm_head.weight' is tied to 'model.embed_tokens.weight'"):
        patch(bdir, tdir, tmp_path / "m.safetensors", tmp_path / "p2")
    untied = write_checkpoint(tmp_path / "untied", tuned, config={**cfg, "tie_word_embeddings": False})
    with pytest.raises(SurgeryError, match="tie_word_embeddings differs"):
        patch(bdir, untied, diff_dir, tmp_path / "p3")


def test_output_is_all_or_nothing(tmp_path, monkeypatch):
    bdir, tdir, *_ = _pair(tmp_path)
    diff_dir = _diff_mask(tmp_path, bdir, tdir)
    real = surgery_mod._operate
    calls = []

    def dies_on_third(*a):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a)

    monkeypatch.setattr(surgery_mod, "_operate", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        patch(bdir, tdir, diff_dir, tmp_path / "out" / "p")
    assert list((tmp_path / "out").iterdir()) == []  # no OUT, no hidden temp folder, no .partial

    monkeypatch.setattr(surgery_mod, "_operate", real)
    patch(bdir, tdir, diff_dir, tmp_path / "out" / "p")
    first = (tmp_path / "out" / "p" / "model.safetensors").read_bytes()
    revert(bdir, tdir, diff_dir, tmp_path / "out" / "p")  # an earlier surgery output is replaced whole
    assert json.loads((tmp_path / "out" / "p" / SURGERY_JSON).read_text())["kind"] == "revert"
    assert (tmp_path / "out" / "p" / "model.safetensors").read_bytes() != first
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["p"]
    with pytest.raises(SurgeryError, match="not a surgery output"):
        patch(bdir, tdir, diff_dir, bdir)  # never overwrite the base model's own folder
    assert (bdir / "notes.txt").is_file()


def test_cli_patch_and_revert(tmp_path):
    bdir, tdir, base, tuned, changed = _pair(tmp_path)
    diff_dir = _diff_mask(tmp_path, bdir, tdir)
    n_changed = sum(int(c.sum()) for c in changed.values())
    r = runner.invoke(
        app, ["surgery", "patch", str(bdir), str(tdir), "--mask", str(diff_dir), "-o", str(tmp_path / "p")]
    )
    assert r.exit_code == 0, r.output
    assert f"{n_changed:,} of" in r.output and "wrote" in r.output
    r = runner.invoke(
        app,
        [
            "surgery",
            "revert",
            str(bdir),
            str(tdir),
            "--mask",
            str(diff_dir),
            "-o",
            str(tmp_path / "c"),
            "--control",
            "random",
            "--seed",
            "5",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "random control (seed 5)" in r.output
    assert json.loads((tmp_path / "c" / SURGERY_JSON).read_text())["seed"] == 5


def _one_line_error(args: list[str]) -> str:
    r = runner.invoke(app, args)
    assert r.exit_code != 0
    assert not isinstance(r.exception, Exception), r.exception  # a clean exit, not an escaped traceback
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.output
    return lines[0]


def test_cli_bad_input_gives_one_line_error(tmp_path):
    bdir, tdir, *_ = _pair(tmp_path)
    q = "model.layers.0.self_attn.q_proj.weight"
    save_mask(Mask.from_tensors({q: torch.ones(4, 8, dtype=torch.bool)}), tmp_path / "bad.safetensors")
    cmd = ["surgery", "patch", str(bdir), str(tdir), "-o", str(tmp_path / "o")]

    msg = _one_line_error([*cmd, "--mask", str(tmp_path / "bad.safetensors")])
    assert q in msg and "(4, 8)" in msg and "(8, 8)" in msg
    msg = _one_line_error([*cmd, "--mask", str(tmp_path / "nope.safetensors")])
    assert "nope.safetensors" in msg and "no such file" in msg
    save_mask(Mask.from_tensors({"model.extra.weight": torch.ones(2, dtype=torch.bool)}), tmp_path / "x.safetensors")
    msg = _one_line_error([*cmd, "--mask", str(tmp_path / "x.safetensors")])
    assert "model.extra.weight" in msg
    msg = _one_line_error([*cmd, "--mask", str(tmp_path / "x.safetensors"), "--control", "shuffle"])
    assert "shuffle" in msg

    reshaped = {n: torch.zeros(s, dtype=torch.bfloat16) for n, s in SHAPES.items()}
    reshaped[q] = torch.zeros(8, 4, dtype=torch.bfloat16)
    save_file(reshaped, str(tmp_path / "other.safetensors"))
    msg = _one_line_error(
        [
            "surgery",
            "revert",
            str(bdir),
            str(tmp_path / "other.safetensors"),
            "--mask",
            str(tmp_path / "bad.safetensors"),
            "-o",
            str(tmp_path / "o"),
        ]
    )
    assert q in msg and "(8, 8)" in msg and "(8, 4)" in msg
    assert not (tmp_path / "o").exists()


def test_tiny_transformers_llama_round_trips(tmp_path):
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=32,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(tmp_path / "base")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "mlp" in name or "embed" in name or "q_proj" in name:
                sel = torch.rand(p.shape, generator=g) < 0.2
                p[sel] += (0.05 * torch.randn(p.shape, generator=g)).to(p.dtype)[sel]
    model.save_pretrained(tmp_path / "tuned")
    diff_dir = _diff_mask(tmp_path, tmp_path / "base", tmp_path / "tuned")
    patch(tmp_path / "base", tmp_path / "tuned", diff_dir, tmp_path / "p")
    revert(tmp_path / "base", tmp_path / "tuned", diff_dir, tmp_path / "r")

    def state(path):
        m = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16)
        return {k: v.clone() for k, v in m.state_dict().items()}

    want_t, want_b = state(tmp_path / "tuned"), state(tmp_path / "base")
    got_p, got_r = state(tmp_path / "p"), state(tmp_path / "r")
    assert set(got_p) == set(want_t) and set(got_r) == set(want_b)
    assert any(not torch.equal(want_t[k], want_b[k]) for k in want_t)
    for k in want_t:
        assert got_p[k].dtype == torch.bfloat16
        assert torch.equal(got_p[k].view(torch.int16), want_t[k].view(torch.int16)), k
        assert torch.equal(got_r[k].view(torch.int16), want_b[k].view(torch.int16)), k
    assert torch.equal(got_p["lm_head.weight"], got_p["model.embed_tokens.weight"])  # still tied
