"""PPO and PRIME on the tiny model: `--mask` exact on the policy, `--resume` bit-identical (the value model or the
implicit reward model included), and a short run raising a reward the tiny model can learn."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from conftest import TRAIN_ONE_STEP, bits, load_all, masked_training_changes
from rldelta.train.actor_critic import SIDE_MODEL
from rldelta.train.config import ConfigError, TrainConfig
from rldelta.train.models import build_tiny
from rldelta.train.tasks import Digits
from rldelta.train.trainers import train


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return build_tiny(tmp_path_factory.mktemp("base") / "tiny", seed=0)


def runner(algo: str, **fixed):
    def run(base: Path, out: Path, **kw) -> Path:
        return train(TrainConfig(model=str(base), output=str(out), **{**TRAIN_ONE_STEP, "algo": algo, **fixed, **kw}))

    return run


@pytest.mark.parametrize("algo", ["ppo", "prime"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_masked_training_changes_only_the_mask_of_the_policy(base, tmp_path, algo, precision):
    masks, changes = masked_training_changes(base, tmp_path, precision, runner(algo))
    for d, changed in changes.items():
        inside = changed_inside = 0
        for name, c in changed.items():
            assert not (c & ~masks[name]).any(), f"{algo} {d}: {name} changed outside the mask"
            inside += int(masks[name].sum())
            changed_inside += int((c & masks[name]).sum())
        assert changed_inside > 0.5 * inside  # the masked entries did train


def _side(run_dir: Path) -> dict[str, torch.Tensor]:
    points = sorted((run_dir / "trainer").glob("checkpoint-*"))
    return load_file(points[-1] / SIDE_MODEL)


@pytest.mark.parametrize("algo", ["ppo", "prime"])
def test_resume_is_bit_identical_policy_and_side_model(base, tmp_path, algo):
    # ppo: 2 epochs per rollout batch, so stopping after step 1 cuts a batch in half; the resumed run must reuse it.
    run = runner(algo, lr=1e-2)
    whole = run(base, tmp_path / "whole", steps=3)
    part = run(base, tmp_path / "part", steps=1)
    run(base, part, steps=3, resume=True)
    a, b = (load_all(p / "checkpoints" / "step-3-fp32") for p in (whole, part))
    assert all(torch.equal(bits(a[n]), bits(b[n])) for n in a)
    sa, sb = _side(whole), _side(part)
    assert set(sa) == set(sb) and all(torch.equal(bits(sa[n]), bits(sb[n])) for n in sa)
    # The side model trained (the comparison above is not between two untouched copies of the base)...
    w0 = load_all(base)
    name = "trunk.layers.0.mlp.up_proj.weight" if algo == "ppo" else "model.layers.0.mlp.up_proj.weight"
    assert not torch.equal(sa[name], w0["model.layers.0.mlp.up_proj.weight"])
    # ... and the comparison can fail: another seed gives other weights.
    c = run(base, tmp_path / "seed1", steps=3, seed=1)
    other = load_all(c / "checkpoints" / "step-3-fp32")
    assert any(not torch.equal(a[n], other[n]) for n in a)
    # The policy checkpoint holds the policy alone.
    assert set(a) == set(w0)


class AnyDigit(Digits):
    """A reward the random tiny model can learn in a few steps: 1 when the completion holds a digit, else 0 (about
    a quarter of its samples at the start)."""

    def correctness_reward(self, completion: str, answer: str) -> float:
        return 1.0 if any(ch.isdigit() for ch in completion) else 0.0


@pytest.mark.parametrize("algo", ["ppo", "prime"])
def test_a_short_run_raises_a_learnable_reward(base, tmp_path, algo):
    settings = dict(rewards="correctness", steps=12, lr=1e-2, num_generations=4, ppo_epochs=1, record_steps=False)
    out = train(
        TrainConfig(model=str(base), output=str(tmp_path / "r"), **{**TRAIN_ONE_STEP, "algo": algo, **settings}),
        task=AnyDigit(),
    )
    acc = pd.read_parquet(out / "metrics.parquet")["accuracy"].to_numpy()
    assert len(acc) == 12 and acc[-3:].mean() > acc[:3].mean() + 0.2, acc


def test_actor_critic_settings_are_validated():
    with pytest.raises(ConfigError, match="--ppo-epochs"):
        TrainConfig(model="m", output="o", algo="ppo", ppo_epochs=0)
    with pytest.raises(ConfigError, match="--reward-model-lr"):
        TrainConfig(model="m", output="o", algo="prime", reward_model_lr=0.0)
    with pytest.raises(ConfigError, match="--beta must be > 0 for prime"):
        TrainConfig(model="m", output="o", algo="prime", beta=0.0)
    with pytest.raises(ConfigError, match="num-generations"):
        TrainConfig(model="m", output="o", algo="ppo", num_generations=1)


def test_the_study_grid_takes_ppo_and_prime():
    from rldelta.study.config import PRESETS_DIR, StudyError, config_from_dict, load_config

    assert {"ppo", "prime"} <= set(load_config(PRESETS_DIR / "full.toml").algorithms)
    grid = {"algorithms": ["grpo", "ppo", "prime"]}
    assert config_from_dict(grid).algorithms == ["grpo", "ppo", "prime"]
    with pytest.raises(StudyError, match="ppo2"):
        config_from_dict({"algorithms": ["ppo2"]})
