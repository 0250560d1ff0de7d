"""Format selection (Echo Chamber): the format classifier, the mixture corpus, the per-step format metrics and
`probe formats`, each on hand-built cases whose answer is known."""

from __future__ import annotations

import json
from collections import Counter

import pandas as pd
import pytest

from rldelta.metrics.formats import accuracy_at, argmax, dominance_step, epoch_fraction, format_table, winner
from rldelta.probes import ProbeError
from rldelta.probes.formats import compare_sizes, run_formats
from rldelta.train.answer_formats import FORMATS, classify_format
from rldelta.train.corpus import MixtureError, allocate, build_corpus, parse_spec
from rldelta.train.mixture import MIXTURE_FILE, pretrain_mixture
from rldelta.train.models import ModelError
from rldelta.train.tasks import MixArith, get_task

NAMES = ("code", "plain", "boxed", "other")

# Hand-written, not rendered: the classifier must agree with a reader, not with its own renderer.
CODE = "```python\nprint(23 + 45)\n```\n68"
PLAIN = "23 plus 45 equals 68."
BOXED = "23 + 45 = \\boxed{68}"
NEAR_MISSES = [
    "68",
    "The answer is 68.",
    "```python\nprint(23 + 45)\n```",  # no result
    "```python\nprint(23 + 45)\n```\n68 because",  # trailing text
    "print(23 + 45)\n68",  # no fence
    "23 plus 45 equals 68",  # no full stop
    "23 plus 45 is 68.",
    "23 + 45 equals 68.",  # symbols in the word format
    "23 + 45 = 68",
    "23 + 45 = \\boxed{sixty-eight}",
    "\\boxed{68} 23 plus 45 equals 68.",  # two formats in one text
    "23 plus 45 equals 68. 23 + 45 = \\boxed{68}",
    "",
]


# ---- formats and the mixarith task -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,name",
    [
        (CODE, "code"),
        (PLAIN, "plain"),
        (BOXED, "boxed"),
        ("```python\nprint(3 - 7)\n```\n-4", "code"),
        ("3 minus 7 equals -4.", "plain"),
        ("3 - 7 = \\boxed{-4}", "boxed"),
        ("12 times 3 plus 1 equals 37.", "plain"),
        ("\\boxed{68}", "boxed"),
        ("  " + PLAIN + "\n", "plain"),
        *[(t, "other") for t in NEAR_MISSES],
    ],
)
def test_classify_format(text, name):
    assert classify_format(text) == name
    assert sum(bool(f.pattern.fullmatch(text.strip())) for f in FORMATS.values()) == (name != "other")


@pytest.mark.parametrize("expr,result", [("23 + 45", 68), ("3 - 7", -4), ("0 - 9", -9), ("12 * 3", 36)])
def test_renderers_classify_as_themselves(expr, result):
    for name, fmt in FORMATS.items():
        assert classify_format(fmt.render(expr, result)) == name


@pytest.mark.parametrize(
    "completion,answer,correct,formatted",
    [
        (CODE, "68", 1.0, 1.0),
        (PLAIN, "68", 1.0, 1.0),
        (BOXED, "68", 1.0, 1.0),
        ("```python\nprint(3 - 7)\n```\n-4", "-4", 1.0, 1.0),  # the sign survives the line break after the fence
        ("3 minus 7 equals -4.", "-4", 1.0, 1.0),
        ("3 - 7 = \\boxed{-4}", "-4", 1.0, 1.0),
        ("3 - 7 = \\boxed{4}", "-4", 0.0, 1.0),
        ("```python\nprint(23 + 45)\n```\n67", "68", 0.0, 1.0),  # well formatted, wrong
        ("so it is 68", "68", 1.0, 0.0),  # right, in no format
        ("23 plus 45", "68", 0.0, 0.0),
    ],
)
def test_mixarith_rewards(completion, answer, correct, formatted):
    task = get_task("mixarith")
    assert isinstance(task, MixArith)
    assert task.correctness_reward(completion, answer) == correct
    assert task.format_reward(completion) == formatted


def test_mixarith_prompts_ask_for_no_format():
    task = MixArith()
    for ex in task.generate(20, seed=1, split="train", difficulty=1):
        text = ex.prompt[-1]["content"]
        assert text.startswith("What is ") and "answer" not in text.lower()
        assert str(eval(MixArith.expression(text))) == ex.answer  # literals and + - only: safe here
    assert classify_format(task.reference_completion("-12")) == "boxed"
    assert task.correctness_reward(task.reference_completion("-12"), "-12") == 1.0


# ---- corpus ------------------------------------------------------------------------------------------------------


def test_allocate_is_exact():
    assert allocate({"a": 0.5, "b": 0.3, "c": 0.2}, 1000) == {"a": 500, "b": 300, "c": 200}
    assert allocate({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}, 10) == {"a": 4, "b": 3, "c": 3}
    assert allocate({"a": 0.25, "b": 0.75}, 7) == {"a": 2, "b": 5}  # 1.75 -> 2, 5.25 -> 5


def test_corpus_counts_match_proportions():
    docs = build_corpus(
        1000,
        proportions={"code": 0.5, "plain": 0.3, "boxed": 0.2},
        noise={"code": 0.2, "plain": 0.0, "boxed": 0.1},
        difficulties=(1, 2),
        seed=3,
    )
    assert Counter(d.format for d in docs) == {"code": 500, "plain": 300, "boxed": 200}
    assert Counter(d.format for d in docs if d.wrong) == {"code": 100, "boxed": 20}
    assert Counter(d.difficulty for d in docs) == {1: 500, 2: 500}
    task = MixArith()
    for d in docs:
        assert classify_format(d.completion) == d.format
        assert task.correctness_reward(d.completion, d.answer) == (0.0 if d.wrong else 1.0)
        assert task.split_of(d.expr) == "train"
    assert [d.completion for d in build_corpus(50, seed=3)] == [d.completion for d in build_corpus(50, seed=3)]


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"proportions": {"code": 0.5, "plain": 0.3}}, "sum to 1"),
        ({"proportions": {"code": 1.2, "plain": -0.2}}, "[0, 1]"),
        ({"proportions": {"code": 0.5, "latex": 0.5}}, "unknown format"),
        ({"proportions": (0.5, 0.5)}, "need 3 values"),
        ({"noise": {"code": 1.5}}, "[0, 1]"),
        ({"difficulties": (9,)}, "difficulties"),
    ],
)
def test_corpus_bad_input(kwargs, message):
    with pytest.raises(MixtureError, match=message.replace("[", r"\[").replace("]", r"\]")) as e:
        build_corpus(10, **kwargs)
    assert "\n" not in str(e.value)


def test_parse_spec():
    assert parse_spec("code=0.5, plain=0.3,boxed=0.2") == {"code": 0.5, "plain": 0.3, "boxed": 0.2}
    with pytest.raises(MixtureError, match="FORMAT=VALUE"):
        parse_spec("code:0.5")


# ---- metrics on a completion set with known counts ---------------------------------------------------------------

# step -> [(completion, correct)]; 10 completions per step, counts chosen by hand.
_WRONG_CODE = "```python\nprint(1 + 1)\n```\n3"
STEPS = {
    1: [(CODE, 1)] * 3 + [(_WRONG_CODE, 0)] * 2 + [(PLAIN, 1)] * 3 + [(BOXED, 1), ("68", 1)],
    2: [(CODE, 1)] * 4 + [(PLAIN, 1)] * 5 + [(BOXED, 0)],
    3: [(PLAIN, 1)] * 9 + [("no idea", 0)],
    4: [(PLAIN, 1)] * 10,
}
# Shares by hand: step 1 code .5 plain .3 boxed .1 other .1; step 3 plain .9; step 4 plain 1.0.


def _records():
    steps, texts, correct = [], [], []
    for s, items in STEPS.items():
        for text, ok in items:
            steps.append(s)
            texts.append(text)
            correct.append(float(ok))
    return steps, texts, correct


def test_format_metrics_known_counts():
    steps, texts, correct = _records()
    rows = format_table(steps, [classify_format(t) for t in texts], correct, names=NAMES)
    assert len(rows) == 4 * 4
    at1 = {r["format"]: r for r in rows if r["step"] == 1}
    assert {k: r["count"] for k, r in at1.items()} == {"code": 5, "plain": 3, "boxed": 1, "other": 1}
    assert at1["code"]["share"] == pytest.approx(0.5) and at1["plain"]["share"] == pytest.approx(0.3)
    assert accuracy_at(rows) == {"code": pytest.approx(0.6), "plain": 1.0, "boxed": 1.0, "other": 1.0}
    at2 = {r["format"]: r for r in rows if r["step"] == 2}
    assert at2["other"]["count"] == 0 and at2["other"]["accuracy"] is None and at2["boxed"]["accuracy"] == 0.0
    assert winner(rows) == "plain"
    assert dominance_step(rows, "plain", 0.9) == 3
    assert dominance_step(rows, "plain", 0.95) == 4
    assert dominance_step(rows, "code", 0.9) is None
    assert dominance_step(rows, "plain", 0.3) == 1  # 0.3, 0.5, 0.9, 1.0: all >= 0.3
    assert epoch_fraction(3, 4, 64) == pytest.approx(3 * 4 / 64)
    assert epoch_fraction(None, 4, 64) is None
    assert argmax({"code": 0.6, "plain": 1.0, "boxed": None}) == "plain"
    assert argmax({"code": 0.0, "plain": 0.0, "boxed": 0.0}) is None  # nothing stands out
    assert argmax({"code": 0.5, "plain": 0.5}, ties="first") == "code"
    with pytest.raises(ValueError, match="not among names"):
        format_table([1], ["latex"], names=NAMES)


def test_dominance_needs_the_share_to_stay():
    rows = format_table([1] * 2 + [2] * 2 + [3] * 2, ["code", "code", "plain", "code", "code", "code"], names=NAMES)
    assert dominance_step(rows, "code", 0.9) == 3  # step 1 reached 1.0, step 2 fell to 0.5
    assert winner(rows) == "code"


def test_winner_is_decided_on_the_mean_share_of_the_last_steps():
    # shares of code over steps 1..4: 1.0, 1.0, 1.0, 0.0 (a last unlucky batch); plain: 0, 0, 0, 1
    rows = format_table([1, 2, 3, 4], ["code", "code", "code", "plain"], names=NAMES)
    assert winner(rows) == "plain"  # the last step alone
    assert winner(rows, last=3) == "code"  # mean over steps 2-4: code 2/3, plain 1/3


# ---- probe formats on a hand-written run -------------------------------------------------------------------------


def _write_run(tmp_path, *, with_correctness: bool = True, model=None):
    run = tmp_path / "run"
    run.mkdir()
    config = {
        "model": str(model or tmp_path / "nomodel"),
        "task": "mixarith",
        "algo": "grpo",
        "seed": 0,
        "train_size": 64,
        "prompts_per_step": 4,
        "num_generations": 4,
        "steps": 4,
    }
    (run / "run.json").write_text(json.dumps({"config": config}))
    steps, texts, correct = _records()
    answers = ["2" if t == _WRONG_CODE else "68" for t in texts]
    df = pd.DataFrame(
        {"step": steps, "prompt": ["What is 23 + 45?"] * len(steps), "answer": answers, "completion": texts}
    )
    if with_correctness:
        df["correctness"] = correct
    df["format"] = [0.0 if classify_format(t) == "other" else 1.0 for t in texts]
    df.to_parquet(run / "completions.parquet")
    return run


def _write_base(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    (base / MIXTURE_FILE).write_text(
        json.dumps(
            {
                "size": "5m",
                "parameters": 4_801_024,
                "noise": {"code": 0.2, "plain": 0.0, "boxed": 0.0},
                "corpus": {"shares": {"code": 0.5, "plain": 0.3, "boxed": 0.2}},
                "eval": {
                    "greedy_accuracy": 0.5,
                    "formats": {
                        "code": {"share": 0.6, "accuracy": 0.5},
                        "plain": {"share": 0.25, "accuracy": 0.7},
                        "boxed": {"share": 0.1, "accuracy": 0.6},
                        "other": {"share": 0.05, "accuracy": 0.0},
                    },
                },
            }
        )
    )
    return base


def test_run_formats_hand_written_run(tmp_path):
    run = _write_run(tmp_path, model=_write_base(tmp_path))
    s = run_formats(run)
    out = run / "probes" / "formats"
    table = pd.read_parquet(out / "formats.parquet")
    assert list(table.columns) == ["step", "format", "count", "share", "accuracy"]
    got = table.set_index(["step", "format"])["count"].to_dict()
    assert got[(1, "code")] == 5 and got[(3, "plain")] == 9 and got[(3, "other")] == 1 and got[(4, "boxed")] == 0
    assert table.groupby("step")["share"].sum().tolist() == pytest.approx([1.0] * 4)
    assert s["winner"] == "plain" and s["dominance_step"] == 3 and s["epoch_fraction"] == pytest.approx(12 / 64)
    assert s["most_frequent_pretraining"] == "code" and s["winner_is_most_frequent"] is False
    assert s["most_accurate_pretraining"] == "plain" and s["winner_is_most_accurate_pretraining"] is True
    # At RL step 1 plain and boxed are both at 1.0 (ties go to the first format listed).
    # plain and boxed are both right on every step-1 sample: neither is "the most accurate"
    assert s["most_accurate_step1"] is None and s["accuracy_first_step"]["code"] == pytest.approx(0.6)
    assert s["size"] == "5m"
    assert "plain wins (1.00" in s["verdict"] and "from step 3 (18.8% of the first epoch)" in s["verdict"]
    assert "not the most frequent" in s["verdict"]
    assert json.loads((out / "formats.json").read_text())["winner"] == "plain"
    assert (out / "formats.png").read_bytes()[:4] == b"\x89PNG"


def test_run_formats_rescores_without_correctness_column(tmp_path):
    run = _write_run(tmp_path, with_correctness=False)
    s = run_formats(run, tmp_path / "elsewhere", threshold=0.95)
    assert s["accuracy_first_step"]["code"] == pytest.approx(0.6)  # 3 right of 5, scored from the answers
    assert s["dominance_step"] == 4 and s["pretraining"] is None and s["winner_is_most_frequent"] is None
    assert (tmp_path / "elsewhere" / "formats.json").is_file()


def test_run_formats_errors(tmp_path):
    with pytest.raises(ProbeError, match=r"not a training run \(no run.json\)"):
        run_formats(tmp_path)
    run = _write_run(tmp_path)
    pd.DataFrame({"step": [1]}).to_parquet(run / "completions.parquet")
    with pytest.raises(ProbeError, match="missing column.*completion"):
        run_formats(run)
    with pytest.raises(ProbeError, match="threshold"):
        run_formats(run, threshold=1.5)


def test_compare_sizes():
    small = [
        {"model": "m5", "size": "5m", "winner": "code", "run": "a"},
        {"model": "m5", "size": "5m", "winner": "code", "run": "b"},
    ]
    big = [{"model": "m30", "size": "30m", "winner": "plain", "run": "c"}]
    c = compare_sizes(small + big)
    assert c["winner_differs"] is True and [g["winner"] for g in c["groups"]] == ["code", "plain"]
    assert "5m: code" in c["verdict"] and "30m: plain" in c["verdict"]
    assert compare_sizes(small + [{**big[0], "winner": "code"}])["winner_differs"] is False
    assert compare_sizes(small)["winner_differs"] is None


# ---- pretraining (tiny size) -------------------------------------------------------------------------------------


def test_pretrain_tiny_writes_a_trainable_model(tmp_path):
    import torch

    from rldelta.train.trainers import load_policy

    threads = torch.get_num_threads()
    out = pretrain_mixture(
        tmp_path / "m", size="test", steps=3, batch_size=8, eval_prompts=4, eval_samples=2, progress=False
    )
    record = json.loads((out / MIXTURE_FILE).read_text())
    assert record["steps_done"] == 3 and record["stopped_by_budget"] is False
    assert record["threads"] == 1 and torch.get_num_threads() == threads  # set for the run only
    assert record["corpus"]["counts"] == {"code": 12, "plain": 7, "boxed": 5}  # 24 docs: 12, 7.2, 4.8
    assert record["corpus"]["wrong"] == {"code": 2, "plain": 0, "boxed": 0}  # round(0.2 * 12)
    assert sum(v["count"] for v in record["eval"]["formats"].values()) == 4 * 2
    model, tok = load_policy(out, "fp32")
    assert record["parameters"] == sum(p.numel() for p in model.parameters())
    text = tok.apply_chat_template(
        [{"role": "user", "content": "What is 1 + 2?"}], add_generation_prompt=True, tokenize=False
    )
    assert text == "Question: What is 1 + 2?\nAnswer: "
    ids = tok(CODE, add_special_tokens=False).input_ids
    assert tok.decode(ids) == CODE and all(len(tok.decode([i]).strip()) <= 1 for i in tok("12345").input_ids)
    # Replacing an existing model folder, determinism and the max_minutes safety stop: tests/test_mixture.py.


def test_pretrain_bad_input(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("keep me")
    with pytest.raises(ModelError, match="not empty and is not a model folder"):
        pretrain_mixture(tmp_path / "notes", size="test", steps=1)
    assert (tmp_path / "notes" / "a.txt").read_text() == "keep me"
    with pytest.raises(MixtureError, match="unknown size 'huge'"):
        pretrain_mixture(tmp_path / "x", size="huge")
    with pytest.raises(MixtureError, match="sum to 1"):
        pretrain_mixture(tmp_path / "x", size="test", proportions=(0.5, 0.5, 0.5))
    with pytest.raises(MixtureError, match="steps must be >= 1"):
        pretrain_mixture(tmp_path / "x", size="test", steps=0)
