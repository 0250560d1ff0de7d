"""Training harness on the tiny model: every algorithm runs and leaves diffable checkpoints; masks are exact;
same seed, same weights; resume continues bit-for-bit; the advantage filter splits GRPO's gradient exactly."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from conftest import TRAIN_ONE_STEP, bits, load_all, masked_training_changes
from rldelta.checkpoint import open_checkpoint
from rldelta.cli import app
from rldelta.masks import Mask, MaskError
from rldelta.train.algorithms import ALGOS
from rldelta.train.config import ConfigError, TrainConfig, make_config, parse_save_steps
from rldelta.train.masking import MaskedUpdate, bind_masks
from rldelta.train.models import build_tiny
from rldelta.train.runfiles import saved_steps
from rldelta.train.trainers import TrainError, _advantage_filter, _last_resume_point, train

TINY = TRAIN_ONE_STEP


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return build_tiny(tmp_path_factory.mktemp("base") / "tiny", seed=0)


def run(base: Path, out: Path, **kw) -> Path:
    cfg = TrainConfig(model=str(base), output=str(out), **{**TINY, **kw})
    return train(cfg)


# ---- config ------------------------------------------------------------------------------------------------------


def test_parse_save_steps():
    assert parse_save_steps("", 7) == [7]
    assert parse_save_steps("every:3", 10) == [3, 6, 9, 10]
    assert parse_save_steps("5, 2", 8) == [2, 5, 8]
    assert parse_save_steps("8", 8) == [8]
    for bad in ("0", "x", "every:0", "11"):
        with pytest.raises(ConfigError):
            parse_save_steps(bad, 10)


def test_config_rejects_bad_settings(tmp_path):
    with pytest.raises(ConfigError, match="advantages"):
        TrainConfig(model="m", output="o", algo="dpo", advantages="negative")
    with pytest.raises(ConfigError, match="algo"):
        TrainConfig(model="m", output="o", algo="ppo2")
    with pytest.raises(ConfigError, match="num-generations"):
        TrainConfig(model="m", output="o", num_generations=1)
    with pytest.raises(ConfigError, match="nothing to resume"):
        make_config(str(tmp_path), resume=True)
    for key in ("lr", "temperature", "weight_decay", "beta"):  # NaN passes `<= 0`; inf trains to NaN
        for value in (float("nan"), float("inf")):
            with pytest.raises(ConfigError, match=f"--{key.replace('_', '-')} must be a finite number"):
                TrainConfig(model="m", output="o", **{key: value})
    r = CliRunner().invoke(app, ["train", "--model", "m", "--lr", "nan", "-o", str(tmp_path / "run")])
    assert r.exit_code == 2 and r.output.strip() == "error: --lr must be a finite number, got nan", r.output
    assert not (tmp_path / "run").exists()


# ---- masked updates without a trainer: against a hand computation ------------------------------------------------


def _linear_step(restore: bool, weight_decay: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    lin = torch.nn.Linear(6, 5, bias=False)
    w0 = lin.weight.detach().clone()
    mask = torch.rand(5, 6) < 0.3
    masked = MaskedUpdate(lin, {"weight": mask}).attach()
    opt = torch.optim.AdamW(lin.parameters(), lr=0.1, weight_decay=weight_decay, eps=1e-8)
    x = torch.randn(4, 6)
    loss = (lin(x) ** 2).sum()
    loss.backward()
    grad = (2 * (x @ w0.T)).T @ x  # d/dW sum((x W^T)^2), by hand
    opt.step()
    if restore:
        masked.restore()
    return w0, lin.weight.detach(), mask, grad


def test_masked_adamw_step_matches_hand_computation():
    w0, w1, mask, grad = _linear_step(restore=True, weight_decay=0.1)
    # AdamW's first step, by its definition: decay, then m_hat / (sqrt(v_hat) + eps) with m_hat = g, v_hat = g^2.
    expected = w0 * (1 - 0.1 * 0.1) - 0.1 * grad / (grad.abs() + 1e-8)
    assert torch.equal(bits(w1[~mask]), bits(w0[~mask]))
    torch.testing.assert_close(w1[mask], expected[mask], rtol=1e-5, atol=1e-6)


def test_without_restore_weight_decay_moves_masked_out_entries():
    # The negative control: gradient hooks alone are not enough under AdamW weight decay.
    w0, w1, mask, _ = _linear_step(restore=False, weight_decay=0.1)
    assert not torch.equal(w1[~mask], w0[~mask])


def test_bind_masks_checks_names_shapes_and_ties(base):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    emb = model.model.embed_tokens.weight
    assert model.lm_head.weight is emb  # the tiny model ties its embeddings
    m = torch.zeros(emb.shape, dtype=torch.bool)
    m[0] = True
    # The mask of either name of a tied parameter applies to the one shared parameter; the rest is frozen.
    bound = bind_masks(model, Mask.from_tensors({"lm_head.weight": m}))
    assert torch.equal(bound["model.embed_tokens.weight"], m)
    assert "lm_head.weight" not in bound
    assert not bound["model.norm.weight"].any()
    with pytest.raises(MaskError, match="'model.nope.weight'"):
        bind_masks(model, Mask.from_tensors({"model.nope.weight": m}))
    with pytest.raises(MaskError, match=r"'model.norm.weight' has shape \(3,\)"):
        bind_masks(model, Mask.from_tensors({"model.norm.weight": torch.ones(3, dtype=torch.bool)}))
    with pytest.raises(MaskError, match="tied"):
        bind_masks(model, Mask.from_tensors({"lm_head.weight": m, "model.embed_tokens.weight": ~m}))


# ---- every algorithm ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("algo", ALGOS)
def test_algorithm_trains_and_checkpoints_are_diffable(base, tmp_path, algo):
    out = run(base, tmp_path / "run", algo=algo)
    assert saved_steps(out) == [1]
    published, master = out / "checkpoints" / "step-1", out / "checkpoints" / "step-1-fp32"
    ck = open_checkpoint(published)
    assert {ck.info(n).dtype for n in ck.names()} == {torch.bfloat16}
    assert {open_checkpoint(master).info(n).dtype for n in ck.names()} == {torch.float32}
    assert ck.aliases == {"lm_head.weight": "model.embed_tokens.weight"}  # stored once, like the base

    from rldelta.diff import run_diff

    summary = run_diff(base, master, tmp_path / "diff")
    assert summary["totals"]["tensors"] == len(open_checkpoint(base))
    assert summary["totals"]["changed"] > 0  # one step at lr 1e-3 moves the weights
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "completed" and record["config"]["algo"] == algo
    assert pd.read_parquet(out / "metrics.parquet")["step"].tolist() == [1]


# ---- mask exactness inside real training ------------------------------------------------------------------------


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_masked_training_changes_only_the_mask(base, tmp_path, precision):
    masks, changes = masked_training_changes(base, tmp_path, precision, run)
    for d, changed in changes.items():
        inside = changed_inside = 0
        for name, c in changed.items():
            assert not (c & ~masks[name]).any(), f"{d}: {name} changed outside the mask"
            inside += int(masks[name].sum())
            changed_inside += int((c & masks[name]).sum())
        # The tied embedding matrix trains too (through both of its uses), but only inside its mask.
        assert changed["model.embed_tokens.weight"].any()
        assert changed_inside > 0.5 * inside


# ---- determinism and resume --------------------------------------------------------------------------------------


def test_same_seed_same_weights_and_resume_continues_exactly(base, tmp_path):
    a = run(base, tmp_path / "a", steps=2)
    b = run(base, tmp_path / "b", steps=2)
    c = run(base, tmp_path / "c", steps=2, seed=1)
    wa, wb, wc = (load_all(p / "checkpoints" / "step-2-fp32") for p in (a, b, c))
    assert all(torch.equal(bits(wa[n]), bits(wb[n])) for n in wa)
    assert any(not torch.equal(wa[n], wc[n]) for n in wa)  # the comparison can fail: another seed differs

    # Stop after step 1, then --resume to step 2: the same weights as the uninterrupted run.
    r = run(base, tmp_path / "r", steps=1)
    (r / "trainer" / "checkpoint-9").mkdir()  # a Trainer checkpoint cut off by Ctrl-C: no trainer_state.json
    assert _last_resume_point(r / "trainer").name == "checkpoint-1"
    assert not (r / "trainer" / "checkpoint-9").exists()
    with pytest.raises(TrainError, match="already holds a training run"):
        run(base, r, steps=2)
    with pytest.raises(TrainError, match="seed was 0"):
        run(base, r, steps=2, resume=True, seed=3)
    run(base, r, steps=2, resume=True)
    wr = load_all(r / "checkpoints" / "step-2-fp32")
    assert all(torch.equal(bits(wa[n]), bits(wr[n])) for n in wa)
    assert saved_steps(r) == [1, 2]
    metrics = pd.read_parquet(r / "metrics.parquet")
    assert metrics["step"].tolist() == [1, 2]
    for col in ("reward_mean", "reward_std", "accuracy", "loss", "entropy", "completion_length", "seconds"):
        assert col in metrics.columns
    # The run's accuracy column is the task reward TRL logged, checked against the reward definition's range.
    assert metrics["accuracy"].between(0, 1).all()
    record = json.loads((r / "run.json").read_text())
    assert record["status"] == "completed" and record["resumed_from"].endswith("checkpoint-1")
    assert {"torch", "transformers", "trl"} <= set(record["versions"]) and "git_revision" in record


def test_resume_of_a_finished_run_is_a_no_op_that_says_so(base, tmp_path, capsys):
    """The Trainer, resumed at the last step, ran one step past it ("step 13/12") into metrics and steps.parquet."""
    r = run(base, tmp_path / "r", steps=2)
    files = {p: p.read_bytes() for p in r.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert run(base, r, steps=2, resume=True) == r
    assert f"{r}: already trained to step 2 of 2; nothing to resume" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in r.rglob("*") if p.is_file()} == files  # nothing written
    assert pd.read_parquet(r / "metrics.parquet")["step"].tolist() == [1, 2]
    with pytest.raises(TrainError, match="already reached step 2; --steps 1 cannot undo it"):
        run(base, r, steps=1, resume=True)
    # killed after its last checkpoint, before run.json said so: the resume records the end it finds
    record = json.loads((r / "run.json").read_text())
    (r / "run.json").write_text(json.dumps({**record, "status": "interrupted"}))
    run(base, r, steps=2, resume=True)
    assert json.loads((r / "run.json").read_text())["status"] == "completed"
    # killed between the resume point and the published copy: refused, naming what to remove
    shutil.rmtree(r / "checkpoints" / "step-2")
    with pytest.raises(TrainError, match=r"not .*step-2; remove .*checkpoint-2 to train that step again"):
        run(base, r, steps=2, resume=True)


# ---- --advantages ------------------------------------------------------------------------------------------------


class _FakeGRPO:
    """Stands in for GRPOTrainer's scoring step: fixed advantages for 4 completions of 3 tokens."""

    def __init__(self):
        self.model = torch.nn.Linear(1, 1)
        self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}

    def _generate_and_score_completions(self, inputs):
        return {
            "advantages": torch.tensor([1.5, -0.5, 0.0, -1.0]),
            "completion_mask": torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1]]),
        }


def test_advantage_filter_by_hand():
    neg = _advantage_filter(_FakeGRPO, "negative")()._generate_and_score_completions(None)
    assert neg["advantages"].tolist() == [0.0, -0.5, 0.0, -1.0]
    assert neg["tool_mask"].tolist() == [[0, 0, 0], [1, 1, 1], [0, 0, 0], [1, 1, 1]]
    pos = _advantage_filter(_FakeGRPO, "positive")()._generate_and_score_completions(None)
    assert pos["advantages"].tolist() == [1.5, 0.0, 0.0, 0.0]
    assert pos["tool_mask"].tolist() == [[1, 1, 1], [0, 0, 0], [0, 0, 0], [0, 0, 0]]


def test_positive_plus_negative_updates_add_up_to_the_full_update(base, tmp_path):
    # With plain SGD, no clipping and one step on the same samples, the update is linear in the loss, so
    # Δ(all) = Δ(positive only) + Δ(negative only) if and only if the filter splits the GRPO loss exactly.
    sgd = dict(extra={"optim": "sgd"}, max_grad_norm=0.0, lr=0.5, prompts_per_step=2, num_generations=4)
    w0 = {n: t.float() for n, t in load_all(base).items()}
    deltas = {}
    for adv in ("all", "positive", "negative"):
        out = run(base, tmp_path / adv, advantages=adv, **sgd)
        w = load_all(out / "checkpoints" / "step-1-fp32")
        deltas[adv] = {n: w[n] - w0[n] for n in w0}
    moved = {adv: sum(float(d.abs().sum()) for d in deltas[adv].values()) for adv in deltas}
    assert moved["positive"] > 0 and moved["negative"] > 0  # both halves carry signal on this batch
    for n in w0:
        torch.testing.assert_close(
            deltas["positive"][n] + deltas["negative"][n], deltas["all"][n], rtol=1e-4, atol=1e-6
        )


def test_rewards_setting_is_validated(tmp_path):
    assert TrainConfig(model="m", output=str(tmp_path), rewards="correctness").reward_list == ["correctness"]
    for bad in ("", "speed", "format,format"):
        with pytest.raises(ConfigError, match="--rewards"):
            TrainConfig(model="m", output=str(tmp_path), rewards=bad).validate()


def test_violations_report_every_bit_change_outside_the_mask():
    lin = torch.nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.0, 2.0], [3.0, 4.0, 5.0]]))
    mask = torch.tensor([[True, False, False], [False, False, False]])
    masked = MaskedUpdate(lin, {"weight": mask})
    assert masked.violations() == {}
    with torch.no_grad():
        lin.weight[0, 0] = 9.0  # inside the mask: allowed
        lin.weight[0, 1] = -0.0  # outside, and equal to +0.0 as a float: only the bits tell
        lin.weight[1, 2] = 5.5  # outside
    assert masked.violations() == {"weight": 2}
    masked.restore()
    assert masked.violations() == {} and lin.weight[0, 0] == 9.0


def test_completions_log_holds_every_sample_with_its_rewards(base, tmp_path):
    from rldelta.train.tasks import get_task

    out = run(base, tmp_path / "r", steps=2, rewards="correctness,format")
    df = pd.read_parquet(out / "completions.parquet")
    assert sorted(df["step"].unique()) == [1, 2]
    assert (df.groupby("step").size() == 2 * 2).all()  # prompts_per_step x num_generations per step
    task = get_task("digits")
    for row in df.itertuples():
        assert row.prompt.startswith("What is")
        assert row.correctness == task.correctness_reward(row.completion, row.answer)
        assert row.format == task.format_reward(row.completion)
    # what the trainer logged as the mean reward of a step is the mean of the recorded rows of that step
    metrics = pd.read_parquet(out / "metrics.parquet").set_index("step")
    for step, rows in df.groupby("step"):
        assert metrics.loc[step, "reward_mean"] == pytest.approx(
            (rows["correctness"] + rows["format"]).mean(), abs=1e-6
        )


def test_completions_log_is_rewritten_at_checkpoints_and_at_most_every_30_s(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from rldelta.train import saving

    rec = saving.CompletionRecorder(tmp_path)
    reward = rec.wrap(lambda **kw: [1.0, 0.0], "correctness")
    clock = [100.0]
    monkeypatch.setattr(saving.time, "monotonic", lambda: clock[0])

    def step(n: int) -> None:
        reward(
            prompts=["a", "b"],
            completions=[f"x{n}", f"y{n}"],
            answer=["1", "2"],
            trainer_state=SimpleNamespace(global_step=n - 1),
        )
        rec.on_step_end(None, SimpleNamespace(global_step=n), None)

    def on_disk() -> list[int]:
        return sorted(pd.read_parquet(tmp_path / "completions.parquet")["step"].unique().tolist())

    step(1)
    assert on_disk() == [1]  # the first step is written at once
    step(2)
    clock[0] += 29
    step(3)
    assert on_disk() == [1]  # not rewritten after every step
    rec.on_save(None, None, None)
    assert on_disk() == [1, 2, 3]  # a checkpoint (resume point) writes everything sampled so far
    step(4)
    clock[0] += 30
    step(5)
    assert on_disk() == [1, 2, 3, 4, 5]
    assert len(pd.read_parquet(tmp_path / "completions.parquet")) == 10


# ---- progress in a log (stderr not a terminal) ----------------------------------------------------------------------


def test_progress_without_a_terminal_prints_a_line_every_tenth_of_the_run(capsys):
    from types import SimpleNamespace

    from rldelta.train.callbacks import progress_callback

    cb = progress_callback(30, "train run-a")  # pytest's captured stderr is not a terminal
    state = SimpleNamespace(global_step=0)
    cb.on_train_begin(None, state, None)
    for step in range(1, 31):
        state.global_step = step
        cb.on_step_end(None, state, None)
        if step % 2:  # a step that logs: its line carries its own values; one that does not: the last ones
            cb.on_log(None, state, None, logs={"reward": step / 100, "loss": 0.5 / step})
    cb.on_train_end(None, state, None)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(",")[0] for line in lines] == [f"train run-a: step {s}/30" for s in range(3, 31, 3)]
    assert lines[0].startswith("train run-a: step 3/30, reward 0.03, loss 0.167, ")
    assert lines[1].startswith("train run-a: step 6/30, reward 0.05, loss 0.1, ")  # step 6 logged nothing
    assert lines[-1].endswith("s/step, ~0 s left") and "s/step, ~" in lines[0]


def test_progress_of_a_real_run_in_a_log(base, tmp_path, capsys):
    run(base, tmp_path / "logged", steps=2, progress=True)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("train logged: ")]
    assert [line.split(",")[0] for line in lines] == ["train logged: step 1/2", "train logged: step 2/2"]
    assert all(", reward " in line and ", loss " in line and " s/step, ~" in line for line in lines)


# ---- the cause analysis's SFT contrast -------------------------------------------------------------------------


def test_sft_foreign_style_trains_on_the_same_answers_restyled(base, tmp_path):
    from rldelta.train.tasks import get_task
    from rldelta.train.trainers import FOREIGN_CLOSE, FOREIGN_OPEN, OFFLINE_DATA, foreign_style

    own = run(base, tmp_path / "own", algo="sft", sft_style="own", offline_gold_fallback=True)
    foreign = run(base, tmp_path / "foreign", algo="sft", sft_style="foreign", offline_gold_fallback=True)

    def completions(out):
        rows = [json.loads(line) for line in (out / OFFLINE_DATA).read_text().splitlines()]
        return [(r["prompt"], r["completion"][0]["content"]) for r in rows]

    a, b = completions(own), completions(foreign)
    # same prompts, same seed, same samples: the foreign rows are exactly the own ones restyled
    assert [p for p, _ in a] == [p for p, _ in b] and len(a) == 2
    assert [c for _, c in b] == [foreign_style(c) for _, c in a]
    assert all(c.startswith(FOREIGN_OPEN) and c.endswith(FOREIGN_CLOSE) for _, c in b)
    assert not any(FOREIGN_OPEN in c for _, c in a)
    # the restyled answer still carries the answer the task reads
    arith = get_task("arith")
    assert arith.correctness_reward(foreign_style(arith.reference_completion("12")), "12") == 1.0
    with pytest.raises(ConfigError, match="sft-style"):
        TrainConfig(model=str(base), output=str(tmp_path / "x"), algo="sft", sft_style="alien")
