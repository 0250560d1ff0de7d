"""The study's format-selection stage (study/selection.py) end to end on the test-size mixture model, and its pure
parts on planted inputs: where it steers, and how it answers "which intervention picks the format at what share of
RL's compute"."""

from __future__ import annotations

import pandas as pd
import pytest

from rldelta.study import config_from_dict, run_study
from rldelta.study.config import StudyError
from rldelta.study.formats_config import formats_rl_steps, formats_settings
from rldelta.study.selection import steering_answers, steering_targets

CORE = {
    "model": "tiny",
    "task": "digits",
    "seeds": [0],
    "precisions": ["fp32"],
    "steps": 2,
    "save_steps": "every:2",
    "eval_n": 4,
    "eval_max_new_tokens": 4,
    "controls": 1,
    "retrain": False,
    "threads": 1,
    "probes": ["formats"],
    "advantage_runs": False,
    "train": {"prompts_per_step": 2, "num_generations": 2, "max_completion_length": 4, "train_size": 8},
}
FORMATS = {
    "sizes": ["test"],
    "plateau": True,
    "pretrain_steps": 40,
    "difficulties": [1],
    "difficulty": 1,
    "eval_prompts": 4,
    "algorithms": ["grpo", "rloo"],
    "seeds": [0, 1],
    "epochs": 1,
    "steer": True,
    "train": {"lr": 5e-4, "prompts_per_step": 4, "num_generations": 4, "max_completion_length": 16, "train_size": 16},
    "steering": {"prompts": 4, "samples": 4, "ks": [2], "alphas": [1.0], "sft_steps": 2, "documents": 16},
}


def test_stage_end_to_end(tmp_path):
    cfg = config_from_dict({**CORE, "formats": FORMATS}, source="t.toml")
    run_study(cfg, tmp_path / "s", progress=False)
    tables = tmp_path / "s" / "tables"
    claims = pd.read_parquet(tables / "selection_claims.parquet")
    # one row per RL run (GRPO, RLOO from the one size, seeds 0 and 1), and the size claim per algorithm
    assert claims["run"].tolist() == ["test", "test-rloo", "test-s1", "test-rloo-s1", "all", "all"]
    assert claims["algo"].tolist() == ["grpo", "rloo", "grpo", "rloo", "grpo", "rloo"]
    assert set(claims["dominance"].dropna()) <= {"reproduces", "partly", "does_not_reproduce", "undecided"}
    pre = pd.read_parquet(tables / "selection_pretraining.parquet")
    assert pre["budget"].tolist() == ["plateau"] and pre["step_cap"].tolist() == [40] and pre["steps"][0] <= 40
    shares = pd.read_parquet(tables / "probe_formats.parquet")
    assert set(shares["model"]) == {"test", "test-rloo", "test-s1", "test-rloo-s1"}
    # each RL run lasted one epoch: train_size / prompts_per_step steps
    assert shares.groupby("model")["step"].max().tolist() == [4, 4, 4, 4]
    steering = pd.read_parquet(tables / "steering.parquet")
    summary = pd.read_json(tmp_path / "s" / "probes" / "formats" / "test" / "formats.json", typ="series")
    from rldelta.train.mixture import read_mixture

    model = next((tmp_path / "s" / "models").glob("mixture-test-*"))
    assert list(dict.fromkeys(steering["target"])) == steering_targets(summary.to_dict(), read_mixture(model))
    for _, sub in steering.groupby("target"):
        assert sub["method"].tolist() == ["prompt", "prompt", "activation", "sft", "rl"]
        rl = sub[sub["method"] == "rl"].iloc[0]
        assert (sub["share_of_rl_flops"] * rl["flops"] - sub["flops"]).abs().max() < 1e-6 * rl["flops"]
    # a stage re-run with another RL seed reads the claims off all the runs, not the cached claims of the first ones
    cfg = config_from_dict({**CORE, "formats": {**FORMATS, "seeds": [0, 1, 2]}}, source="t.toml")
    run_study(cfg, tmp_path / "s", progress=False)
    claims = pd.read_parquet(tables / "selection_claims.parquet")
    assert claims["run"].tolist()[:6] == ["test", "test-rloo", "test-s1", "test-rloo-s1", "test-s2", "test-rloo-s2"]
    report = (tmp_path / "s" / "report.html").read_text()
    assert "Selection or creation?" in report and "plot-steer-compute-test-" in report
    assert "steering instead of RL" in report and "Echo Chamber claim" in report


RECORD = {"corpus": {"shares": {"code": 0.5, "plain": 0.3, "boxed": 0.2}}}


@pytest.mark.parametrize(
    "winner, targets",
    [("plain", ["plain", "code"]), ("code", ["code", "plain"]), ("boxed", ["boxed", "code"]), ("other", ["code"])],
)
def test_steering_targets(winner, targets):
    assert steering_targets({"winner": winner}, RECORD) == targets


def _row(method, setting, share, low, high, flops, rl_flops=100.0):
    return {
        "size": "5m",
        "target": "plain",
        "rl_winner": True,
        "method": method,
        "setting": setting,
        "share": share,
        "share_low": low,
        "share_high": high,
        "accuracy": 0.9,
        "flops": flops,
        "share_of_rl_flops": flops / rl_flops,
    }


def test_steering_answer_is_the_cheapest_clear_majority():
    rows = [
        _row("sft", "k=64", 0.95, 0.9, 0.98, 10.0),
        _row("prompt", "answer lead", 0.7, 0.6, 0.8, 1.0),
        _row("activation", "alpha 2", 0.55, 0.45, 0.65, 0.5),  # its interval reaches below one half: no majority
        _row("rl", "run", 0.97, 0.95, 0.99, 100.0),
    ]
    (line,) = steering_answers(pd.DataFrame(rows))
    assert line.startswith("5m → plain (RL's winner): cheapest majority is prompt (answer lead): share 0.70")
    assert "at 1.00% of RL's FLOPs; RL (GRPO) ends at 0.97" in line


def test_steering_answer_when_none_wins():
    rows = [_row("sft", "k=4", 0.3, 0.2, 0.4, 10.0), _row("prompt", "lead", 0.45, 0.4, 0.55, 1.0)]
    (line,) = steering_answers(pd.DataFrame(rows))
    assert "no intervention makes it a majority (best prompt (lead): 0.45 [0.40, 0.55])" in line
    assert line.endswith("no RL run")


def test_formats_config_checks():
    cfg = config_from_dict({**CORE, "formats": FORMATS}, source="t.toml")
    assert formats_rl_steps(formats_settings(cfg)) == 4  # 1 epoch of 16 prompts, 4 a step
    assert formats_rl_steps({**formats_settings(cfg), "epochs": 2.5}) == 10
    with pytest.raises(StudyError, match="formats.steer compares steering with a GRPO run"):
        config_from_dict({**CORE, "formats": {**FORMATS, "algorithms": ["rloo"]}}, source="t.toml")
    with pytest.raises(StudyError, match="unknown key formats.steering.k; known: alphas"):
        config_from_dict({**CORE, "formats": {**FORMATS, "steering": {"k": [1]}}}, source="t.toml")
    with pytest.raises(StudyError, match="formats.steering: ks must list values >= 1"):
        config_from_dict({**CORE, "formats": {**FORMATS, "steering": {"ks": [0]}}}, source="t.toml")
    with pytest.raises(StudyError, match="formats.seeds must list distinct seeds"):
        config_from_dict({**CORE, "formats": {**FORMATS, "seeds": [1, 1]}}, source="t.toml")
    with pytest.raises(StudyError, match="formats.algorithms: unknown algorithm 'dpo'"):
        config_from_dict({**CORE, "formats": {**FORMATS, "algorithms": ["grpo", "dpo"]}}, source="t.toml")
