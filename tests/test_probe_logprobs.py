"""The log-probability probe: its arithmetic on hand-built numbers, the scorer against a model with known
log-probs and against an unbatched numpy computation, and the probe end to end on tiny advantage-split runs."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from rldelta.metrics.logprobs import pass_at_k, phases, probe_stats
from rldelta.probes import ProbeError
from rldelta.probes.logprobs import PROBE_SET, changed_sets, run_logprobs, score
from rldelta.train.config import TrainConfig
from rldelta.train.models import build_tiny
from rldelta.train.trainers import train

TINY = dict(
    task="digits",
    steps=2,
    save_steps="every:1",
    prompts_per_step=2,
    num_generations=4,
    max_completion_length=6,
    lr=1e-3,
    train_size=16,
    progress=False,
)


def test_probe_stats_by_hand():
    # prompt 0: correct lp -1, -2; wrong -3.  prompt 1: wrong -1 only.
    lp, n = [-1.0, -2.0, -3.0, -1.0], [1, 2, 3, 4]
    ok, pid = [True, True, False, False], [0, 0, 0, 1]
    s = probe_stats(lp, n, ok, pid)
    assert s["logp_correct"] == pytest.approx(-1.5)
    assert s["logp_wrong"] == pytest.approx(-2.0)
    assert s["token_logp_correct"] == pytest.approx(-3 / 3)
    assert s["token_logp_wrong"] == pytest.approx(-4 / 7)
    mc0, mw0, mw1 = math.exp(-1) + math.exp(-2), math.exp(-3), math.exp(-1)
    assert s["mass_correct"] == pytest.approx(mc0 / 2)
    assert s["mass_wrong"] == pytest.approx((mw0 + mw1) / 2)
    assert s["correct_share"] == pytest.approx(mc0 / (mc0 + mw0))  # only prompt 0 has both kinds
    empty = probe_stats([-1.0], [1], [True], [0])
    assert empty["logp_wrong"] is None and empty["correct_share"] is None
    with pytest.raises(ValueError, match="lengths differ"):
        probe_stats([-1.0], [1, 2], [True], [0])


def test_pass_at_k_equals_enumeration_of_subsets():
    for n in range(1, 7):
        for c in range(n + 1):
            outcomes = [True] * c + [False] * (n - c)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(outcomes, k))
                brute = sum(any(s) for s in subsets) / len(subsets)
                assert pass_at_k(n, c, k) == pytest.approx(brute)
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)


def test_phases_finds_the_lasting_switch():
    steps = [0, 10, 20, 30, 40]
    amp = [0.0, 1.0, 1.5, 1.6, 1.7]  # rates 0.1, 0.05, 0.01, 0.01
    sup = [0.0, 0.2, 1.0, 2.0, 3.0]  # rates 0.02, 0.08, 0.1, 0.1
    ph = phases(steps, amp, sup)
    assert [iv["dominant"] for iv in ph["intervals"]] == ["amplification"] + ["suppression"] * 3
    assert ph["switch_step"] == 10 and ph["first_dominant"] == "amplification"
    # a switch that does not last is no switch
    flip = phases([0, 1, 2, 3], [0, 1, 1.1, 2.1], [0, 0.1, 1.1, 1.2])
    assert flip["switch_step"] is None
    # both moving away from the correct completions: neither dominates, however the rates compare
    away = phases([0, 1, 2], [0, -0.1, -0.2], [0, -0.5, -1.0])
    assert [iv["dominant"] for iv in away["intervals"]] == ["neither", "neither"]
    with pytest.raises(ValueError):
        phases([0, 0], [0, 1], [0, 1])


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return build_tiny(tmp_path_factory.mktemp("base") / "tiny", seed=0)


def _rows(rng: np.random.Generator, vocab: int) -> list[dict]:
    rows = []
    for _ in range(5):
        p = rng.integers(0, vocab, size=int(rng.integers(2, 7))).tolist()
        c = rng.integers(0, vocab, size=int(rng.integers(1, 6))).tolist()
        rows.append({"prompt_ids": p, "completion_ids": c})
    return rows


def test_score_is_minus_log_vocab_for_a_model_with_constant_logits(base):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()  # every logit 0: each token has probability exactly 1/V
    vocab = model.config.vocab_size
    rows = _rows(np.random.default_rng(0), vocab)
    lp, n, ent = score(model, rows, batch_size=3)
    for r, v, k, e in zip(rows, lp, n, ent):
        assert k == len(r["completion_ids"])
        assert v == pytest.approx(-k * math.log(vocab), rel=1e-6)
        assert e == pytest.approx(math.log(vocab), rel=1e-6)


def test_score_batched_equals_numpy_on_each_sequence_alone(base):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base).eval()
    rows = _rows(np.random.default_rng(1), model.config.vocab_size)
    lp, n, ent = score(model, rows, batch_size=4)
    for r, v, e in zip(rows, lp, ent):
        ids = r["prompt_ids"] + r["completion_ids"]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0].double().numpy()
        logp = logits - logits.max(-1, keepdims=True)
        logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
        p = len(r["prompt_ids"])
        want = sum(logp[t - 1, ids[t]] for t in range(p, len(ids)))
        want_ent = np.mean([-(np.exp(logp[t - 1]) * logp[t - 1]).sum() for t in range(p, len(ids))])
        assert v == pytest.approx(want, abs=1e-4)
        assert e == pytest.approx(want_ent, abs=1e-4)


@pytest.fixture(scope="module")
def split_runs(base, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {
        adv: train(TrainConfig(model=str(base), output=str(root / adv), advantages=adv, **TINY))
        for adv in ("all", "positive", "negative")
    }


def test_probe_end_to_end_on_advantage_split_runs(base, split_runs, tmp_path):
    s = run_logprobs(
        split_runs["all"],
        tmp_path / "out",
        positive=split_runs["positive"],
        negative=split_runs["negative"],
        n_prompts=3,
        k=4,
        eval_prompts=4,
        progress=False,
    )
    df = pd.read_parquet(tmp_path / "out" / "logprobs.parquet")
    assert set(df["run"]) == {"all", "positive", "negative"}
    assert sorted(df[df["run"] == "all"]["step"]) == [0, 1, 2]
    at0 = df[df["step"] == 0]
    assert (at0["amplification"].abs() < 1e-12).all() and (at0["suppression"].abs() < 1e-12).all()
    # the probe set is stored with the run, and a second call scores the very same text
    stored = [json.loads(x) for x in (split_runs["all"] / PROBE_SET).read_text().splitlines()]
    assert len(stored) == 3 * 4 and s["completions"] == 12
    again = run_logprobs(split_runs["all"], tmp_path / "again", n_prompts=99, k=99, progress=False)
    assert again["completions"] == 12 and again["base_stats"] == s["base_stats"]
    adv = pd.read_parquet(tmp_path / "out" / "advantages.parquet").set_index("run")
    assert list(adv.index) == ["base", "all", "positive", "negative"]
    ks = [f"pass@{k}" for k in range(1, 5)]
    for _, row in adv.iterrows():
        vals = [row[k] for k in ks]
        assert all(a <= b + 1e-12 for a, b in zip(vals, vals[1:]))  # pass@k never falls with k
        assert row["pass@1"] == pytest.approx(row["sampled_accuracy"])
    for key in ("verdict_logprobs", "verdict_phases", "verdict_advantages"):
        assert isinstance(s[key], str) and s[key]
    assert (tmp_path / "out" / "logprobs.png").stat().st_size > 1000


def test_changed_sets_match_a_bitwise_count(base, split_runs):
    from rldelta.checkpoint import open_checkpoint
    from rldelta.train.runfiles import step_dir

    tuned = {k: step_dir(v, 2) for k, v in split_runs.items()}
    got = changed_sets(Path(base), tuned)
    b = open_checkpoint(base)
    counts = dict.fromkeys(tuned, 0)
    inter = dict.fromkeys(tuned, 0)
    for name in b.names():
        w = b.get(name).to(torch.bfloat16).view(torch.int16).numpy()
        m = {
            k: open_checkpoint(p).get(name).to(torch.bfloat16).view(torch.int16).numpy() != w for k, p in tuned.items()
        }
        for k in tuned:
            counts[k] += int(m[k].sum())
            inter[k] += int((m[k] & m["all"]).sum())
    assert got["changed"] == counts and got["intersection_with_all"] == inter


def test_bad_inputs_name_the_problem(base, split_runs, tmp_path):
    with pytest.raises(ProbeError, match="no run.json"):
        run_logprobs(tmp_path, progress=False)
    with pytest.raises(ProbeError, match="expected positive"):
        run_logprobs(split_runs["all"], tmp_path / "o", positive=split_runs["negative"], progress=False)
    other = train(
        TrainConfig(
            model=str(base), output=str(tmp_path / "s1"), advantages="positive", **{**TINY, "seed": 1, "steps": 1}
        )
    )
    with pytest.raises(ProbeError, match="seed"):
        run_logprobs(split_runs["all"], tmp_path / "o", positive=other, progress=False)


def test_probe_commands_fail_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from rldelta.cli import app

    runner = CliRunner()
    cases = [
        (["probe", "logprobs", str(tmp_path)], "no run.json"),
        (["probe", "formats", str(tmp_path)], "run.json"),
        (["probe", "activations", str(tmp_path), "-o", str(tmp_path / "o")], "not a model folder"),
        (
            ["models", "pretrain-mixture", "-o", str(tmp_path / "m"), "--proportions", "code=0.5,plain=0.6,boxed=0"],
            "sum",
        ),
        (["models", "pretrain-mixture", "-o", str(tmp_path / "m"), "--size", "7b"], "unknown size"),
    ]
    for args, message in cases:
        r = runner.invoke(app, args)
        assert r.exit_code == 2, (args, r.output)
        assert message in r.output and "Traceback" not in r.output, (args, r.output)
        assert len(r.output.strip().splitlines()) == 1, r.output


def test_changed_sets_refuse_checkpoints_of_another_model(ckpt):
    base = ckpt("b", {"w": torch.zeros(2, 3), "v": torch.zeros(4)})
    other_shape = ckpt("t1", {"w": torch.zeros(3, 2), "v": torch.zeros(4)})
    missing = ckpt("t2", {"w": torch.zeros(2, 3)})
    with pytest.raises(ProbeError, match="'w' has shape"):
        changed_sets(base, {"all": other_shape})
    with pytest.raises(ProbeError, match="'v' is in"):
        changed_sets(base, {"all": missing})
    moved = ckpt("t3", {"w": torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 2.0]]), "v": torch.zeros(4)})
    got = changed_sets(base, {"all": moved})
    assert got["numel"] == 10 and got["changed"] == {"all": 2} and got["intersection_with_all"] == {"all": 2}
