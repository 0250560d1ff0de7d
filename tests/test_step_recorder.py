"""StepRecorder: every optimizer step's change set of the bf16 copy, exactly.

Checked against a direct computation on planted changes (each step's numbers from saved copies of the weights),
and on real training steps against `rldelta diff`'s mask at the saved checkpoints, bit for bit.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from rldelta.checkpoint import open_checkpoint
from rldelta.cli import app
from rldelta.diff import run_diff
from rldelta.masks import load_mask
from rldelta.runtime.files import FIRST_CHANGED_FILE, STEPS_DIR, STEPS_FILE
from rldelta.train.config import TrainConfig
from rldelta.train.models import build_tiny
from rldelta.train.step_patches import apply_patches, patch_file
from rldelta.train.step_recorder import StepRecorder, mask_file
from rldelta.train.trainers import train


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = torch.nn.Linear(16, 8, bias=False)  # module "a"
        self.b = torch.nn.Linear(8, 4)  # modules "b" (weight and bias)


def _bits(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.bfloat16).view(torch.int16).numpy().reshape(-1)


def _plant(net: _Net, step: int, rng: np.random.Generator, base: dict[str, torch.Tensor]) -> None:
    """Move a few random entries by a few bf16 units, and put a few changed ones back to their base value."""
    with torch.no_grad():
        for n, p in net.named_parameters():
            flat = p.view(-1)
            idx = rng.choice(flat.numel(), size=min(5, flat.numel()), replace=False)
            flat[idx] = flat[idx] * (1 + 0.05 * step)
            back = rng.choice(flat.numel(), size=2, replace=False)
            flat[back] = base[n].view(-1)[back]


def _expected(history: list[dict[str, np.ndarray]]) -> list[dict[str, float]]:
    """Each step's totals, computed directly from the bit patterns of every step's weights (history[0]: base)."""
    rows, union_prev, d_prev = [], None, None
    for t in range(1, len(history)):
        cur, prev, base = (np.concatenate(list(h.values())) for h in (history[t], history[t - 1], history[0]))
        d, s = cur != prev, cur != base
        union_prev = np.zeros_like(s) if union_prev is None else union_prev
        d_prev = np.zeros_like(d) if d_prev is None else d_prev
        rows.append(
            {
                "step": t,
                "changed_step": int(d.sum()),
                "changed_base": int(s.sum()),
                "overlap_prev_step": (d & d_prev).sum() / d.sum(),
                "overlap_union": (d & union_prev).sum() / d.sum(),
                "new_in_union": int((s & ~union_prev).sum()),
                "bytes_index": int(d.sum()) * 6,
            }
        )
        union_prev, d_prev = union_prev | s, d
    return rows


class _Skipping(StepRecorder):
    """A faulty recorder that misses every second step (as if an optimizer step went unobserved)."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % 2 == 0:
            return control
        return super().on_step_end(args, state, control, **kwargs)


def _drive(recorder: StepRecorder, steps: int) -> list[dict[str, np.ndarray]]:
    net = _Net()
    base = {n: p.detach().clone() for n, p in net.named_parameters()}
    rng = np.random.default_rng(1)
    recorder.on_train_begin(None, SimpleNamespace(global_step=0, max_steps=steps), None, model=net)
    history = [{n: _bits(p) for n, p in net.named_parameters()}]
    for t in range(1, steps + 1):
        _plant(net, t, rng, base)
        history.append({n: _bits(p) for n, p in net.named_parameters()})
        recorder.on_step_end(None, SimpleNamespace(global_step=t), None)
    recorder.close()
    return history


def _plant_many(net: _Net, step: int, rng: np.random.Generator, base: dict[str, torch.Tensor]) -> None:
    """Denser than _plant: a fifth of the entries move (some again), and a third of those that differ from the base
    go back to it, so every path of the since-base bookkeeping is taken many times."""
    with torch.no_grad():
        for n, p in net.named_parameters():
            flat, b = p.view(-1), base[n].view(-1)
            hit = torch.from_numpy(rng.random(flat.numel()) < 0.2)
            flat[hit] = flat[hit] * (1 + 0.03 * step)
            differ = torch.nonzero(flat.to(torch.bfloat16) != b.to(torch.bfloat16)).reshape(-1)
            back = differ[torch.from_numpy(rng.random(differ.numel()) < 0.33)]
            flat[back] = b[back]


def _golden_rows(history: list[dict[str, np.ndarray]], names: list[str]) -> pd.DataFrame:
    """Every column of the rows of the tensors `names`, from the bit patterns of every step's weights directly."""
    rows, union, d_prev = [], None, None
    for t in range(1, len(history)):
        cur, prev, base = (np.concatenate([h[n] for n in names]) for h in (history[t], history[t - 1], history[0]))
        d, s = cur != prev, cur != base
        union = np.zeros_like(s) if union is None else union
        d_prev = np.zeros_like(d) if d_prev is None else d_prev
        n, k = cur.size, int(d.sum())
        rows.append(
            {
                "step": t,
                "numel": n,
                "changed_step": k,
                "changed_step_frac": k / n,
                "changed_base": int(s.sum()),
                "changed_base_frac": s.sum() / n,
                "overlap_prev_step": (d & d_prev).sum() / k if k else np.nan,
                "overlap_union": (d & union).sum() / k if k else np.nan,
                "new_in_union": int((s & ~union).sum()),
                "union_frac": (union | s).sum() / n,
                "bytes_index": k * 6,
                "bytes_bitmask": -(-n // 8) + 2 * k,
                "bytes_dense": 2 * n,
            }
        )
        union, d_prev = union | s, d
    return pd.DataFrame(rows)


@pytest.mark.parametrize("placement", ["device", "host", "file"])
def test_every_file_equals_a_direct_computation_for_each_base_placement(tmp_path, placement):
    net, rng = _Net(), np.random.default_rng(3)
    base = {n: p.detach().clone() for n, p in net.named_parameters()}
    rec = StepRecorder(tmp_path, net, save_every=2, base=placement)
    rec.on_train_begin(None, SimpleNamespace(global_step=0, max_steps=8), None)
    history = [{n: _bits(p) for n, p in net.named_parameters()}]
    for t in range(1, 9):
        _plant_many(net, t, rng, base)
        history.append({n: _bits(p) for n, p in net.named_parameters()})
        rec.on_step_end(None, SimpleNamespace(global_step=t), None)
    rec.close()
    got = pd.read_parquet(tmp_path / STEPS_FILE)
    groups = {"a": ["a.weight"], "b": ["b.weight", "b.bias"], "total": ["a.weight", "b.weight", "b.bias"]}
    for module, names in groups.items():
        want = _golden_rows(history, names)
        rows = got[got.module == module].reset_index(drop=True)
        for col in want.columns:
            np.testing.assert_allclose(rows[col].to_numpy(float), want[col].to_numpy(float), err_msg=f"{module} {col}")
    for t in (2, 4, 6, 8):
        mask = load_mask(mask_file(tmp_path, t))
        for n in history[0]:
            assert mask.get(n).reshape(-1).numpy().tolist() == (history[t][n] != history[0][n]).tolist(), (t, n)
    first = load_file(tmp_path / STEPS_DIR / FIRST_CHANGED_FILE)
    for n, b in history[0].items():
        differed = np.stack([history[t][n] != b for t in range(1, 9)])  # (step, entry)
        want = np.where(differed.any(0), differed.argmax(0) + 1, 0)
        assert first[n].reshape(-1).numpy().tolist() == want.tolist(), n


def _check(run_dir: Path, history: list[dict[str, np.ndarray]]) -> None:
    got = pd.read_parquet(run_dir / STEPS_FILE)
    total = got[got.module == "total"].reset_index(drop=True)
    want = pd.DataFrame(_expected(history))
    assert total["step"].tolist() == want["step"].tolist()
    for col in want.columns:
        np.testing.assert_allclose(total[col].to_numpy(float), want[col].to_numpy(float), err_msg=col)
    # the per-module rows add up to the total
    sums = got[got.module != "total"].groupby("step")[["changed_step", "changed_base", "numel"]].sum()
    assert (sums.to_numpy() == total.set_index("step")[["changed_step", "changed_base", "numel"]].to_numpy()).all()


def test_planted_steps_match_a_direct_computation(tmp_path):
    history = _drive(StepRecorder(tmp_path), steps=6)
    _check(tmp_path, history)
    # the first-change file: the union at step t is 0 < first <= t
    saved = load_file(tmp_path / STEPS_DIR / FIRST_CHANGED_FILE)
    first = np.concatenate([saved[n].numpy().reshape(-1) for n in history[0]])
    base = np.concatenate(list(history[0].values()))
    for t in range(1, 7):
        union = np.zeros_like(base, dtype=bool)
        for u in range(1, t + 1):
            union |= np.concatenate(list(history[u].values())) != base
        assert ((first > 0) & (first <= t)).tolist() == union.tolist()
    summary = json.loads((tmp_path / STEPS_DIR / "summary.json").read_text())
    assert summary["share_of_final_set"][-1] == 1.0 and summary["steps"] == list(range(1, 7))


def test_a_recorder_that_skips_a_step_fails_the_check(tmp_path):
    history = _drive(_Skipping(tmp_path), steps=6)
    with pytest.raises(AssertionError):
        _check(tmp_path, history)


def _config(base: Path, out: Path, steps: int = 4, **kw) -> TrainConfig:
    return TrainConfig(
        model=str(base),
        output=str(out),
        task="digits",
        steps=steps,
        save_steps="every:2",
        prompts_per_step=2,
        num_generations=2,
        max_completion_length=8,
        lr=1e-5,  # small, as in real RL: most updates vanish on rounding to bf16, so the sets are sparse
        train_size=16,
        progress=False,
        **kw,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("steps")
    base = build_tiny(root / "tiny", seed=0)
    return base, train(_config(base, root / "run", record_patches=True))


def test_a_resumed_run_records_what_an_uninterrupted_one_does(trained, tmp_path):
    base, run = trained
    part = train(_config(base, tmp_path / "r", steps=2))
    train(_config(base, part, steps=4, resume=True))
    a, b = pd.read_parquet(run / STEPS_FILE), pd.read_parquet(part / STEPS_FILE)
    cols = ["step", "module", "changed_step", "changed_base", "overlap_prev_step", "overlap_union", "new_in_union"]
    pd.testing.assert_frame_equal(a[cols].reset_index(drop=True), b[cols].reset_index(drop=True))
    fa, fb = (load_file(r / STEPS_DIR / FIRST_CHANGED_FILE) for r in (run, part))
    assert all(torch.equal(fa[n], fb[n]) for n in fa)


def test_recorded_set_equals_the_diff_mask_at_every_saved_step(trained, tmp_path):
    base, run = trained
    rows = pd.read_parquet(run / STEPS_FILE)
    assert sorted(rows["step"].unique()) == [1, 2, 3, 4]
    for step in (2, 4):
        out = tmp_path / f"d{step}"
        summary = run_diff(base, run / "checkpoints" / f"step-{step}", out, compare_dtype="bf16", save_mask=True)
        diff_mask, recorded = load_mask(out), load_mask(mask_file(run, step))
        assert sorted(diff_mask.names()) == sorted(recorded.names())
        for n in diff_mask.names():
            assert torch.equal(diff_mask.get(n), recorded.get(n)), n
        total = rows[(rows.step == step) & (rows.module == "total")].iloc[0]
        assert total["changed_base"] == summary["totals"]["changed"]
        assert 0 < total["changed_base"] < total["numel"]  # a sparse set: the comparison is not trivially all/none


def test_cli_steps_prints_the_table_and_writes_a_union_mask(trained, tmp_path):
    _, run = trained
    r = CliRunner().invoke(app, ["steps", str(run), "--union-at", "2", "-o", str(tmp_path / "u.safetensors")])
    assert r.exit_code == 0, r.output
    assert "saturat" in r.output
    union = load_mask(tmp_path / "u.safetensors")
    first = load_file(run / STEPS_DIR / FIRST_CHANGED_FILE)
    for n in union.names():
        assert torch.equal(union.get(n), (first[n] > 0) & (first[n] <= 2))
    r = CliRunner().invoke(app, ["steps", str(tmp_path)])
    assert r.exit_code == 2 and "steps.parquet" in r.output


def test_patches_rebuild_every_planted_step_bit_for_bit(tmp_path):
    history = _drive(StepRecorder(tmp_path / "run", patches=True), steps=5)
    base_file = tmp_path / "base.safetensors"
    save_file({n: p.detach().clone() for n, p in _Net().named_parameters()}, base_file)
    for t in range(1, 6):
        out = tmp_path / f"w{t}.safetensors"
        apply_patches(base_file, tmp_path / "run", t, out)
        got = load_file(out)
        for n, bits in history[t].items():
            assert got[n].dtype == torch.bfloat16
            assert np.array_equal(got[n].view(torch.int16).numpy().reshape(-1), bits), (t, n)


def test_applying_the_patches_reproduces_every_saved_checkpoint(trained, tmp_path):
    base, run = trained
    for step in (2, 4):
        out = tmp_path / f"s{step}"
        r = CliRunner().invoke(app, ["steps", "apply", str(base), str(run), "--to", str(step), "-o", str(out)])
        assert r.exit_code == 0, r.output
        ckpt, rebuilt = open_checkpoint(run / "checkpoints" / f"step-{step}"), load_file(out / "model.safetensors")
        assert sorted(rebuilt) == sorted(n for n in ckpt.names() if n in rebuilt) and rebuilt
        for n, t in rebuilt.items():
            want = ckpt.get(n).to(torch.bfloat16)
            assert torch.equal(t.view(torch.int16), want.view(torch.int16)), (step, n)
        assert (out / "config.json").is_file()
    # the patch of a step holds exactly that step's changes (vLLM SparseWeightPatch layout: int32 flat indices)
    patch = load_file(patch_file(run / STEPS_DIR, 1))
    assert all(v.dtype == torch.int32 for k, v in patch.items() if k.endswith(".indices"))


def test_a_patch_applied_to_another_base_is_refused_in_one_line(trained, tmp_path):
    _, run = trained
    other = build_tiny(tmp_path / "other", seed=1)
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["steps", "apply", str(other), str(run), "--to", "2", "-o", str(out)])
    assert r.exit_code == 2 and "fingerprint" in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert not out.exists()
    r = CliRunner().invoke(app, ["steps", "apply", str(other), str(run), "--to", "9", "-o", str(out)])
    assert r.exit_code == 2 and "no such patch" in r.output
